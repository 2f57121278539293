"""Stage `prepare`: raw files -> checked uint8 arrays with a seeded validation split.

    python -m stages.prepare mnist

Writes data/prepared/<dataset>.npz (x/y for train, val, test; images NHWC uint8, labels uint8)
and data/prepared/<dataset>.json (title, class names, shapes, class counts, normalisation
statistics from the training split only, the provenance of the raw files). Images are checked
against the dataset's declared shape and padded only where it declares a border (MNIST: 28 -> 32).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from classic_cnns import outputs, paths
from classic_cnns.data import datasets
from classic_cnns.data.prepared import split, summary
from classic_cnns.errors import check_free_space, run_stage
from classic_cnns.params import load_or_exit, stage_args


def main(argv: list[str]) -> int:
    params = load_or_exit()
    name, cfg = stage_args("prepare", argv, dataset=params.data).dataset, params.prepare
    raw = paths.RAW / name
    try:
        ds = datasets.get(name, params.data[name])
        provenance = json.loads((raw / "provenance.json").read_text())
        arrays = split(ds, datasets.read_raw(ds, raw), params.seed, cfg.val_size, cfg.train_limit, cfg.test_limit)
    except FileNotFoundError as exc:
        print(
            f"error: prepare {name}: {exc.filename} is missing: run `dvc repro download@{name}` first", file=sys.stderr
        )
        return 2
    except ValueError as exc:
        print(f"error: prepare {name}: {exc}", file=sys.stderr)
        return 2
    info = {**summary(ds, arrays, provenance), "subset": bool(cfg.train_limit or cfg.test_limit)}
    needed = sum(a.nbytes for a in arrays.values()) + 2**20  # np.savez stores them uncompressed
    npz_file, json_file = paths.prepared(name)
    check_free_space(paths.PREPARED, needed, f"writing {name}.npz")
    with outputs.atomic(npz_file) as npz:
        np.savez(npz, **arrays)
    outputs.write_json(json_file, info)
    print(
        f"{name}: train {info['sizes']['train']}, val {info['sizes']['val']}, "
        f"test {info['sizes']['test']} images of {tuple(info['shape'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
