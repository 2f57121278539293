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
DIAGNOSTICS = REPORTS_DIR / "diagnostics"


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
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(history["epoch"], history[metric], marker="o", label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
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


def recipe(cfg) -> str:
    parts = [f"{cfg.optimizer}" + (f" (momentum {cfg.momentum:g}{', Nesterov' if cfg.nesterov else ''})"
                                   if cfg.optimizer == "sgd" else ""),
             f"lr {cfg.learning_rate:g} {cfg.schedule}" + (f" after {cfg.warmup_epochs} warm-up epochs"
                                                           if cfg.warmup_epochs else ""),
             f"batch {cfg.batch_size}"]
    if cfg.weight_decay:
        parts.append(f"weight decay {cfg.weight_decay:g}")
    if cfg.label_smoothing:
        parts.append(f"label smoothing {cfg.label_smoothing:g}")
    if cfg.augment_crop_padding or cfg.augment_flip:
        aug = ([f"random crop (pad {cfg.augment_crop_padding})"] if cfg.augment_crop_padding else []) + \
              (["horizontal flip"] if cfg.augment_flip else [])
        parts.append("augmentation: " + " + ".join(aug))
    if cfg.early_stopping_patience:
        parts.append(f"early stopping (patience {cfg.early_stopping_patience})")
    parts.append(f"inputs {cfg.input_scaling}")
    if cfg.mixed_precision:
        parts.append("mixed bfloat16")
    return "; ".join(parts)


def additions(cfg) -> str:
    extra = (["batch normalisation"] if cfg.batch_norm else []) + \
            ([f"{cfg.kernel_initializer} initialisation"] if cfg.kernel_initializer != "glorot_uniform" else [])
    return ", ".join(extra) or "none (the notebook's layers)"


def plot_diagnostics(steps: pd.DataFrame, layers: pd.DataFrame) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, style in (("notebook", "-"), ("recipe", "--")):
        s = steps[steps.recipe == label]
        axes[0].plot(s.step, s.probe_loss, style, marker="o", ms=3, label=label)
        lay = layers[layers.recipe == label].groupby("step").dead_fraction.mean()
        axes[1].plot(lay.index, 100 * lay.values, style, marker="o", ms=3, label=label)
    axes[0].axhline(2.302585, color="grey", lw=0.8, ls=":")
    axes[0].set_title("loss on probe images (dotted: ln 10)")
    axes[1].set_title("dead ReLU units, mean over layers (%)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, "diagnostics.png")


def diagnostics_blocks() -> list[tuple]:
    """Why the notebook's AlexNet did not learn, from the diagnose stage's measurements."""
    if not (DIAGNOSTICS / "summary.json").exists():
        return []
    summary = json.loads((DIAGNOSTICS / "summary.json").read_text())
    steps, layers = pd.read_csv(DIAGNOSTICS / "steps.csv"), pd.read_csv(DIAGNOSTICS / "layers.csv")
    nb, ours = summary["recipes"]["notebook"], summary["recipes"]["recipe"]
    st = nb["settings"]
    worst = max(nb["dead_fraction"], key=nb["dead_fraction"].get)
    text = (
        f"The notebook trained {summary['model']} with {st['optimizer']} at learning rate "
        f"{st['learning_rate']:g}, batch {st['batch_size']}, inputs scaled `{st['input_scaling']}`. "
        f"Replaying its first {nb['steps']} steps from the same initial weights, the loss on "
        f"{summary['probe_images']} validation images ends at {nb['final_probe_loss']:.4f} "
        f"(ln 10 = {summary['ln_classes']:.4f}, what a uniform guess scores) with accuracy "
        f"{100 * nb['final_probe_accuracy']:.1f}%, and the spread of its logits across classes goes from "
        f"{nb['initial_logit_std']:.4f} to {nb['final_logit_std']:.4f}. "
        f"{100 * nb['dead_fraction'][worst]:.1f}% of {worst}'s units are dead (they output 0 for every probe "
        f"image, so they pass no gradient back); over all ReLU layers "
        f"{100 * sum(nb['dead_fraction'].values()) / len(nb['dead_fraction']):.1f}% are. "
        f"With this project's recipe ({ours['settings']['optimizer']}, learning rate "
        f"{ours['settings']['learning_rate']:g} after a {ours['settings']['warmup_epochs']}-epoch warm-up, "
        f"inputs `{ours['settings']['input_scaling']}`) the same {ours['steps']} steps end at loss "
        f"{ours['final_probe_loss']:.4f}, accuracy {100 * ours['final_probe_accuracy']:.1f}%, logit spread "
        f"{ours['final_logit_std']:.4f}, with {100 * sum(ours['dead_fraction'].values()) / len(ours['dead_fraction']):.1f}% "
        f"of ReLU units dead on average.")
    rows = [[layer, f"{100 * nb['dead_fraction'][layer]:.1f}%", f"{100 * ours['dead_fraction'][layer]:.1f}%",
             f"{nb['grad_norm'][layer]:.3g}", f"{ours['grad_norm'][layer]:.3g}"] for layer in nb["dead_fraction"]]
    return [
        ("h2", "Why the reference notebook's AlexNet did not learn"),
        ("p", text),
        ("table", ["layer", "dead units, notebook", "dead units, recipe", "gradient norm, notebook",
                   "gradient norm, recipe"], rows),
        ("img", plot_diagnostics(steps, layers), "loss and dead units over the first steps"),
        ("p", f"Measured after step {nb['steps']} on {summary['model']}'s validation images "
              "(`dvc repro diagnose`; settings under `diagnose:` in params.yaml). The training-health "
              "check stops any run that ends up like this: see the README."),
    ]


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
        ("Multiply-adds per image (forward)", lambda r: f"{int(r['architecture']['multiply_adds'].sum()):,}"),
        ("Training images", lambda r: f"{r['data']['sizes']['train']:,}"),
        ("Recipe", lambda r: recipe(r["config"])),
        ("Additions to the architecture", lambda r: additions(r["config"])),
        ("Epochs", lambda r: str(r["training"]["epochs"])),
        ("Test accuracy", lambda r: f"{100 * r['metrics']['test_accuracy']:.2f}% "
                                    f"(of {r['metrics']['test_images']:,} images)"),
        ("Test loss", lambda r: f"{r['metrics']['test_loss']:.4f}"),
        ("Macro F1", lambda r: f"{r['metrics']['test_macro_f1']:.4f}"),
        ("Training time", lambda r: f"{r['training']['train_seconds']:.1f} s "
                                    f"({r['training']['train_images_per_second']:.0f} images/s)"),
        ("Inference", lambda r: f"{r['metrics']['inference_images_per_second']:.0f} images/s "
                                f"(batch {r['metrics']['inference_batch_size']}); "
                                f"{r['metrics']['latency_ms_per_image']:.2f} ms for one image"),
        ("Model size on disk", lambda r: f"{r['metrics']['model_size_mb']:.1f} MB (.keras, with optimizer state)"),
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

    blocks += diagnostics_blocks()
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


def log_to_mlflow(params: Params) -> None:
    """The report as an artifact of a run of its own, beside the training runs it summarises."""
    import mlflow

    from stages import tracking

    tracking.use_store(params.mlflow.experiment)
    with mlflow.start_run(run_name="report"):
        mlflow.set_tags({**tracking.run_tags(), "kind": "report"})
        for name in params.models:
            run_file = Path("models") / name / "run.json"
            if run_file.exists():
                mlflow.set_tag(f"run_id.{name}", json.loads(run_file.read_text())["run_id"])
        mlflow.log_artifact(str(REPORTS_DIR / "report.md"), artifact_path="report")
        mlflow.log_artifact(str(REPORTS_DIR / "report.html"), artifact_path="report")
        mlflow.log_artifacts(str(FIGURES), artifact_path="report/figures")


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
    log_to_mlflow(params)
    print(f"report: {REPORTS_DIR / 'report.md'} and {REPORTS_DIR / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
