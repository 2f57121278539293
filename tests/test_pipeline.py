"""End to end: the real `dvc repro` on tiny official-format data served over loopback http,
with a real MLflow SQLite store, in a throw-away git repo."""

import json
import re
import shutil
import subprocess
import sys
import time

import boto3
import yaml

from classic_cnns import verify
from classic_cnns.framework_logs import ABSL_LINE
from tests.projects import ROOT, assert_stages_declare_what_they_read, run, runs_by_name
from tests.report_tables import assert_costs_match, assert_side_by_side_matches
from tests.servers import holding_proxy

# The README's `dvc exp show` line: test accuracy against learning rate per model, in 200 columns.
EXP_SHOW = [
    "dvc",
    "exp",
    "show",
    "--no-pager",
    "--drop",
    ".*",
    "--keep",
    r"Experiment|Created|.*test_accuracy$|models\..*\.learning_rate$",
]

STAGE_OUTPUTS = [
    "data/raw/mnist/provenance.json",
    "data/raw/cifar10/cifar-10-python.tar.gz",
    "data/prepared/mnist.npz",
    "data/prepared/cifar10.json",
    "models/lenet5/model.keras",
    "reports/costs/train-alexnet.json",
    "reports/costs/evaluate-lenet5.json",
    "reports/lenet5/history.csv",
    "reports/alexnet/training.json",
    "reports/lenet5/metrics.json",
    "reports/alexnet/predictions.csv",
    "reports/report.md",
    "reports/report.html",
    "reports/sections/lenet5/lenet5-learning-curves.png",
    "reports/sections/alexnet/alexnet-confusion.png",
    "reports/sections/alexnet/summary.json",
]


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


EVERYTHING = {
    "download@mnist",
    "download@cifar10",
    "prepare@mnist",
    "prepare@cifar10",
    "train@lenet5",
    "train@alexnet",
    "evaluate@lenet5",
    "evaluate@alexnet",
    "diagnose",
    "section@lenet5",
    "section@alexnet",
    "report",
}
DATA = {"download@mnist", "download@cifar10", "prepare@mnist", "prepare@cifar10"}


def test_dvc_repro_runs_every_stage_once_and_prints_only_their_lines(pipeline, prepared_template, pipeline_copy):
    # the session's fixtures ran `dvc repro prepare@mnist prepare@cifar10`, then the plain `dvc repro`
    assert ran(prepared_template.stdout) == DATA
    assert ran(pipeline.stdout) == EVERYTHING - DATA
    # each stage declares exactly the params it reads, so a knob makes stale exactly its readers
    assert assert_stages_declare_what_they_read(pipeline.root / "dvc.lock", pipeline.trace) == EVERYTHING
    for result in (prepared_template, pipeline):
        leaked = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if ABSL_LINE.match(line)
            or "absl::InitializeLog" in line
            or line.startswith("E0000")
            or "WARNING mlflow" in line
        ]
        assert not leaked, leaked  # no framework noise: the stages' own lines (test_framework_logs forces it)
    assert "lenet5 epoch 1/1: accuracy" in pipeline.stdout
    for rel in STAGE_OUTPUTS:
        assert (pipeline.root / rel).exists(), rel
    assert ran(run(["dvc", "repro"], pipeline_copy).stdout) == set()  # nothing changed: nothing reruns


def test_dvcs_views_fit_a_terminal_and_plots_render_offline(pipeline_copy):
    # scalar metrics only; the README's exp show line in 200 columns
    shown = run(["dvc", "metrics", "show"], pipeline_copy).stdout
    assert "test_accuracy" in shown and "epoch_seconds" not in shown
    assert max(map(len, shown.splitlines())) <= 120, shown
    table = run(EXP_SHOW, pipeline_copy, env={"COLUMNS": "200"}).stdout
    assert "reports/alexnet/metrics.json:test_accuracy" in table and "models.lenet5.learning_rate" in table
    assert "models.alexnet.learning_rate" in table and "diagnose" not in table and "…" not in table, table
    assert max(map(len, table.splitlines())) <= 200, table
    assert_plots_render_offline(pipeline_copy)


