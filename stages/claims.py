"""Stage `claims` of ablations/dvc.yaml: the notebook's claims, each with what was measured, the
mean ± std over seeds, the 95% confidence interval of the difference and a verdict
(classic_cnns/analysis/claims.py).

    python -m stages.claims

Reads ablations/results/<variant>-seed<seed>.json (stage `cell`) and the full-size grid's cells: those
ablations/full-size/dvc.yaml has run (ablations/results-full/), else their records made outside DVC
(ablations/records-full/); writes reports/claims.md,
reports/claims.html (self-contained) and ablations/claims.json, logs them to the grid's parent
MLflow run and marks it finished.
"""

from __future__ import annotations

import json
import sys

from classic_cnns import outputs, paths
from classic_cnns.analysis import claims, grid
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit
from classic_cnns.reporting import claims_doc, render

REPORT_MD, REPORT_HTML = paths.REPORTS / "claims.md", paths.REPORTS / "claims.html"


def main(argv: list[str]) -> int:
    params = load_or_exit()
    try:
        cells = {"quick": grid.load_cells(params)}
        full = grid.load_cells(params, "full")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: claims: {exc}", file=sys.stderr)
        return 2
    if len(full):
        cells = {"full": full, **cells}
    budgets = {size: (claims.claims_table(c), c, grid.cells_budget(params, c, size)) for size, c in cells.items()}
    table = budgets["quick"][0]
    records = [
        {"budget": size, **r} for size, (t, _, _) in budgets.items() for r in json.loads(t.to_json(orient="records"))
    ]
    outputs.write_json(paths.CLAIMS, records)
    doc = claims_doc.blocks(budgets, params.ablations)
    text = render.to_markdown(doc, REPORT_MD.parent)
    outputs.write_text(REPORT_MD, text)
    outputs.write_text(REPORT_HTML, render.to_html(text, "The notebook's claims, measured", REPORT_MD.parent))
    grid.log_claims(params, table, [paths.CLAIMS, REPORT_MD, REPORT_HTML])
    for size, (t, _, _) in budgets.items():
        for r in t.itertuples():
            print(
                f"{size:>5} {r.verdict:>12}  {100 * r.difference:+5.1f} "
                f"[{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]  {r.claim}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
