"""The device check: the pipeline's trainings, evaluations and diagnosis on this machine's
accelerator, with the same library code and params.yaml as `dvc repro`, timed against the
machine's own matmul peak, printed beside the committed CPU figures.

    python -m bench.device                       # everything, params.yaml as it is
    python -m bench.device --models lenet5 --epochs 2 --images 2000 --no-diagnose   # a quick look

Runs without DVC and MLflow (a GPU machine often has neither): reads data/prepared/<dataset>.npz
(`dvc repro prepare@mnist prepare@cifar10`, or copied from a machine that ran them) and writes one
JSON record (`--out`, default bench/results/device-<backend>.json). bench/device.sh sets up a
bare GPU machine from wheels and runs it on each backend. What the numbers mean:

- train s: the whole training, first-epoch compilation included, as the train stage times it;
  epoch s: the median epoch after the first (training and validation);
- images/s: training images per second over those epochs; % peak: the training FLOPs (3x the
  forward multiply-adds x 2 per image) per second over the bf16 (mixed precision) or float32
  matmul rate measured here;
- test accuracy: single view, and over the test-time views where params.yaml's evaluate asks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from classic_cnns import paths
from classic_cnns.environment import compute_precision
from classic_cnns.params import load_params

ROOT = Path(__file__).resolve().parent.parent


def load_prepared(folder: Path, dataset: str) -> tuple[dict, dict]:
    npz, meta = folder / f"{dataset}.npz", folder / f"{dataset}.json"
    if not npz.exists():
        raise SystemExit(
            f"error: {npz} is missing: run `dvc repro prepare@{dataset}` (or copy it from a machine that did) first"
        )
    with np.load(npz) as data:
        return {k: data[k] for k in data.files}, json.loads(meta.read_text())


def train_and_evaluate(params, name: str, cfg, arrays: dict, meta: dict, peaks: dict) -> dict:
    from bench.speed import train_flops_per_image
    from classic_cnns.backend import name as backend_name
    from classic_cnns.evaluation.scores import accuracy_and_loss
    from classic_cnns.evaluation.tta import predict, tta_views
    from classic_cnns.training.session import Training

    training = Training(f"{name} [{backend_name()}]", cfg, params.seed, meta, arrays)
    started = time.perf_counter()
    model = training.run(progress_bar=False)
    train_seconds = time.perf_counter() - started
    progress, x = training.progress, training.x
    epochs = progress.history["epoch_seconds"]
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    images_per_s = len(x) / steady
    flops = train_flops_per_image(model) * images_per_s
    precision, _ = compute_precision(cfg.mixed_precision)
    peak = peaks[precision]

    started = time.perf_counter()
    x_test, y_test = arrays["x_test"].astype("float32"), arrays["y_test"]
    batch = params.evaluate.batch_size
    single = model.predict(x_test, batch_size=batch, verbose=0)
    views = tta_views(cfg, params.evaluate.test_time_augmentation.get(name, False))
    probs = predict(model, arrays["x_test"], views, batch, centre=single) if len(views) > 1 else single
    evaluate_seconds = time.perf_counter() - started
    return {
        "model": name,
        "dataset": meta["provenance"]["title"],
        "backend": backend_name(),
        "epochs": len(epochs),
        "train_images": len(x),
        "mixed_precision": cfg.mixed_precision,
        "precision": precision,
        "train_seconds": round(train_seconds, 2),
        "first_epoch_seconds": round(epochs[0], 2),
        "epoch_seconds": round(steady, 3),
        "images_per_second": round(images_per_s, 1),
        "train_tflops": round(flops / 1e12, 2),
        "peak_fraction": round(flops / peak, 4),
        "final_val_accuracy": round(progress.history["val_accuracy"][-1], 4),
        "test_accuracy_single_view": round(accuracy_and_loss(single, y_test)["accuracy"], 4),
        "test_accuracy": round(accuracy_and_loss(probs, y_test)["accuracy"], 4),
        "test_views": len(views),
        "evaluate_seconds": round(evaluate_seconds, 2),
    }


def deterministic(params, cfg, arrays: dict, meta: dict, images: int = 8192) -> bool:
    """Two short trainings from the same seed give bit-identical weights."""
    import keras

    from classic_cnns.training.session import Training

    cfg = cfg.replace(epochs=2)
    weights = []
    for _ in range(2):
        first = {"x_train": arrays["x_train"][:images], "y_train": arrays["y_train"][:images]}
        model = Training("determinism", cfg, params.seed, meta, first, checks=False).run(progress_bar=False)
        weights.append([np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights])
    return all(np.array_equal(a, b) for a, b in zip(*weights, strict=False))


def diagnose(params, arrays: dict, meta: dict, steps: int | None) -> dict:
    from classic_cnns.analysis.diagnose import notebook_config, replay

    d = params.diagnose if steps is None else params.diagnose.replace(steps=steps)
    cfg = params.model(d.model)
    started = time.perf_counter()
    finals = {}
    for label, recipe in {"recipe": cfg, "notebook": notebook_config(d.notebook, cfg)}.items():
        rows, _ = replay(label, recipe, params.seed, d, arrays, meta)
        finals[label] = round(rows[-1]["probe_accuracy"], 4)
    return {"steps": d.steps, "seconds": round(time.perf_counter() - started, 2), "final_probe_accuracy": finals}


def cpu_figures(name: str) -> dict:
    """The committed CPU training's figures (the train stage's record of its last run)."""
    path = ROOT / paths.cost_record("train", name)
    record = json.loads(path.read_text()) if path.exists() else {}
    return {k: record[k] for k in ("train_seconds", "train_images_per_second", "device") if k in record}


def table(result: dict) -> str:
    lines = [
        f"device: {result['device']} ({result['backend']} backend); matmul peak "
        f"bf16 {result['peak_tflops']['bfloat16']:.0f} TFLOP/s, float32 {result['peak_tflops']['float32']:.0f}",
        "| model | epochs | train s | epoch s | images/s | % peak | test acc (1 view) | test acc | "
        "CPU train s | CPU images/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["models"]:
        cpu = result["cpu"].get(r["model"], {})
        lines.append(
            f"| {r['model']} | {r['epochs']} | {r['train_seconds']:.1f} | {r['epoch_seconds']:.2f} | "
            f"{r['images_per_second']:,.0f} | {100 * r['peak_fraction']:.1f}% | "
            f"{100 * r['test_accuracy_single_view']:.2f}% | {100 * r['test_accuracy']:.2f}% "
            f"({r['test_views']} views) | {cpu.get('train_seconds', '-')} | "
            f"{cpu.get('train_images_per_second', '-')} |"
        )
    if result.get("diagnose"):
        d = result["diagnose"]
        lines.append(
            f"diagnose: {d['steps']} steps x 2 recipes in {d['seconds']:.1f} s; "
            f"final probe accuracy {d['final_probe_accuracy']}"
        )
    if "deterministic" in result:
        lines.append(f"two seeded trainings bit-identical: {result['deterministic']}")
    lines.append(f"total {result['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / paths.PREPARED)
    parser.add_argument("--models", nargs="+", help="models: entries to train (default: all)")
    parser.add_argument("--epochs", type=int, help="instead of each model's epochs (a quick look)")
    parser.add_argument("--images", type=int, help="at most this many images of each split (default: all)")
    parser.add_argument("--diagnose-steps", type=int, help="instead of diagnose.steps")
    parser.add_argument("--no-diagnose", action="store_true")
    parser.add_argument("--no-determinism", action="store_true")
    parser.add_argument("--peak-size", type=int, default=8192, help="matrix side of the peak measurement")
    parser.add_argument("--out", type=Path)
    return check(parser.parse_args(argv))


def check(args: argparse.Namespace) -> int:
    """The device check: each model trained and evaluated, determinism, the diagnosis; one record."""
    from bench.speed import matmul_peak
    from classic_cnns import environment
    from classic_cnns.backend import name as backend_name

    started = time.perf_counter()
    params = load_params(ROOT / "params.yaml")
    names = args.models or list(params.models)
    peaks = {dtype: matmul_peak(dtype, n=args.peak_size) for dtype in ("bfloat16", "float32")}
    result = {
        "device": environment.device(),
        "backend": backend_name(),
        "environment": environment.describe(),
        "peak_tflops": {k: round(v / 1e12, 1) for k, v in peaks.items()},
        "cpu": {name: cpu_figures(name) for name in names},
    }
    data = {}
    result["models"] = [train_one(params, name, args, data, peaks) for name in names]
    if not args.no_determinism:
        first = params.model(names[0])
        result["deterministic"] = deterministic(params, first, *data[first.dataset])
    if not args.no_diagnose:
        d_cfg = params.model(params.diagnose.model)
        if d_cfg.dataset not in data:
            data[d_cfg.dataset] = load_prepared(args.data, d_cfg.dataset)
        result["diagnose"] = diagnose(params, *data[d_cfg.dataset], args.diagnose_steps)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = args.out or ROOT / "bench/results" / f"device-{backend_name()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result), flush=True)
    return 0


def train_one(params, name: str, args: argparse.Namespace, data: dict, peaks: dict) -> dict:
    """One model at the asked size (data: the prepared datasets loaded so far, by name)."""
    cfg = params.model(name)
    if args.epochs:
        cfg = cfg.replace(epochs=args.epochs)
    if cfg.dataset not in data:
        data[cfg.dataset] = load_prepared(args.data, cfg.dataset)
    arrays, meta = data[cfg.dataset]
    if args.images:
        arrays = {k: v[: args.images] for k, v in arrays.items()}
    record = train_and_evaluate(params, name, cfg, arrays, meta, peaks)
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    sys.exit(main())
