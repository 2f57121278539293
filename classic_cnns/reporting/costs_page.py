"""reports/costs.md and .html: what the runs behind report.md cost (wall times, speed, memory,
device), and the GPU against the CPU, from the stages' cost records (reports/costs/) and the device
check's (bench/results/).

Apart from the report because DVC hashes the report: its numbers are what code, params and data
decide, so a rerun leaves `dvc.lock` identical; timings differ on every run. Nothing here is a DVC
output: `train`, `evaluate` and `report` rewrite this page whenever they run, from the files, so
every number on it is the one in its record.
"""

from __future__ import annotations

import json
from pathlib import Path

from classic_cnns import costs, outputs, paths
from classic_cnns.model.networks import TITLES
from classic_cnns.reporting import describe, render

TITLE = "What the runs cost"


def about(name: str, cfg) -> dict:
    """What a training's cost record is about, stored in it, so this page needs no params (the train
    stage reads only its own model's): title, architecture, dataset."""
    return {"title": describe.title(name, cfg), "architecture": cfg.architecture, "dataset": cfg.dataset}


ORDER = ("lenet5", "alexnet")


def load() -> dict[str, dict]:
    """Per model with a cost record: its title, data, settings and results, with the costs merged in."""
    names = {f.stem.split("-", 1)[1] for stage in ("train", "evaluate") for f in paths.COSTS.glob(f"{stage}-*.json")}
    records = {}
    for name in names:
        train, evaluate = costs.read("train", name), costs.read("evaluate", name)
        known = {**train, **evaluate}
        arch, dataset = known.get("architecture", name), known.get("dataset", "")
        folder = paths.model_reports(name)
        data = (_json(paths.prepared(dataset)[1]) if dataset else {}) or {
            "provenance": {"title": dataset or "not recorded"},
            "sizes": {},
        }
        records[name] = {
            "name": name,
            "architecture": arch,
            "title": known.get("title", TITLES.get(name, name)),  # a record from before `about`: by its name
            "dataset": data["provenance"]["title"],
            "data": data,
            "training": {**_json(folder / "training.json"), **train},
            "metrics": {**_json(folder / "metrics.json"), **_json(folder / "evaluation.json"), **evaluate},
        }
    order = sorted(records, key=lambda n: (ORDER.index(a) if (a := records[n]["architecture"]) in ORDER else 9, n))
    return {n: records[n] for n in order}


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _seconds(t: dict) -> str:
    if "train_seconds" not in t:
        return "not recorded"
    return f"{t['train_seconds']:,.1f} s ({t['train_images_per_second']:,.0f} images/s)"


def _epoch(t: dict) -> str:
    epochs = sorted(t.get("epoch_seconds", []))
    return f"{epochs[len(epochs) // 2]:.2f} s" if epochs else "not recorded"


def _inference(m: dict) -> str:
    if "inference_images_per_second" not in m:
        return "not recorded"
    batch = f" (batch {m['inference_batch_size']})" if "inference_batch_size" in m else ""
    return f"{m['inference_images_per_second']:,.0f} images/s{batch}; {m['latency_ms_per_image']:.2f} ms for one image"


PER_MODEL = [
    ("Dataset", lambda r: r["dataset"]),
    ("Epochs", lambda r: str(r["training"].get("epochs", "not recorded"))),
    ("Training", lambda r: _seconds(r["training"])),
    ("Epoch (median)", lambda r: _epoch(r["training"])),
    ("Inference", lambda r: _inference(r["metrics"])),
    ("Peak memory (process RSS)", lambda r: describe.peak_memory(r["training"], r["metrics"])),
    ("Device (training)", lambda r: r["training"].get("device", "not recorded")),
    ("Keras backend (training)", lambda r: r["training"].get("keras_backend", "not recorded")),
    ("Precision (training)", lambda r: r["training"].get("precision", "not recorded")),
]


