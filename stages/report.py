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

import numpy as np
import pandas as pd

from stages import figures
from stages.params import Params, load_or_exit
from stages.prepare import PREPARED_DIR
from stages.train import REPORTS_DIR

FIGURES = figures.FIGURES
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
            "predictions": pd.read_csv(folder / "predictions.csv"),
            "model_file": Path("models") / name / "model.keras",
        }
        results[name]["details"] = model_details(results[name])
    return results


def receptive_fields(model) -> dict[str, str]:
    """Each layer's receptive field on the input image (square kernels and strides)."""
    size, jump, fields = 1, 1, {}
    full = model.input_shape[1]
    for layer in model.layers[1:]:
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if kernel is not None:
            strides = getattr(layer, "strides", None) or kernel
            size += (kernel[0] - 1) * jump
            jump *= strides[0]
        elif layer.__class__.__name__ in ("Flatten", "Dense"):
            size = full
        fields[layer.name] = f"{min(size, full)}x{min(size, full)}"
    return fields


def model_details(r: dict) -> dict:
    """What the report needs from the trained model itself: receptive fields, first-layer filters."""
    import keras

    model = keras.models.load_model(r["model_file"], compile=False)
    first_conv = next(layer for layer in model.layers if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4)
    return {"receptive_fields": receptive_fields(model), "first_kernel": np.asarray(first_conv.kernel)}


def misclassified_examples(r: dict, count: int = 16):
    with np.load(PREPARED_DIR / f"{r['config'].dataset}.npz") as npz:
        x_test = npz["x_test"]
    pred = r["predictions"]
    wrong = np.flatnonzero((pred["actual"] != pred["predicted"]).to_numpy())
    # evenly spread over the test set, which may be grouped by class
    wrong = wrong[np.unique(np.linspace(0, len(wrong) - 1, min(count, len(wrong))).astype(int))] if len(wrong) else wrong
    return x_test[wrong], pred["actual"].iloc[wrong].astype(str).tolist(), pred["predicted"].iloc[wrong].astype(str).tolist()


def recipe(cfg) -> str:
    parts = [f"{cfg.optimizer}" + (f" (momentum {cfg.momentum:g}{', Nesterov' if cfg.nesterov else ''})"
                                   if cfg.optimizer == "sgd" else ""),
             f"lr {cfg.learning_rate:g} {cfg.schedule}" + (f" after {cfg.warmup_epochs} warm-up epochs"
                                                           if cfg.warmup_epochs else ""),
             f"batch {cfg.batch_size}"]
    parts.append(f"inputs {cfg.input_scaling}")
    if cfg.mixed_precision:
        parts.append("mixed bfloat16")
    return "; ".join(parts)


def additions(cfg) -> str:
    extra = (["batch normalisation"] if cfg.batch_norm else []) + \
            ([f"{cfg.kernel_initializer} initialisation"] if cfg.kernel_initializer != "glorot_uniform" else [])
    return ", ".join(extra) or "none (the notebook's layers)"


def _share(arch: pd.DataFrame, types: tuple[str, ...], column: str) -> float:
    return 100 * arch.loc[arch["type"].isin(types), column].sum() / max(1, arch[column].sum())


