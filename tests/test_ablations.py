"""Issue 5: the claims grid expands as params.yaml says, the claims table gives the right verdicts
and intervals on synthetic results, and a tiny grid runs end to end through `dvc repro`."""

import json
import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats

from classic_cnns.analysis.claims import CLAIMS, claims_table, contrast_interval, verdict
from classic_cnns.model.networks import build
from classic_cnns.params import ParamsError, load_params
from tests.projects import ROOT, assert_stages_declare_what_they_read, run


def test_the_grid_expands_to_a_cell_per_variant_and_seed_and_stays_out_of_the_default_repro(project):
    params = load_params(ROOT / "params.yaml")
    listed = run(["dvc", "stage", "list", "ablations/dvc.yaml", "--name-only"], project).stdout.split()
    expected = {f"ablations/dvc.yaml:cell@{v}-{s}" for v in params.ablations.variants for s in params.ablations.seeds}
    assert set(listed) == expected | {"ablations/dvc.yaml:claims"}
    assert len(expected) == len(params.ablations.variants) * len(params.ablations.seeds) == 33
    # a plain `dvc repro` reproduces ./dvc.yaml, whose stages are these (test_pipeline runs it)
    default = run(["dvc", "stage", "list", "--name-only"], project).stdout.split()
    assert default and not [s for s in default if "cell@" in s or "claims" in s]
    # the same cells at full size are a pipeline of their own, which no other `dvc repro` runs
    full = run(["dvc", "stage", "list", "ablations/full-size/dvc.yaml", "--name-only"], project).stdout.split()
    assert set(full) == {s.replace("ablations/dvc.yaml", "ablations/full-size/dvc.yaml") for s in expected}
    assert "full-size" not in run(["dvc", "dag", "ablations/dvc.yaml:claims"], project).stdout
    # every variant a claim compares is in the grid, so every claim gets a verdict
    assert {v for c in CLAIMS for v in c.contrast} <= set(params.ablations.variants)


def test_variants_change_only_what_they_say():
    params = load_params(ROOT / "params.yaml")
    base, tanh = params.model("alexnet"), params.ablations.model(params, "alexnet-tanh")
    assert tanh.activation == "tanh" and tanh.epochs == params.ablations.epochs
    assert {k for k in type(base).model_fields if getattr(base, k) != getattr(tanh, k)} <= {"activation", "epochs"}


@pytest.mark.parametrize(
    "variant, key, words",
    [
        ({"base": "vgg"}, "ablations.variants.bad.base", "must name an entry of 'models'"),
        ({"base": "lenet5", "activaton": "relu"}, "ablations.variants.bad.activaton", "not a known key"),
        ({"base": "lenet5", "pooling": "min"}, "ablations.variants.bad.pooling", "one of"),
        ({"base": "lenet5", "epochs": 30}, "ablations.variants.bad.epochs", "budget"),
        (
            {"base": "alexnet", "test_time_augmentation": True},
            "ablations.variants.bad.test_time_augmentation",
            "not a known key",
        ),
    ],
)
def test_a_bad_variant_is_named_before_any_work(tmp_path, variant, key, words):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ablations"]["variants"]["bad"] = variant
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml")
    assert f"'{key}'" in str(err.value) and words in str(err.value)


def test_model_options_change_the_built_layers():
    relu_max = build("lenet5", (32, 32, 1), [0.0], [1.0], activation="relu", pooling="max", first_kernel=3)
    assert type(relu_max.get_layer("S2")).__name__ == "MaxPooling2D"
    assert relu_max.get_layer("C1").activation.__name__ == "relu"
    assert relu_max.get_layer("C1").output.shape[1:] == (30, 30, 6)
    plain = build("alexnet", (32, 32, 3), [0.0] * 3, [1.0] * 3)
    no_dropout = build("alexnet", (32, 32, 3), [0.0] * 3, [1.0] * 3, dropout=0.0)
    assert [layer.name for layer in plain.layers if "Dropout" in type(layer).__name__] == ["drop6", "drop7"]
    assert not [layer for layer in no_dropout.layers if "Dropout" in type(layer).__name__]
    assert plain.count_params() == no_dropout.count_params()


def synthetic(values: dict[str, list[float]], measure: str = "test_accuracy") -> pd.DataFrame:
    rows = []
    for variant, xs in values.items():
        for seed, x in enumerate(xs, 1):
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "outcome": "learned",
                    "test_accuracy": x,
                    "learning_speed": x,
                    "generalisation_gap": x,
                }
            )
    return pd.DataFrame(rows)


