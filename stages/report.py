"""Stage `report`: reports/report.md and a self-contained reports/report.html, built only from the
files the other stages wrote (classic_cnns/reporting/report.py): every model's section
(reports/sections/<name>/, stage `section`), the notebook's two models' outputs for its questions,
the diagnosis; and reports/costs.md/.html anew from the cost records (not a DVC output).

    python -m stages.report
"""

from __future__ import annotations

import sys

import mlflow

from classic_cnns import outputs
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit
from classic_cnns.paths import DIAGNOSTICS, FIGURES, REPORTS, SECTIONS
from classic_cnns.reporting import costs_page, figures, questions, render, section
from classic_cnns.reporting.report import build_blocks, load_results
from classic_cnns.tracking import registry, runs, store


def main(argv: list[str]) -> int:
    params = load_or_exit()
    try:
        notebook = load_results({n: params.models[n] for n in questions.NOTEBOOK if n in params.models})
        sections = [section.read(name) for name in params.models]
    except FileNotFoundError as exc:
        print(f"error: report: {exc}", file=sys.stderr)
        return 2
    blocks = build_blocks(notebook, sections, DIAGNOSTICS)
    md, page = REPORTS / "report.md", REPORTS / "report.html"
    text = render.to_markdown(blocks, REPORTS)
    outputs.write_text(md, text)
    outputs.write_text(page, render.to_html(text, "LeNet-5 and AlexNet report", REPORTS))
    cost_page = costs_page.write()  # not a DVC output: timings differ on every run

    store.use_store(params.mlflow.experiment)
    with store.failures_named(store.tracking_uri(), "logging the report"), mlflow.start_run(run_name="report"):
        mlflow.set_tags({**runs.run_tags(), "kind": "report"})
        for name, made in zip(params.models, sections, strict=True):
            trained = registry.training_run_of(params.mlflow.experiment, made["model_sha256"])
            if trained:
                mlflow.set_tag(f"run_id.{name}", trained.info.run_id)
                log_to_training_run(trained.info.run_id, name, md)
        mlflow.log_artifact(str(md), artifact_path="report")
        mlflow.log_artifact(str(page), artifact_path="report")
        mlflow.log_artifact(str(cost_page), artifact_path="report")
        mlflow.log_artifacts(str(FIGURES), artifact_path="report/figures")
        mlflow.log_artifacts(str(SECTIONS), artifact_path="report/sections")
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