def test_the_metrics_files_and_the_report(pipeline):
    root = pipeline.root
    metrics = {m: json.loads((root / f"reports/{m}/metrics.json").read_text()) for m in ("lenet5", "alexnet")}
    details = {m: json.loads((root / f"reports/{m}/evaluation.json").read_text()) for m in ("lenet5", "alexnet")}
    for m, d in zip(metrics.values(), details.values(), strict=False):
        assert 0.0 <= m["test_accuracy"] <= 1.0
        assert d["test_images"] == 80
    assert details["lenet5"]["test_views"] == 1 and details["alexnet"]["test_views"] == 10
    assert metrics["lenet5"]["test_accuracy_single_view"] == metrics["lenet5"]["test_accuracy"]

    report = (root / "reports/report.md").read_text()
    assert "61,706" in report
    assert f"{100 * metrics['lenet5']['test_accuracy']:.2f}%" in report
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (root / "reports" / image).exists(), image
    assert "data:image/png;base64," in (root / "reports/report.html").read_text()
    assert_side_by_side_matches(root, ["lenet5", "alexnet"], ["mnist", "cifar10"])
    assert_costs_match(root, ["lenet5", "alexnet"])
    # verify hashes each output itself, folders included, as DVC does
    for path, (_, digest) in verify.output_hashes((root / "dvc.lock").read_text()).items():
        assert verify.dvc_hash(verify.current_files(root / path), digest.endswith(".dir")) == digest, path


def test_a_push_cut_off_is_finished_by_a_rerun_and_a_fresh_clone_pulls_the_results(pipeline_copy, tmp_path, s3_server):
    """The team's remote (README, "Sharing results"): push to an S3-compatible server; a fresh
    clone pulls the results instead of computing them: nothing to rerun, the report regenerates the same."""
    project = pipeline_copy
    run(["dvc", "remote", "add", "-d", "team", "s3://classic-cnns/dvc"], project)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3_server], project)
    # a push cut off part way (here: killed while the store hangs on its 4th upload) ...
    with holding_proxy(s3_server, allow=3) as proxy:
        run(["dvc", "remote", "add", "--local", "flaky", "s3://classic-cnns/dvc"], project)
        run(["dvc", "remote", "modify", "--local", "flaky", "endpointurl", proxy.url], project)
        push = subprocess.Popen(
            ["dvc", "push", "-r", "flaky"], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert proxy.held.wait(300), "the push never reached a 4th upload"
        push.kill()
        push.wait()
    bucket = boto3.client("s3", endpoint_url=s3_server)

    def stored():
        return len(bucket.list_objects_v2(Bucket="classic-cnns", Prefix="dvc/").get("Contents", []))

    deadline = time.monotonic() + 60  # the 3 uploads let through may still be on their way to the store
    while stored() < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored() == 3
    # ... rerun, completes: it uploads the rest, and the remote then holds everything
    pushed = run(["dvc", "push"], project).stdout
    assert re.search(r"(\d+) files? pushed", pushed), pushed
    assert "in sync" in run(["dvc", "status", "--cloud"], project).stdout
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "results"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models/lenet5/model.keras").exists()
    run(["dvc", "pull"], clone)
    assert (clone / "models/lenet5/model.keras").read_bytes() == (project / "models/lenet5/model.keras").read_bytes()
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], clone).stdout
    assert ran(run(["dvc", "repro"], clone).stdout) == set()
    own_store = {"MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}"}
    assert ran(run(["dvc", "repro", "-f", "-s", "report"], clone, env=own_store).stdout) == {"report"}
    assert (clone / "reports/report.md").read_bytes() == (project / "reports/report.md").read_bytes()


def test_a_rerun_rewrites_the_costs_and_leaves_dvc_lock_identical(pipeline_copy):
    """Timings live in reports/costs/ and costs.md, outside DVC's hashes: a forced rerun of a training
    and the report records new costs, and dvc.lock stays byte for byte what it was."""
    project = pipeline_copy
    lock, record = (project / "dvc.lock").read_bytes(), (project / "reports/costs/train-lenet5.json").read_text()
    stamp = "CPU: stamped by the test"
    (project / "reports/costs.md").write_text(stamp)
    assert ran(run(["dvc", "repro", "-f", "-s", "train@lenet5"], project).stdout) == {"train@lenet5"}
    assert (project / "reports/costs/train-lenet5.json").read_text() != record  # new wall times
    assert stamp not in (project / "reports/costs.md").read_text()
    assert_costs_match(project, ["lenet5", "alexnet"])
    assert ran(run(["dvc", "repro", "-f", "-s", "report"], project).stdout) == {"report"}
    assert (project / "dvc.lock").read_bytes() == lock
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], project).stdout


