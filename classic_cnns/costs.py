"""What a stage's run cost on the machine that ran it: wall times, throughput, memory, device.

Kept apart from the stage's DVC outputs, in reports/costs/<stage>-<name>.json (committed, never
declared in dvc.yaml), so that DVC's hashes hold only what the code, params and data decide: a
rerun on another machine that computes the same numbers leaves `dvc status` clean. The report
reads these files for its cost figures; they are also logged to the stage's MLflow run.
"""

from __future__ import annotations

import json

from classic_cnns import outputs
from classic_cnns.paths import cost_record as path


def write(stage: str, name: str, record: dict) -> None:
    outputs.write_json(path(stage, name), record)


def read(stage: str, name: str) -> dict:
    """The record of the last run of `stage` for `name` ({} where none was made here)."""
    file = path(stage, name)
    return json.loads(file.read_text()) if file.exists() else {}