def compare_blocks(records: dict[str, dict]) -> list[tuple]:
    """The notebook's two models, LeNet-5 against AlexNet (the `models:` entries of those names), in time
    and memory, where both were trained and evaluated here; never another model of the same
    architecture (a LeNet-5 on a user's dataset)."""
    le, al = (records.get(name) if records.get(name, {}).get("architecture") == name else None for name in ORDER)
    needed = ("train_images_per_second", "inference_images_per_second")
    if not (le and al) or any(k not in r["training"] | r["metrics"] for r in (le, al) for k in needed):
        return []
    return [
        ("h2", "How the two compare in cost"),
        (
            "p",
            f"AlexNet trained at {al['training']['train_images_per_second']:,.0f} images/s against LeNet-5's "
            f"{le['training']['train_images_per_second']:,.0f}, infers at "
            f"{al['metrics']['inference_images_per_second']:,.0f} against "
            f"{le['metrics']['inference_images_per_second']:,.0f} images/s and answers one image in "
            f"{al['metrics']['latency_ms_per_image']:.2f} ms against {le['metrics']['latency_ms_per_image']:.2f} ms"
            + ("" if al["training"].get("device") == le["training"].get("device") else " (on different devices)")
            + ".",
        ),
    ]


def blocks(records: dict[str, dict], bench_dir: Path) -> list[tuple]:
    names = list(records)
    intro = (
        "The wall times, speeds, memory and devices of the runs that made [report.md](report.md)'s results, "
        "as `train` and `evaluate` recorded them in `reports/costs/`. Kept out of the report because DVC "
        "hashes the report and timings differ on every run; rewritten from the records each time `train`, "
        "`evaluate` or `report` runs."
    )
    if not names:
        none = ("p", "No training has recorded its costs yet: run `dvc repro`.")
        return [("h1", TITLE), ("p", intro), none, *grid_blocks()]
    rows = [[label] + [get(records[n]) for n in names] for label, get in PER_MODEL]
    return [
        ("h1", TITLE),
        ("p", intro),
        ("table", ["", *[records[n]["title"] for n in names]], rows),
        *compare_blocks(records),
        *gpu_blocks(records, bench_dir),
        *grid_blocks(),
    ]


def grid_cost(label: str, cells: list[dict]) -> str:
    """'At full size, 33 cells: 26 on <GPU>, 3 min of training, up to 6 at a time; 7 on <CPU>, ...':
    a budget's cells per device (minutes on different devices are not added up)."""
    devices = sorted({c.get("device", "?") for c in cells})
    parts = []
    for device in devices:
        on = [c for c in cells if c.get("device", "?") == device]
        at_once = max(int(c.get("concurrent_cells", 1)) for c in on)
        parts.append(
            (f"{len(on)} on" if len(devices) > 1 else "on")
            + f" {device}, {duration(sum(c['train_seconds'] for c in on))} of training"
            + (f", up to {at_once} at a time" if at_once > 1 else ", one at a time")
        )
    count = f"{len(cells)} cell" + "s" * (len(cells) != 1)
    return f"{label}, {count}{':' if len(devices) > 1 else ''} {'; '.join(parts)}."


def grid_blocks() -> list[tuple]:
    """What the claims grid's trainings took: the quick grid's cells (reports/costs/cell-*.json) and
    the full-size grid's: its pipeline's (reports/costs/full-cell-*.json), and the records of cells
    trained outside DVC (ablations/records-full/, which hold their own costs) for the others."""
    quick = [_json(f) for f in sorted(paths.COSTS.glob("cell-*.json"))]
    made = sorted(paths.COSTS.glob("full-cell-*.json"))
    ran = {f.name.removeprefix("full-cell-") for f in made}
    full = [_json(f) for f in made] + [
        _json(f) for f in sorted(paths.FULL_GRID_RECORDS.glob("*.json")) if f.name not in ran
    ]
    budgets = [(label, cells) for label, cells in (("At full size", full), ("The quick check", quick)) if cells]
    if not budgets:
        return []
    shared = any(int(c.get("concurrent_cells", 1)) > 1 for _, cells in budgets for c in cells)
    return [
        ("h2", "The claims grid"),
        *[("p", grid_cost(label, cells)) for label, cells in budgets],
        (
            "p",
            "A cell's wall time is longer when others run beside it. " * shared
            + "[claims.md](claims.md) has the verdicts.",
        ),
    ]


def write() -> Path:
    """reports/costs.md and costs.html from the records present now; returns the Markdown's path."""
    md = paths.REPORTS / "costs.md"
    text = render.to_markdown(blocks(load(), paths.BENCH_RESULTS), paths.REPORTS)
    outputs.write_text(md, text)
    outputs.write_text(paths.REPORTS / "costs.html", render.to_html(text, TITLE, paths.REPORTS))
    return md