def question_blocks(results: dict[str, dict]) -> list[tuple]:
    """The reference notebook's five questions, each answered with this run's numbers."""
    by_arch = {r["config"].architecture: (name, r) for name, r in results.items()}
    if not {"lenet5", "alexnet"} <= set(by_arch):
        return []
    le, al = by_arch["lenet5"][1], by_arch["alexnet"][1]
    la, aa = le["architecture"], al["architecture"]
    conv, dense = ("Conv2D",), ("Dense",)
    lmacs, amacs = int(la["multiply_adds"].sum()), int(aa["multiply_adds"].sum())
    lp, ap = le["training"]["parameters"], al["training"]["parameters"]
    shapes = dict(zip(la["layer"], la["output_shape"]))

    def acc(r):
        return f"{100 * r['metrics']['test_accuracy']:.2f}%"

    def gap(r):
        return 100 * (r["training"]["final_train_accuracy"] - r["training"]["final_val_accuracy"])

    def layers_with_weights(arch):
        return int((arch["parameters"] > 0).sum())

    return [
        ("h2", "The notebook's five questions, answered from this run"),
        ("h3", "1. LeNet-5's architecture and significance"),
        ("p", f"LeNet-5 maps a {'x'.join(map(str, le['data']['shape']))} image through two convolution + "
              f"subsampling stages (C1 {shapes.get('C1', '?')}, S2 {shapes.get('S2', '?')}, C3 {shapes.get('C3', '?')}, "
              f"S4 {shapes.get('S4', '?')}) and three fully connected layers ({shapes.get('C5', '?')}, "
              f"{shapes.get('F6', '?')}, {shapes.get('output', '?')}): {lp:,} parameters and {lmacs / 1e6:.2f} M "
              f"multiply-adds per image. Trained here for {le['training']['epochs']} epochs "
              f"({le['training']['train_seconds']:.0f} s on {le['training']['device']}), it reaches {acc(le)} test "
              f"accuracy on {le['data']['provenance']['title']}; LeCun et al. (1998) reported 99.05%. It showed that "
              "weights shared across positions, learned end to end by backpropagation, beat hand-made features."),
        ("h3", "2. Its components and their roles"),
        ("p", f"The convolutions (C1, C3) hold {_share(la, conv, 'parameters'):.1f}% of the parameters but do "
              f"{_share(la, conv, 'multiply_adds'):.1f}% of the multiply-adds: a few shared 5x5 filters slid over "
              f"the whole image. The fully connected layers hold {_share(la, dense, 'parameters'):.1f}% of the "
              "parameters. Average pooling (S2, S4) halves each side, so each C3 unit sees a "
              f"{le['details']['receptive_fields'].get('C3', '?')} patch of the input; tanh squashes each "
              "layer's output to (-1, 1)."),
        ("h3", "3. LeNet-5's limitations and how AlexNet addressed them"),
        ("p", f"LeNet-5 has {layers_with_weights(la)} layers with weights and {lp:,} parameters; the AlexNet here "
              f"has {layers_with_weights(aa)} and {ap:,} ({ap / lp:.0f}x), costing {amacs / lmacs:.0f}x the "
              f"multiply-adds per image ({amacs / 1e6:.1f} M). AlexNet replaces tanh with ReLU, average with "
              f"overlapping max-pooling (3x3, stride 2), and adds dropout 0.5 before each large dense layer. "
              f"Its train-validation accuracy gap at the last epoch is {gap(al):.1f} points, LeNet-5's "
              f"{gap(le):.1f}. Whether each change matters on its own is measured by the ablation experiments, "
              "not assumed here."),
        ("h3", "4. AlexNet's architecture and contributions"),
        ("p", f"Five convolutions (the first {al['details']['first_kernel'].shape[0]}x{al['details']['first_kernel'].shape[1]} at stride 1 "
              f"on 32x32 input), three max-pools and two 4096-unit dense layers: {ap:,} parameters, "
              f"{_share(aa, dense, 'parameters'):.1f}% of them in the dense layers, while the convolutions do "
              f"{_share(aa, conv, 'multiply_adds'):.1f}% of the compute. With {recipe(al['config'])} and regularisation by {regularisation(al['config'])}, it reaches "
              f"{acc(al)} test accuracy on {al['data']['provenance']['title']} after {al['training']['epochs']} epochs "
              f"({al['training']['train_seconds'] / 60:.1f} min on {al['training']['device']}). The reference "
              "notebook's AlexNet never learned; see the diagnosis below for why."),
        ("h3", "5. How the two compare"),
        ("p", f"On their own datasets, LeNet-5 scores {acc(le)} on MNIST and AlexNet {acc(al)} on CIFAR-10: "
              "different tasks, so the numbers do not rank the networks. Per image, AlexNet needs "
              f"{amacs / lmacs:.0f}x the multiply-adds; it trained at "
              f"{al['training']['train_images_per_second']:.0f} images/s against LeNet-5's "
              f"{le['training']['train_images_per_second']:.0f}, infers at "
              f"{al['metrics']['inference_images_per_second']:.0f} against "
              f"{le['metrics']['inference_images_per_second']:.0f} images/s, answers one image in "
              f"{al['metrics']['latency_ms_per_image']:.2f} ms against {le['metrics']['latency_ms_per_image']:.2f} ms, "
              f"and takes {al['metrics']['model_size_mb']:.0f} MB on disk against "
              f"{le['metrics']['model_size_mb']:.1f} MB."),
    ]


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
        ("img", figures.diagnostics(steps, layers), "loss and dead units over the first steps"),
        ("p", f"Measured after step {nb['steps']} on {summary['model']}'s validation images "
              "(`dvc repro diagnose`; settings under `diagnose:` in params.yaml). The training-health "
              "check stops any run that ends up like this: see the README."),
    ]


# A report is a list of blocks, rendered once as Markdown and once as HTML.
def choices(cfg) -> dict:
    """The architecture's activation, pooling, dropout and first kernel, as built."""
    from stages.models import DEFAULTS

    return {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in DEFAULTS[cfg.architecture].items()}


def regularisation(cfg) -> str:
    parts = []
    if choices(cfg)["dropout"]:
        parts.append(f"dropout {choices(cfg)['dropout']:g}")
    if cfg.weight_decay:
        parts.append(f"weight decay {cfg.weight_decay:g}")
    if cfg.label_smoothing:
        parts.append(f"label smoothing {cfg.label_smoothing:g}")
    augmentation = (([f"crop, pad {cfg.augment_crop_padding}"] if cfg.augment_crop_padding else [])
                    + (["flip"] if cfg.augment_flip else [])
                    + ([f"cutout {cfg.augment_cutout}x{cfg.augment_cutout}"] if cfg.augment_cutout else []))
    if augmentation:
        parts.append("augmentation (" + ", ".join(augmentation) + ")")
    if cfg.early_stopping_patience:
        parts.append(f"early stopping (patience {cfg.early_stopping_patience})")
    return ", ".join(parts) or "none"


