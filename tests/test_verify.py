"""python -m classic_cnns.verify: a rerun against the committed results, output by output."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from classic_cnns import verify
from tests.projects import ROOT, run


def lock(outs: dict[str, str]) -> str:
    stages = {"train@m": {"cmd": "x", "outs": [{"path": p, "hash": "md5", "md5": h} for p, h in outs.items()]}}
    return yaml.safe_dump({"schema": "2.0", "stages": stages})


def write(root, files: dict[str, bytes]):
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def keras_file(folder, scale: float = 1.0) -> bytes:
    import keras

    from classic_cnns.outputs import save_keras_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2, name="d")], name="m")
    model.set_weights([w * scale for w in model.get_weights()])
    path = folder / f"model-{scale}.keras"
    save_keras_model(model, path)
    return path.read_bytes()


def committed_project(root, files: dict[str, bytes], model: bytes) -> None:
    """A git repo whose dvc.lock names three git-tracked reports and a model folder kept in DVC's
    cache (as `dvc commit` lays it out: the folder's manifest and each file, by md5)."""
    write(root, {**files, "models/m/model.keras": model})
    cache = root / ".dvc/cache/files/md5"
    digest = hashlib.md5(model).hexdigest()
    manifest = json.dumps([{"md5": digest, "relpath": "model.keras"}], sort_keys=True).encode()
    folder = verify.folder_md5({"model.keras": model})
    assert folder == hashlib.md5(manifest).hexdigest() + ".dir"
    write(cache, {f"{digest[:2]}/{digest[2:]}": model, f"{folder[:2]}/{folder[2:]}": manifest})
    (root / ".gitignore").write_text("/models/\n/.dvc/cache/\n")
    hashes = {p: hashlib.md5(b).hexdigest() for p, b in files.items()}
    (root / "dvc.lock").write_text(lock({**hashes, "models/m": folder}))
    variants = {"m": {"base": "m"}, "m-x": {"base": "m", "a": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump({"ablations": {"variants": variants}}))
    for seed, acc in ((1, 0.78), (2, 0.80), (3, 0.82)):  # stdev 0.02
        write(root, {f"ablations/results/m-seed{seed}.json": json.dumps({"test_accuracy": acc}).encode()})
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], root)


FILES = {
    "reports/m/metrics.json": json.dumps({"test_accuracy": 0.80, "test_loss": 0.6}).encode(),
    "reports/m/history.csv": b"epoch,loss\n1,0.5\n",
    "reports/m/training.json": b'{"best_epoch": 1}\n',
}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A committed project: FILES in git, a model in the DVC cache, seed results of the grid."""
    root = tmp_path / "repo"
    root.mkdir()
    committed_project(root, FILES, keras_file(tmp_path))
    monkeypatch.chdir(root)
    return root


def verdicts(root) -> dict[str, tuple[str, str]]:
    return {path: (verdict, detail) for _, path, verdict, detail in verify.verify(root=root)}


def test_an_unchanged_rerun_is_identical_and_a_7th_digit_is_rounding(root, tmp_path):
    assert {v for v, _ in verdicts(root).values()} == {verify.IDENTICAL}
    # rounding: the 7th digit of a loss, of an accuracy, of every weight
    write(
        root,
        {
            "reports/m/history.csv": b"epoch,loss\n1,0.50000012\n",
            "reports/m/metrics.json": json.dumps({"test_accuracy": 0.8000001, "test_loss": 0.6}).encode(),
            "models/m/model.keras": keras_file(tmp_path, 1 + 3e-7),
        },
    )
    seen = verdicts(root)
    assert seen["reports/m/history.csv"][0] == seen["reports/m/metrics.json"][0] == verify.ROUNDING
    assert seen["models/m"][0] == verify.ROUNDING  # from the DVC cache, weight by weight
    assert seen["models/m"][1].startswith("model.keras: weights up to 3.")
    assert verify.main([]) == 0


def test_a_4th_digit_weights_1_percent_off_and_a_stray_file_are_different(root, tmp_path):
    """A real change: a loss in the 4th digit, weights 1% off, a corrupted model folder."""
    write(
        root, {"reports/m/history.csv": b"epoch,loss\n1,0.4999\n", "models/m/model.keras": keras_file(tmp_path, 1.01)}
    )
    seen = verdicts(root)
    assert seen["reports/m/history.csv"][0] == seen["models/m"][0] == verify.DIFFERENT
    (root / "models/m/stray.txt").write_text("x")
    assert verdicts(root)["models/m"] == (verify.DIFFERENT, "files ['stray.txt'] only on one side")
    assert verify.main([]) == 1


def test_metrics_beyond_rounding_are_within_the_seed_spread_or_different(root):
    write(root, {"reports/m/metrics.json": json.dumps({"test_accuracy": 0.83, "test_loss": 0.6}).encode()})
    assert verdicts(root)["reports/m/metrics.json"] == (
        verify.WITHIN,
        "test_accuracy 0.8 -> 0.83 (+3.00 points; seed spread 2.00)",
    )
    write(root, {"reports/m/metrics.json": json.dumps({"test_accuracy": 0.70, "test_loss": 0.6}).encode()})
    assert verdicts(root)["reports/m/metrics.json"][0] == verify.DIFFERENT


def test_each_moved_metric_is_named_and_judged_by_its_own_spread(root):
    """A 1% change of test_loss or F1 with test accuracy unchanged is not "within the seed spread: test
    accuracy 0.8 -> 0.8": the number that moved is named, and judged by its own spread or called different."""
    for seed, loss in ((1, 0.58), (2, 0.60), (3, 0.62)):  # test_loss spread 0.02
        write(
            root,
            {f"ablations/results/m-seed{seed}.json": json.dumps({"test_accuracy": 0.8, "test_loss": loss}).encode()},
        )
    write(root, {"reports/m/metrics.json": json.dumps({"test_accuracy": 0.80, "test_loss": 0.606}).encode()})
    assert verdicts(root)["reports/m/metrics.json"] == (
        verify.WITHIN,
        "test_loss 0.6 -> 0.606 (+0.006; seed spread 0.02)",
    )
    write(root, {"reports/m/metrics.json": json.dumps({"test_accuracy": 0.80, "test_loss": 0.7}).encode()})
    assert verdicts(root)["reports/m/metrics.json"] == (
        verify.DIFFERENT,
        "test_loss 0.6 -> 0.7 (+0.1; seed spread 0.02)",
    )
    write(
        root,
        {
            "reports/m/metrics.json": json.dumps(
                {"test_accuracy": 0.8, "test_loss": 0.6, "test_macro_f1": 0.79}
            ).encode()
        },
    )
    verdict, detail = verdicts(root)["reports/m/metrics.json"]
    assert verdict == verify.DIFFERENT and detail == "test_macro_f1 None -> 0.79"


