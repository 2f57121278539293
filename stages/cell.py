"""Stage `cell` of ablations/dvc.yaml: train and score one variant of the claims grid, one seed.

    python -m stages.cell alexnet-tanh 2

The variant's recipe is its base `models` entry with the variant's changes and the grid's budget
(params.yaml `ablations`); the seed picks the weights, the batch order and the training subset.
Writes ablations/results/<variant>-seed<seed>.json: per-epoch history and the measures the claims
compare (classic_cnns/analysis/grid.py); what it cost to reports/costs/cell-<variant>-seed<seed>.json.
Logged to MLflow as a child of the grid's parent run.
"""

from __future__ import annotations

import sys

from classic_cnns.analysis import grid
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit, stage_args
from classic_cnns.reporting import costs_page


def main(argv: list[str]) -> int:
    params = load_or_exit()
    args = stage_args("cell", argv, variant=params.ablations.variants, seed=int)
    grid.run_cell(params, args.variant, args.seed)
    costs_page.write()  # its cost record is in reports/costs/, which the page shows
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
