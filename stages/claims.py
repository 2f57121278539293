"""Stage `claims` of ablations/dvc.yaml: the notebook's claims, each with what was measured, the
mean ± std over seeds, the 95% confidence interval of the difference and a verdict
(classic_cnns/claims.py).

    python -m stages.claims

Reads ablations/results/<variant>-seed<seed>.json (stage `cell`); writes reports/claims.md,
reports/claims.html (self-contained) and ablations/claims.json, logs them to the grid's parent
MLflow run and marks it finished.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from classic_cnns import claims, grid, outputs, render
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit

CLAIMS_JSON = Path("ablations/claims.json")
REPORT_MD, REPORT_HTML = Path("reports/claims.md"), Path("reports/claims.html")


def main(argv: list[str]) -> int:
    params = load_or_exit()
    try:
        cells = grid.load_cells(params)
    except FileNotFoundError as exc:
        print(f"error: claims: {exc}", file=sys.stderr)
        return 1
    table = claims.claims_table(cells)
    outputs.write_json(CLAIMS_JSON, json.loads(table.to_json(orient="records")))
    doc = claims.blocks(table, cells, params.ablations)
    outputs.write_text(REPORT_MD, render.to_markdown(doc, REPORT_MD.parent))
    outputs.write_text(REPORT_HTML, render.to_html(doc, "The notebook's claims, measured"))
    grid.log_claims(params, table, [CLAIMS_JSON, REPORT_MD, REPORT_HTML])
    for r in table.itertuples():
        print(f"{r.verdict:>12}  {100 * r.difference:+5.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]  {r.claim}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