def test_accuracy(metrics: dict) -> str:
    text = f"{100 * metrics['test_accuracy']:.2f}% (of {metrics['test_images']:,} images)"
    views = metrics.get("test_views", 1)
    if views > 1:
        text += (f"; averaged over {views} views of each image (test-time augmentation), "
                 f"single view {100 * metrics['test_accuracy_single_view']:.2f}%")
    return text


def peak_memory(r: dict) -> str:
    train, infer = r["training"].get("peak_rss_mb"), r["metrics"].get("inference_peak_rss_mb")
    text = (f"training {train:,.0f} MB" if train else "training: not recorded") + "; " + (
        f"inference {infer:,.0f} MB" if infer else "inference: not recorded")
    gpu = r["training"].get("peak_gpu_mb")
    return text + (f"; GPU {gpu:,.0f} MB" if gpu else "")


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
        ("Activation / pooling", lambda r: "{activation} / {pooling}".format(**choices(r["config"]))),
        ("Regularisation", lambda r: regularisation(r["config"])),
        ("Layers with weights", lambda r: str(int((r["architecture"]["parameters"] > 0).sum()))),
        ("Parameters", lambda r: f"{r['training']['parameters']:,}"),
        ("Multiply-adds per image (forward)", lambda r: f"{int(r['architecture']['multiply_adds'].sum()):,}"),
        ("Training images", lambda r: f"{r['data']['sizes']['train']:,}"),
        ("Recipe", lambda r: recipe(r["config"])),
        ("Additions to the architecture", lambda r: additions(r["config"])),
        ("Epochs", lambda r: str(r["training"]["epochs"])),
        ("Test accuracy", lambda r: test_accuracy(r["metrics"])),
        ("Test loss", lambda r: f"{r['metrics']['test_loss']:.4f}"),
        ("Macro F1", lambda r: f"{r['metrics']['test_macro_f1']:.4f}"),
        ("Training time", lambda r: f"{r['training']['train_seconds']:.1f} s "
                                    f"({r['training']['train_images_per_second']:.0f} images/s)"),
        ("Inference", lambda r: f"{r['metrics']['inference_images_per_second']:.0f} images/s "
                                f"(batch {r['metrics']['inference_batch_size']}); "
                                f"{r['metrics']['latency_ms_per_image']:.2f} ms for one image"),
        ("Model size on disk", lambda r: f"{r['metrics']['model_size_mb']:.1f} MB (.keras, with optimizer state)"),
        ("Peak memory (process RSS)", lambda r: peak_memory(r)),
        ("Device", lambda r: r["training"]["device"]),
    ]:
        rows.append([label] + [get(results[n]) for n in names])
    blocks += [("h2", "Side by side"), ("table", ["", *names], rows)]
    blocks += question_blocks(results)

    for name, r in results.items():
        arch, details = r["architecture"], r["details"]
        fields = details["receptive_fields"]
        table = [[row.layer, row.type, row.activation if isinstance(row.activation, str) else "",
                  row.output_shape, f"{row.parameters:,}", f"{row.multiply_adds:,}", fields.get(row.layer, "")]
                 for row in arch.itertuples()]
        table.append(["total", "", "", "", f"{int(arch['parameters'].sum()):,}",
                      f"{int(arch['multiply_adds'].sum()):,}", ""])
        per_class = [[c, f"{p:.3f}", f"{rc:.3f}", f"{f1:.3f}", str(int(n))]
                     for c, p, rc, f1, n in r["per_class"][["class", "precision", "recall", "f1", "support"]].values]
        blocks += [
            ("h2", f"{name}: {r['config'].architecture} on {r['data']['provenance']['title']}"),
            ("h3", "Layers"),
            ("table", ["layer", "type", "activation", "output", "parameters", "multiply-adds", "receptive field"],
             table),
            ("h3", "Learning curves"), ("img", figures.learning_curves(name, r["history"]), f"{name} learning curves"),
            ("h3", "Confusion matrix"), ("img", figures.confusion(name, r["confusion"]), f"{name} confusion matrix"),
            ("h3", "Per class"), ("img", figures.per_class(name, r["per_class"]), f"{name} precision and recall"),
            ("table", ["class", "precision", "recall", "F1", "support"], per_class),
            ("h3", "Misclassified test images"),
            ("img", figures.misclassified(name, *misclassified_examples(r)), f"{name} misclassified images"),
            ("h3", "First-layer filters"),
            ("img", figures.first_layer_filters(name, details["first_kernel"]), f"{name} first-layer filters"),
        ]

    blocks += diagnostics_blocks()
    blocks += [("h2", "The notebook's claims"),
               ("p", "Whether ReLU trains faster than tanh, dropout prevents overfitting, max pooling beats "
                     "average pooling, LeNet-5 lacks the capacity for CIFAR-10 and large first kernels help "
                     "is measured by the ablation grid, several seeds per variant: `dvc repro ablations/dvc.yaml` "
                     "writes the claims table with a verdict per claim to claims.md and claims.html beside "
                     "this report (a separate pipeline, so this report does not wait for it).")]
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


def to_html(blocks: list[tuple], title: str = "LeNet-5 and AlexNet report") -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
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
