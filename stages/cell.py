"""Stage `cell` of ablations/dvc.yaml (the quick grid) and of ablations/full-size/dvc.yaml (the
same grid at full size): train and score one variant of the claims grid, one seed.

    python -m stages.cell alexnet-tanh 2          # the quick grid's budget (params.yaml `ablations`)
    python -m stages.cell alexnet-tanh 2 full     # the full-size budget (`ablations.full_size`)

The variant's recipe is its base `models` entry with the variant's changes and the budget's epochs;
the seed picks the weights, the batch order and the training subset. Writes
ablations/results[-full]/<variant>-seed<seed>.json: per-epoch history and the measures the claims
compare (classic_cnns/analysis/grid.py); what it cost to reports/costs/[full-]cell-<variant>-seed<seed>.json.
Logged to MLflow as a child of the budget's parent run.
"""

from __future__ import annotations

import sys

from classic_cnns.analysis import grid
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit, stage_args
from classic_cnns.reporting import costs_page


def main(argv: list[str]) -> int:
    params = load_or_exit()
    args = stage_args(
        "cell", argv, {"budget": "quick"}, variant=params.ablations.variants, seed=int, budget=("quick", "full")
    )
    grid.run_cell(params, args.variant, args.seed, args.budget)
    costs_page.write()  # its cost record is in reports/costs/, which the page shows
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