def test_the_interval_is_welchs():
    a, b = [0.60, 0.62, 0.61], [0.50, 0.505, 0.53]
    got = contrast_interval({"a": a, "b": b}, {"a": 1, "b": -1})
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got["estimate"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (got["low"], got["high"]) == pytest.approx((expected.low, expected.high))


def test_claims_table_gives_the_known_verdicts():
    cells = synthetic(
        {
            # 11x11 clearly better than 5x5; clearly worse than 3x3; ReLU = tanh within noise
            "alexnet": [0.60, 0.61, 0.62],
            "alexnet-kernel5": [0.50, 0.51, 0.52],
            "alexnet-kernel3": [0.70, 0.71, 0.72],
            "alexnet-tanh": [0.55, 0.65, 0.60],
        }
    )
    table = claims_table(cells).set_index("claim")
    k5 = table.loc[[c for c in table.index if "11x11 vs 5x5" in c][0]]
    assert k5.verdict == "supported"
    # equal variances 1e-4, n = 3: se = sqrt(2e-4 / 3), df = 4
    half = stats.t.ppf(0.975, 4) * math.sqrt(2e-4 / 3)
    assert (k5.difference, k5.ci_low, k5.ci_high) == pytest.approx((0.10, 0.10 - half, 0.10 + half))
    assert k5.variants["alexnet"]["mean"] == pytest.approx(0.61)
    assert k5.variants["alexnet"]["std"] == pytest.approx(0.01)
    k3 = table.loc[[c for c in table.index if "11x11 vs 3x3" in c][0]]
    assert k3.verdict == "contradicted" and k3.ci_high < 0
    relu = table.loc[[c for c in table.index if "AlexNet" in c and "ReLU" in c][0]]
    assert relu.verdict == "inconclusive" and relu.ci_low < 0 < relu.ci_high
    # claims whose variants did not run are left out, not given a verdict
    assert len(table) == 3


def test_an_inconclusive_verdict_says_what_would_decide_it():
    word, decide = verdict({"estimate": 0.02, "low": -0.01, "high": 0.05}, seeds=3)
    assert word == "inconclusive" and "about 8 seeds" in decide  # 3 * (0.03 / 0.02)^2 = 6.75 -> 7, + 1 for t
    assert verdict({"estimate": 0.02, "low": math.nan, "high": math.nan}, seeds=1)[0] == "inconclusive"
    assert "no difference" in verdict({"estimate": 0.0, "low": -0.01, "high": 0.01}, seeds=3)[1]


def test_the_interaction_claim_weighs_four_variants():
    cells = synthetic(
        {
            "alexnet": [0.6, 0.61],
            "lenet5-cifar10": [0.4, 0.41],
            "alexnet-mnist": [0.98, 0.99],
            "lenet5-tanh-avg": [0.97, 0.98],
        }
    )
    table = claims_table(cells)
    row = table[table["claim"].str.contains("complexity")].iloc[0]
    assert row.difference == pytest.approx((0.605 - 0.405) - (0.985 - 0.975))
    assert row.verdict == "supported"


COSTS = ("train_seconds", "device", "mlflow_run_id", "concurrent_cells")  # reports/costs/cell-*.json


def test_a_tiny_grid_runs_end_to_end(grid_template, grid_copy):
    project = grid_copy
    claims = assert_the_grid_runs_its_cells_and_claims(project, grid_template)
    parent = assert_mlflow_holds_the_grid(project, claims)
    assert "Running stage" not in run(["dvc", "repro", "ablations/dvc.yaml"], project).stdout
    assert_the_full_size_pipeline_replaces_the_records(project, claims, parent)


def result(project, variant: str, seed: int, folder: str = "results") -> dict:
    return json.loads((project / f"ablations/{folder}/{variant}-seed{seed}.json").read_text())


def assert_the_grid_runs_its_cells_and_claims(project, ran) -> list[dict]:
    ran_stages = set(re.findall(r"Running stage '([^']+)'", ran.stdout))
    assert {s for s in ran_stages if "ablations" in s} == {
        "ablations/dvc.yaml:cell@lenet5-tanh-avg-1",
        "ablations/dvc.yaml:cell@lenet5-tanh-avg-2",
        "ablations/dvc.yaml:cell@lenet5-tanh-max-1",
        "ablations/dvc.yaml:cell@lenet5-tanh-max-2",
        "ablations/dvc.yaml:claims",
    }
    assert not any(s.startswith(("train@", "evaluate@", "report")) for s in ran_stages)
    # each stage declares exactly the params it reads
    assert assert_stages_declare_what_they_read(project / "ablations/dvc.lock", ran.trace) == {
        s.split(":")[1] for s in ran_stages if "ablations" in s
    }

    cell = result(project, "lenet5-tanh-max", 2)
    assert not set(COSTS) & set(cell)  # a DVC output: what code, params and data decide, no timings or ids
    assert set(COSTS) <= set(json.loads((project / "reports/costs/cell-lenet5-tanh-max-seed2.json").read_text()))
    assert cell["train_images"] == 120 and cell["test_images"] == 80 and cell["epochs_run"] == 2
    assert len(cell["history"]["val_accuracy"]) == 2
    assert cell["learning_speed"] == pytest.approx(np.mean(cell["history"]["val_accuracy"]))
    assert cell["generalisation_gap"] == pytest.approx(cell["train_accuracy"] - cell["test_accuracy"])

    claims = json.loads((project / "ablations/claims.json").read_text())
    (pooling,) = [c for c in claims if "tanh LeNet-5" in c["claim"]]
    assert pooling["verdict"] in ("supported", "contradicted", "inconclusive") and pooling["seeds"] == 2
    maxed = [result(project, "lenet5-tanh-max", seed) for seed in (1, 2)]
    assert pooling["variants"]["lenet5-tanh-max"]["mean"] == pytest.approx(np.mean([c["test_accuracy"] for c in maxed]))
    md = (project / "reports/claims.md").read_text()
    assert "Max pooling works better than average pooling -- tanh LeNet-5" in md
    assert f"{100 * pooling['difference']:+.1f}" in md
    max_rows = [line for line in md.splitlines() if line.startswith("| lenet5-tanh-max |")]
    train = np.mean([c["train_accuracy"] for c in maxed])
    assert "Training accuracy (%)" in md and f"| {100 * train:.1f} |" in max_rows[0]
    assert "Seconds per run" not in md and "minutes in all" not in md  # timings: in costs.md
    assert "4 cells" in (project / "reports/costs.md").read_text().split("## The claims grid")[1]
    return claims


def assert_mlflow_holds_the_grid(project, claims: list[dict]):
    """A parent run for the grid, a child per cell, the claims as the parent's files and tags."""
    (pooling,) = [c for c in claims if "tanh LeNet-5" in c["claim"]]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classic-cnns")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "ablation_grid" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [
        "lenet5-tanh-avg-seed1",
        "lenet5-tanh-avg-seed2",
        "lenet5-tanh-max-seed1",
        "lenet5-tanh-max-seed2",
    ]
    assert {r.data.tags["ablation_variant"] for r in children} == {"lenet5-tanh-avg", "lenet5-tanh-max"}
    assert all(r.data.tags["process.pid"].isdigit() and r.info.status == "FINISHED" for r in children)  # orphan rule
    assert all(
        r.data.tags["ablation_groups"] == "capacity,pooling,relu-vs-tanh"
        for r in children
        if r.data.tags["ablation_variant"] == "lenet5-tanh-avg"
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["claim.1.pooling"].startswith(pooling["verdict"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "claims")} == {
        "claims/claims.json",
        "claims/claims.md",
        "claims/claims.html",
    }
    return parent


def assert_the_full_size_pipeline_replaces_the_records(project, claims: list[dict], parent) -> None:
    """Records of full-size cells trained outside DVC lead the claims until the full-size pipeline
    (ablations/full-size/dvc.yaml) runs a cell, whose result then replaces its record; claims.md says
    which made each cell, and `dvc status` which cells the pipeline has not run."""
    records = project / "ablations/records-full"
    for variant in ("lenet5-tanh-avg", "lenet5-tanh-max"):  # stand-ins: the quick cells, relabelled
        for seed in (1, 2):
            cell = result(project, variant, seed)
            cell.update(budget="full", budget_epochs=1, test_accuracy=0.5 + seed / 100)
            cell.update(device="GPU: test", train_seconds=1.0, concurrent_cells=1)  # a record holds its costs
            cell["provenance"] = {"made_by": "a test, outside DVC", "code": "HEAD", "device": "GPU: test"}
            (records / f"{variant}-seed{seed}.json").write_text(json.dumps(cell))
    first = run(["dvc", "repro", "ablations/dvc.yaml"], project)
    assert set(re.findall(r"Running stage '([^']+)'", first.stdout)) == {"ablations/dvc.yaml:claims"}
    md = (project / "reports/claims.md").read_text()
    assert md.index("## At full size") < md.index("## Quick check (small budget, CPU)")
    assert "4 of 4 cells: 0 made by the full-size pipeline" in md and "4 from records" in md
    assert "| imported record: seeds 1, 2 |" in md

    status = run(["dvc", "status", "ablations/full-size/dvc.yaml"], project).stdout
    assert status.count("ablations/full-size/dvc.yaml:cell@") == 4  # none run yet
    cells = [f"ablations/full-size/dvc.yaml:cell@lenet5-tanh-max-{seed}" for seed in (1, 2)]
    full = run(["dvc", "repro", *cells], project)
    assert set(re.findall(r"Running stage '([^']+)'", full.stdout)) == set(cells)
    made = result(project, "lenet5-tanh-max", 2, "results-full")
    assert made["budget"] == "full" and made["epochs_run"] == 1 and made["train_images"] == 120
    assert not set(COSTS) & set(made)
    cost = json.loads((project / "reports/costs/full-cell-lenet5-tanh-max-seed2.json").read_text())
    assert set(COSTS) <= set(cost)
    status = run(["dvc", "status", "ablations/full-size/dvc.yaml"], project).stdout
    assert "cell@lenet5-tanh-avg-1" in status and "cell@lenet5-tanh-max" not in status

    second = run(["dvc", "repro", "ablations/dvc.yaml"], project)  # the lock changed: claims again
    assert set(re.findall(r"Running stage '([^']+)'", second.stdout)) == {"ablations/dvc.yaml:claims"}
    md = (project / "reports/claims.md").read_text()
    assert "4 of 4 cells: 2 made by the full-size pipeline" in md and "2 from records" in md
    table = md.split("## Every variant at full size")[1].split("## Every variant at the small budget")[0]
    rows = {line.split(" |")[0][2:]: line for line in table.splitlines()}
    assert rows["lenet5-tanh-max"].endswith("| pipeline stage: seeds 1, 2 |")
    assert rows["lenet5-tanh-avg"].endswith("| imported record: seeds 1, 2 |")
    verdicts = json.loads((project / "ablations/claims.json").read_text())
    (pooling,) = [c for c in verdicts if "tanh LeNet-5" in c["claim"] and c["budget"] == "full"]
    made_mean = np.mean([result(project, "lenet5-tanh-max", s, "results-full")["test_accuracy"] for s in (1, 2)])
    assert pooling["variants"]["lenet5-tanh-max"]["mean"] == pytest.approx(made_mean)
    assert pooling["variants"]["lenet5-tanh-avg"]["mean"] == pytest.approx(0.515)  # the records'

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("classic-cnns").experiment_id])
    (full_parent,) = [
        r for r in runs if r.data.tags.get("ablation_budget") == "full" and "ablation_grid" in r.data.tags
    ]
    assert full_parent.info.run_id != parent.info.run_id and "full size" in full_parent.info.run_name
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == full_parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["lenet5-tanh-max-seed1", "lenet5-tanh-max-seed2"]
    assert all(r.info.status == "FINISHED" and r.data.params["ablations.full_size.epochs"] == "1" for r in children)

    # a result file the lock does not vouch for (made by hand, or changed) is named, with the fix
    (project / "ablations/results-full/lenet5-tanh-avg-seed1.json").write_text(json.dumps(made))
    failed = run([sys.executable, "-m", "stages.claims"], project, check=False)
    (line,) = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and "cell@lenet5-tanh-avg-1" in line and "dvc repro" in line


