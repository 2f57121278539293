"""A model's section of the report, made by stage `section@<name>` from that model's outputs alone:
reports/sections/<name>/section.md (layers, learning curves, confusion matrix, per-class scores,
misclassified images, first-layer filters; image links relative to reports/), its figures beside it,
and summary.json (its column of the side-by-side table, its data's provenance, its model file's
sha256). Stage `report`
depends on the folder reports/sections, so every model in params.yaml is one of its inputs, and a
model added there reruns it, with no edit of dvc.yaml.
"""

from __future__ import annotations

import json

from classic_cnns import outputs
from classic_cnns.paths import REPORTS, SECTIONS
from classic_cnns.reporting import render
from classic_cnns.reporting.report import SIDE_BY_SIDE, load_results, model_blocks


def write(name: str, cfg) -> None:
    r = load_results({name: cfg})[name]
    text = render.to_markdown(model_blocks(r), REPORTS)
    summary = {
        "name": name,
        "title": r["title"],
        "dataset": r["dataset"],
        "model_sha256": outputs.sha256(r["model_file"]),  # finds its MLflow run
        "side_by_side": {label: get(r) for label, get in SIDE_BY_SIDE},
        "provenance": r["data"]["provenance"],
    }
    outputs.write_text(SECTIONS / name / "section.md", text)
    outputs.write_json(SECTIONS / name / "summary.json", summary)


def read(name: str) -> dict:
    """summary.json with the section's Markdown as `markdown`; FileNotFoundError naming the stage."""
    folder = SECTIONS / name
    if not (folder / "summary.json").exists() or not (folder / "section.md").exists():
        raise FileNotFoundError(f"{folder} lacks section.md or summary.json: run `dvc repro section@{name}` first")
    return {**json.loads((folder / "summary.json").read_text()), "markdown": (folder / "section.md").read_text()}