def test_a_report_committed_without_rerunning_its_stage_is_different(root):
    """Not what dvc.lock records: never "identical"."""
    write(root, {"reports/m/training.json": b'{"best_epoch": 2}\n'})
    run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "by hand", "reports/m/training.json"],
        root,
    )
    assert verdicts(root)["reports/m/training.json"] == (
        verify.DIFFERENT,
        "the committed copy is not what dvc.lock records (changed without rerunning its stage)",
    )


def test_without_the_cache_not_pulled_and_deleted_outputs_are_named(root, tmp_path):
    """Without the DVC cache a changed model cannot be compared; an output never pulled is not
    here; a report committed to git and deleted is missing."""
    write(root, {"models/m/model.keras": keras_file(tmp_path, 1.01)})
    subprocess.run(["rm", "-r", str(root / ".dvc/cache")], check=True)
    assert verdicts(root)["models/m"][0] == verify.UNKNOWN
    subprocess.run(["rm", "-r", str(root / "models")], check=True)
    write(root, FILES)
    assert verdicts(root)["models/m"] == (
        verify.NOT_HERE,
        "kept by DVC only: no DVC remote is configured; dvc repro -s train@m remakes it",
    )
    (root / ".dvc/config").write_text("[core]\n    remote = team\n['remote \"team\"']\n    url = s3://b/p\n")
    assert verdicts(root)["models/m"][1] == "kept by DVC only: dvc pull; dvc repro -s train@m remakes it"
    assert verify.main([]) == 0
    (root / "reports/m/training.json").unlink()
    assert verdicts(root)["reports/m/training.json"][0] == verify.MISSING

    cli = subprocess.run(
        [sys.executable, "-m", "classic_cnns.verify"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert cli.returncode == 1 and "reports/m/training.json  missing here  [train@m]" in cli.stdout
    assert f"within a relative {verify.RTOL:g}" in cli.stdout


def test_close_is_relative():
    assert verify.relative(1e-9, 1.00005e-9) < verify.RTOL < verify.relative(1e-9, 1.001e-9)
    assert verify.json_deviation({"a": [1, 2.0, "x"]}, {"a": [1, 2.2, "x"]}) == pytest.approx(0.2 / 2.2)
    assert verify.json_deviation({"a": [1, 2.0, "x"]}, {"a": [1, 2.0, "y"]}) is None
    assert verify.csv_deviation(b"a,b\nx,1e-3\n", b"a,b\nx,0.0010001\n") == pytest.approx(1e-4 / 1.0001)
    assert verify.csv_deviation(b"a\n1\n", b"a\n1\n2\n") is None


def test_a_moved_metric_without_a_seed_spread_is_different():
    verdict, detail = verify.compare_metrics(
        {"test_accuracy": 0.9923, "test_macro_f1": 0.9920}, {"test_accuracy": 0.9923, "test_macro_f1": 0.9821}, {}
    )
    assert verdict == verify.DIFFERENT
    assert detail == "test_macro_f1 0.992 -> 0.9821 (-0.0099; no seed spread recorded for it)"