def test_the_intro_counts_the_cells_under_each_dataset_title():
    """Cells that name the same data differently (results kept from before a title changed) are
    counted per title, not listed as if they were separate datasets."""
    from classic_cnns.reporting.claims_doc import intro_blocks

    def cells(title, official, n):
        return pd.DataFrame({"dataset_title": [title] * n, "dataset_official": [official] * n})

    full = pd.concat([cells("CIFAR-10 (non-official local copy)", False, 2), cells("Stand-in", False, 1)])
    text = intro_blocks({"quick": (None, cells("MNIST (official files)", True, 3), None), "full": (None, full, None)})
    intro = text[1][1]
    assert "CIFAR-10 (non-official local copy) (2 cells), MNIST (official files) (3 cells), Stand-in (1 cell)" in intro
    assert "**Not official data**: CIFAR-10 (non-official local copy), Stand-in" in intro
    one = intro_blocks({"quick": (None, cells("MNIST (official files)", True, 3), None)})[1][1]
    assert "name it: MNIST (official files)." in one and "Not official" not in one


def test_the_grid_costs_are_given_per_device_never_summed_across_devices():
    """costs.md's grid line: a GPU cell's minutes and a CPU cell's are not one total."""
    from classic_cnns.reporting.costs_page import grid_cost

    gpu = {"device": "GPU: NVIDIA H200", "train_seconds": 90, "concurrent_cells": 6}
    cpu = {"device": "CPU: AMD EPYC (2 cores)", "train_seconds": 3000, "concurrent_cells": 1}
    line = grid_cost("At full size", [gpu, gpu, cpu])
    assert line == (
        "At full size, 3 cells: 1 on CPU: AMD EPYC (2 cores), 50 min of training, one at a time; "
        "2 on GPU: NVIDIA H200, 3 min of training, up to 6 at a time."
    )
    assert grid_cost("The quick check", [cpu]) == (
        "The quick check, 1 cell on CPU: AMD EPYC (2 cores), 50 min of training, one at a time."
    )
