"""Stage `section`: one model's section of the report, from its training and evaluation outputs
(classic_cnns/reporting/section.py): reports/sections/<name>/.

    python -m stages.section lenet5
"""

from __future__ import annotations

import sys

from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit, stage_args
from classic_cnns.reporting import section


def main(argv: list[str]) -> int:
    params = load_or_exit()
    name = stage_args("section", argv, model=params.models).model
    try:
        section.write(name, params.model(name))
    except FileNotFoundError as exc:
        print(f"error: section: {exc}", file=sys.stderr)
        return 2
    print(f"section: reports/sections/{name}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
