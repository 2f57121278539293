"""Stage `report`: reports/report.md (PNGs in reports/figures/) and a self-contained
reports/report.html, built only from the files the other stages wrote (classic_cnns/reporting/report.py);
and reports/costs.md/.html anew from the cost records (not a DVC output).

    python -m stages.report
"""

from __future__ import annotations

import sys

import mlflow

from classic_cnns import outputs
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit
from classic_cnns.paths import DIAGNOSTICS, FIGURES, REPORTS, model_file
from classic_cnns.reporting import costs_page, figures, render
from classic_cnns.reporting.report import build_blocks, load_results
from classic_cnns.tracking import registry, runs, store


def main(argv: list[str]) -> int:
    params = load_or_exit()
    try:
        results = load_results(params.models)
    except FileNotFoundError as exc:
        print(f"error: report: {exc}", file=sys.stderr)
        return 2
    blocks = build_blocks(results, DIAGNOSTICS)
    md, page = REPORTS / "report.md", REPORTS / "report.html"
    text = render.to_markdown(blocks, REPORTS)
    outputs.write_text(md, text)
    outputs.write_text(page, render.to_html(text, "LeNet-5 and AlexNet report", REPORTS))
    cost_page = costs_page.write()  # not a DVC output: timings differ on every run

    store.use_store(params.mlflow.experiment)
    with store.failures_named(store.tracking_uri(), "logging the report"), mlflow.start_run(run_name="report"):
        mlflow.set_tags({**runs.run_tags(), "kind": "report"})
        for name in params.models:
            trained = registry.training_run_of(params.mlflow.experiment, outputs.sha256(model_file(name)))
            if trained:
                mlflow.set_tag(f"run_id.{name}", trained.info.run_id)
                log_to_training_run(trained.info.run_id, name, md)
        mlflow.log_artifact(str(md), artifact_path="report")
        mlflow.log_artifact(str(page), artifact_path="report")
        mlflow.log_artifact(str(cost_page), artifact_path="report")
        mlflow.log_artifacts(str(FIGURES), artifact_path="report/figures")
    print(f"report: {md} and {page}")
    return 0


def log_to_training_run(run_id: str, name: str, md) -> None:
    """The model's figures and the report beside its training's run, so the run holds what it showed."""
    client = mlflow.MlflowClient()
    for figure in figures.of_model(name):
        client.log_artifact(run_id, str(figure), artifact_path="figures")
    client.log_artifact(run_id, str(md), artifact_path="report")


if __name__ == "__main__":
    sys.exit(run_stage(main))
