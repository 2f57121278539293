"""A document is a list of blocks — ("h1".."h3", text), ("p", text), ("table", header, rows),
("img", path, alt), ("md", Markdown already written: a model's section) — written as Markdown, which
markdown-it-py renders to self-contained HTML (images inline, headings with GitHub's anchors): one
source for both files.

Text may use the Markdown the reports need: **bold**, *emphasis*, `code` and [links](target).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:left}th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}"
)


def slug(text: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def cell(value) -> str:
    """A table cell's text: a `|` inside it would end the cell."""
    return str(value).replace("|", "\\|")


def to_markdown(blocks: list[tuple], base: Path) -> str:
    """Markdown, image paths relative to `base` (the folder the file is written to)."""
    out = []
    for kind, *body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + body[0])
        elif kind in ("p", "md"):
            out.append(body[0].rstrip("\n"))
        elif kind == "table":
            header, rows = body
            out.append("| " + " | ".join(map(cell, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
        elif kind == "img":
            out.append(f"![{body[1]}]({body[0].relative_to(base).as_posix()})")
        out.append("")
    return "\n".join(out)


def to_html(markdown: str, title: str, base: Path) -> str:
    """The Markdown as one HTML page; images (paths relative to `base`) inlined as data URIs."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def heading(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("id", slug(tokens[idx + 1].content))
        return renderer.renderToken(tokens, idx, options, env)

    def image(renderer, tokens, idx, options, env):
        token = tokens[idx]
        data = base64.b64encode((base / token.attrGet("src")).read_bytes()).decode()
        alt = html.escape(renderer.renderInlineAsText(token.children or [], options, env))
        return f"<img src='data:image/png;base64,{data}' alt='{alt}'>"

    md.add_render_rule("heading_open", heading)
    md.add_render_rule("image", image)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n{md.render(markdown)}</body></html>\n"
    )
