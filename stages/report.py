"""Stage `report`: reports/report.md (PNGs in reports/figures/) and a self-contained
reports/report.html, built only from the files the train and evaluate stages wrote.

    python -m stages.report
"""
from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path

import pandas as pd

from stages.params import Params, load_or_exit
from stages.prepare import PREPARED_DIR
from stages.train import REPORTS_DIR

FIGURES = REPORTS_DIR / "figures"


def load_results(params: Params) -> dict[str, dict]:
    """Everything the report says, per model, read from the stages' output files."""
    results = {}
    for name, cfg in params.models.items():
        folder = REPORTS_DIR / name
        missing = [f for f in ("metrics.json", "training.json", "history.csv", "architecture.csv",
                               "per_class.csv", "confusion.csv") if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: run `dvc repro` "
                                    f"(train@{name} and evaluate@{name}) before the report")
        results[name] = {
            "config": cfg,
            "metrics": json.loads((folder / "metrics.json").read_text()),
            "training": json.loads((folder / "training.json").read_text()),
            "history": pd.read_csv(folder / "history.csv"),
            "architecture": pd.read_csv(folder / "architecture.csv"),
            "per_class": pd.read_csv(folder / "per_class.csv"),
            "confusion": pd.read_csv(folder / "confusion.csv", index_col=0),
            "data": json.loads((PREPARED_DIR / f"{cfg.dataset}.json").read_text()),
        }
    return results


def plot_learning_curves(name: str, history: pd.DataFrame) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(history["epoch"], history[metric], marker="o", label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(f"{name}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, f"{name}-learning-curves.png")


def plot_confusion(name: str, confusion: pd.DataFrame) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    image = ax.imshow(confusion.values, cmap="Blues")
    ax.set_xticks(range(len(confusion.columns)), confusion.columns, rotation=60, ha="right")
    ax.set_yticks(range(len(confusion.index)), confusion.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{name}: confusion matrix (test)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, f"{name}-confusion.png")


def _save(fig, filename: str) -> Path:
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / filename
    fig.tight_layout()
    # No timestamp in the PNG, so the same results give byte-identical figures.
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


# A report is a list of blocks, rendered once as Markdown and once as HTML.
def build_blocks(results: dict[str, dict]) -> list[tuple]:
    names = list(results)
    blocks: list[tuple] = [("h1", "LeNet-5 and AlexNet: results of this run")]
    non_official = sorted({r["data"]["provenance"]["title"] for r in results.values()
                           if not r["data"]["provenance"]["official"]})
    if non_official:
        blocks.append(("p", "**Note:** these results come from non-official data: "
                       + "; ".join(non_official) + ". See *Data provenance* below; accuracies are close "
                       "to, but not the same as, numbers on the official datasets."))

    rows = []
    for label, get in [
        ("Architecture", lambda r: r["config"].architecture),
        ("Dataset", lambda r: r["data"]["provenance"]["title"]),
        ("Input", lambda r: "x".join(map(str, r["data"]["shape"]))),
        ("Layers with weights", lambda r: str(int((r["architecture"]["parameters"] > 0).sum()))),
        ("Parameters", lambda r: f"{r['training']['parameters']:,}"),
        ("Training images", lambda r: f"{r['data']['sizes']['train']:,}"),
        ("Optimizer", lambda r: f"{r['config'].optimizer}, lr {r['config'].learning_rate:g}, "
                                f"batch {r['config'].batch_size}"),
        ("Epochs", lambda r: str(r["training"]["epochs"])),
        ("Test accuracy", lambda r: f"{100 * r['metrics']['test_accuracy']:.2f}% "
                                    f"(of {r['metrics']['test_images']:,} images)"),
        ("Test loss", lambda r: f"{r['metrics']['test_loss']:.4f}"),
        ("Macro F1", lambda r: f"{r['metrics']['test_macro_f1']:.4f}"),
        ("Training time", lambda r: f"{r['training']['train_seconds']:.1f} s "
                                    f"({r['training']['train_images_per_second']:.0f} images/s)"),
        ("Inference", lambda r: f"{r['metrics']['inference_images_per_second']:.0f} images/s"),
        ("Device", lambda r: r["training"]["device"]),
    ]:
        rows.append([label] + [get(results[n]) for n in names])
    blocks += [("h2", "Side by side"), ("table", ["", *names], rows)]

    for name, r in results.items():
        arch = r["architecture"]
        table = [[row.layer, row.type, row.activation if isinstance(row.activation, str) else "",
                  row.output_shape, f"{row.parameters:,}"] for row in arch.itertuples()]
        table.append(["total", "", "", "", f"{int(arch['parameters'].sum()):,}"])
        per_class = [[c, f"{p:.3f}", f"{rc:.3f}", f"{f1:.3f}", str(int(n))]
                     for c, p, rc, f1, n in r["per_class"][["class", "precision", "recall", "f1", "support"]].values]
        blocks += [
            ("h2", f"{name}: {r['config'].architecture} on {r['data']['provenance']['title']}"),
            ("h3", "Layers"), ("table", ["layer", "type", "activation", "output", "parameters"], table),
            ("h3", "Learning curves"), ("img", plot_learning_curves(name, r["history"]), f"{name} learning curves"),
            ("h3", "Confusion matrix"), ("img", plot_confusion(name, r["confusion"]), f"{name} confusion matrix"),
            ("h3", "Per class"), ("table", ["class", "precision", "recall", "F1", "support"], per_class),
        ]

    blocks.append(("h2", "Data provenance"))
    seen = set()
    for r in results.values():
        prov = r["data"]["provenance"]
        if prov["dataset"] in seen:
            continue
        seen.add(prov["dataset"])
        kind = "official files, checksums verified" if prov["official"] else f"non-official copy from {prov['source']}"
        blocks.append(("p", f"**{prov['title']}** ({kind}):"))
        blocks.append(("table", ["file", "sha256"], [[f, s] for f, s in prov["files"].items()]))
    return blocks


def to_markdown(blocks: list[tuple]) -> str:
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
            out.append(f"![{body[1]}]({body[0].relative_to(REPORTS_DIR).as_posix()})")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """The one bit of Markdown the text blocks use, **bold**, as HTML."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[tuple]) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>LeNet-5 and AlexNet report</title>",
           "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
           "line-height:1.45}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
           "padding:.25em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%}</style>",
           "</head><body>"]
    for kind, *body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(body[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(body[0])}</p>")
        elif kind == "table":
            header, rows = body
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
        elif kind == "img":
            data = base64.b64encode(body[0].read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(body[1])}' src='data:image/png;base64,{data}'></p>")
    out.append("</body></html>")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    params = load_or_exit()
    try:
        results = load_results(params)
    except FileNotFoundError as exc:
        print(f"error: report: {exc}", file=sys.stderr)
        return 1
    blocks = build_blocks(results)
    (REPORTS_DIR / "report.md").write_text(to_markdown(blocks))
    (REPORTS_DIR / "report.html").write_text(to_html(blocks))
    print(f"report: {REPORTS_DIR / 'report.md'} and {REPORTS_DIR / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
