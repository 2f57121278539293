"""A document is a list of blocks — ("h1".."h3", text), ("p", text), ("table", header, rows),
("img", path, alt) — rendered once as Markdown and once as self-contained HTML (images inline).

Text may use the Markdown the reports need: **bold**, *emphasis*, `code` and [links](target).
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_INLINE = re.compile(r"\*\*(?P<bold>.+?)\*\*|\*(?P<em>[^*\s][^*]*?)\*|`(?P<code>[^`]+)`|\[(?P<text>[^]]+)\]\((?P<href>[^)\s]+)\)")


def inline_html(text: str) -> str:
    """Markdown inline markup as HTML, everything else escaped."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        if m["bold"] is not None:
            out.append(f"<strong>{inline_html(m['bold'])}</strong>")
        elif m["em"] is not None:
            out.append(f"<em>{inline_html(m['em'])}</em>")
        elif m["code"] is not None:
            out.append(f"<code>{html.escape(m['code'])}</code>")
        else:
            out.append(f"<a href='{html.escape(m['href'])}'>{inline_html(m['text'])}</a>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def slug(text: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def to_markdown(blocks: list[tuple], base: Path) -> str:
    """Markdown, image paths relative to `base` (the folder the file is written to)."""
    out = []
    for kind, *body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + body[0])
        elif kind == "p":
            out.append(body[0])
        elif kind == "table":
            header, rows = body
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        elif kind == "img":
            out.append(f"![{body[1]}]({body[0].relative_to(base).as_posix()})")
        out.append("")
    return "\n".join(out)


def to_html(blocks: list[tuple], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
           "line-height:1.45}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
           "padding:.25em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
           "code{background:#f3f3f3;padding:0 .2em}</style>",
           "</head><body>"]
    for kind, *body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind} id='{slug(body[0])}'>{inline_html(body[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{inline_html(body[0])}</p>")
        elif kind == "table":
            header, rows = body
            out.append("<table><tr>" + "".join(f"<th>{inline_html(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{inline_html(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
        elif kind == "img":
            data = base64.b64encode(body[0].read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(body[1])}' src='data:image/png;base64,{data}'></p>")
    out.append("</body></html>")
    return "\n".join(out)