def test_a_failed_stage_leaves_no_outputs_and_dvc_checkout_restores_them(pipeline_copy):
    """DVC deletes a stage's outputs before running it, so a failed run leaves none; `dvc checkout`
    restores the cached ones (README, Reliability). A dead tracking server fails in seconds."""
    project = pipeline_copy
    failed = run(
        ["dvc", "repro", "-f", "-s", "train@lenet5"],
        project,
        check=False,
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert failed.returncode != 0 and "http://127.0.0.1:9 (MLFLOW_TRACKING_URI) does not answer" in failed.stderr
    assert not (project / "models/lenet5").exists()
    run(["dvc", "checkout", "train@lenet5"], project)
    assert (project / "models/lenet5/model.keras").exists()


def test_a_knob_reruns_exactly_its_readers_and_mlflow_keeps_every_run(pipeline_copy):
    project = pipeline_copy
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["lenet5"]["epochs"] = 2  # read by LeNet-5's training, so everything after it
    params["evaluate"]["test_time_augmentation"]["alexnet"] = False  # read by AlexNet's evaluation only
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run(["dvc", "repro"], project)
    assert ran(third.stdout) == {
        "train@lenet5",
        "evaluate@lenet5",
        "evaluate@alexnet",
        "section@lenet5",
        "section@alexnet",
        "report",
    }
    client, runs = runs_by_name(project)
    assert len(runs["lenet5-mnist"]) == 2 and len(runs["alexnet-cifar10"]) == 1 and len(runs["report"]) == 2
    assert len(client.search_model_versions("name='lenet5-mnist'")) == 2
    newest = runs["lenet5-mnist"][-1]
    assert len(client.get_metric_history(newest.info.run_id, "val_accuracy")) == 2
    assert (
        newest.data.metrics["test_accuracy"]
        == json.loads((project / "reports/lenet5/metrics.json").read_text())["test_accuracy"]
    )
    assert str(client.get_model_version_by_alias("lenet5-mnist", "champion").version) == "2"

    assert json.loads((project / "reports/alexnet/evaluation.json").read_text())["test_views"] == 1

    # evaluating the same model again finds its version (one per run and accuracy)
    run([sys.executable, "-m", "stages.evaluate", "lenet5"], project)
    assert len(client.search_model_versions("name='lenet5-mnist'")) == 2
    # an experiment's model gets a version of its own, but the champion stays the workspace's model
    params["models"]["lenet5"]["epochs"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("train", "evaluate"):
        run([sys.executable, "-m", f"stages.{stage}", "lenet5"], project, env={"DVC_EXP_NAME": "quick"})
    versions = client.search_model_versions("name='lenet5-mnist'")
    assert len(versions) == 3 and str(client.get_model_version_by_alias("lenet5-mnist", "champion").version) == "2"
    assert {str(v.version): v.tags.get("dvc_exp_name") for v in versions}["3"] == "quick"


def assert_plots_render_offline(root):
    """`dvc plots show -o <any folder>` writes a page with Vega inlined: no script to fetch, no path to
    resolve (.dvc/plots/inline.js builds the template from the pinned node_modules)."""
    out = root.parent / "elsewhere" / "plots"
    out.parent.mkdir()
    run(["dvc", "plots", "show", "-o", str(out)], root)
    page = (out / "index.html").read_text()
    assert "<script src=" not in page and "vegaEmbed('#" in page
    for inlined in ("node_modules/vega/build/vega.min.js", "node_modules/vega-lite/build/vega-lite.min.js",
                    "node_modules/vega-embed/build/vega-embed.min.js"):  # fmt: skip
        assert f"<script>/* {inlined} */" in page
    assert '<meta charset="utf-8">' in page  # legends such as val_accuracy… read as written
    titles = re.findall(r'"title": \{"text": "([^"]+)"', page)
    assert sorted(titles) == sorted(
        f"{m} {what}"
        for m in ("LeNet-5", "AlexNet")
        for what in ("loss per epoch", "accuracy per epoch", "confusion matrix (test)")
    )  # one chart per model and measure
    assert '"title": "cross-entropy loss"' in page and '"title": "accuracy"' in page  # axes titled, not "y"
    assert '"field": "actual"' in page and '"title": "predicted"' in page


def test_the_committed_plots_page_is_what_its_source_and_the_pinned_vega_make(tmp_path):
    assert (ROOT / "node_modules").is_dir(), "run `npm ci` first: the plots page is built from node_modules/"
    (tmp_path / ".dvc/plots").mkdir(parents=True)
    for name in ("inline.js", "offline.src.html"):
        shutil.copy(ROOT / ".dvc/plots" / name, tmp_path / ".dvc/plots" / name)
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    subprocess.run(["node", str(tmp_path / ".dvc/plots/inline.js")], check=True)
    assert (tmp_path / ".dvc/plots/offline.html").read_bytes() == (ROOT / ".dvc/plots/offline.html").read_bytes()