def gpu_runs(records: dict[str, dict], bench_dir: Path) -> list[tuple[dict, dict]]:
    """(device check record, one model's run) for each GPU run of a model this page describes."""
    runs = []
    for path in sorted(bench_dir.glob("device-*.json")):
        record = json.loads(path.read_text())
        if record.get("device", "").startswith("GPU"):
            runs += [(record, m) for m in record["models"] if m["model"] in records]
    return runs


def speed_rows(records: dict[str, dict], runs: list[tuple[dict, dict]]) -> list[list[str]]:
    """The pipeline's trainings (reports/costs/), then the device check's GPU runs, each with its data."""
    rows = []
    for r in records.values():
        t, m = r["training"], r["metrics"]
        if "train_seconds" not in t:
            continue
        where = [t.get("device", "?"), t.get("keras_backend", "?")]
        speed = [f"{t['train_images_per_second']:,.0f}", "—", f"{t['train_seconds']:,.0f} s"]
        accuracy = _accuracy(m["test_accuracy"], m.get("test_views", 1)) if "test_accuracy" in m else "—"
        rows.append([r["title"], r["dataset"], *where, str(t.get("epochs", "?")), _epoch(t), *speed, accuracy])
    for record, m in runs:
        data = m.get("dataset", "not recorded")
        speed = [f"{m['images_per_second']:,.0f}", f"{100 * m['peak_fraction']:.1f}%", f"{m['train_seconds']:,.0f} s"]
        accuracy = _accuracy(m["test_accuracy"], m["test_views"])
        rows.append([records[m["model"]]["title"], data, record["device"], m["backend"], str(m["epochs"]),
                     f"{m['epoch_seconds']:.2f} s", *speed, accuracy])  # fmt: skip
    return rows


NOT_COMPARABLE = (
    ", none of them on the same data for the same epochs as the pipeline's runs, so no speed-up is "
    "given; the table lists both"
)


def comparable(gpu: dict, r: dict) -> bool:
    """A device check run trained what the pipeline's run trained: same epochs, same training images,
    the same dataset where the record names it."""
    train_images = r["data"]["sizes"].get("train")
    same_data = gpu.get("dataset", r["dataset"]) == r["dataset"]
    same_images = gpu.get("train_images", train_images) == train_images
    return (
        same_data and same_images and gpu["epochs"] == r["training"].get("epochs") and "train_seconds" in r["training"]
    )


def gpu_blocks(records: dict[str, dict], bench_dir: Path) -> list[tuple]:
    """The notebook's claim that GPUs made AlexNet possible, answered with this project's trainings:
    the pipeline's runs (reports/costs/) beside the device check's GPU runs (bench/results/)."""
    runs = gpu_runs(records, bench_dir)
    if not runs:
        return []
    best = {}
    for _, m in runs:
        if comparable(m, records[m["model"]]):
            best.setdefault(m["model"], m)
    lines = [
        f"{records[n]['title']}: {m['images_per_second'] / records[n]['training']['train_images_per_second']:.0f}x "
        f"the pipeline's images per second, the whole training in {duration(m['train_seconds'])} against "
        f"{duration(records[n]['training']['train_seconds'])}"
        for n, m in best.items()
    ]
    header = ["model", "data", "device", "backend", "epochs", "epoch (median)", "images/s", "% of matmul peak",
              "training", "test accuracy"]  # fmt: skip
    return [
        ("h2", "Did GPUs matter? AlexNet's fifth idea, measured"),
        (
            "p",
            "AlexNet was trained on two GPUs, which the notebook names among its contributions. The same "
            "recipes, trained by this pipeline's code as the pipeline ran them (the runs above) and on a GPU "
            "(the device check, `bench/device.sh`; its results in `bench/results/`)"
            + (": " + "; ".join(lines) if lines else NOT_COMPARABLE)
            + f". Yet the GPU is far from full: at most "
            f"{100 * max(m['peak_fraction'] for _, m in runs):.0f}% of its own matmul peak (measured in the same "
            "run), with networks this small on 32x32 images.",
        ),
        ("table", header, speed_rows(records, runs)),
    ]


def _accuracy(value: float, views: int) -> str:
    return f"{100 * value:.2f}%" + (f" ({views} views)" if views > 1 else "")
