import subprocess
import sys

import pytest

from tests.projects import ROOT


def bench(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow  # trains both models for the table
def test_bench_prints_the_speed_table_on_tiny_sizes():
    out = bench("bench.speed", "--models", "lenet5", "--images", "256")
    assert "matmul peak measured here" in out
    for column in ("images/s", "epoch s", "GFLOP/s", "of peak", "vs plain"):
        assert column in out
    lines = [line for line in out.splitlines() if line.strip().startswith("lenet5")]
    assert len(lines) == 3 and "1.00x" in lines[0]  # plain fit, then the recipe in each precision
    assert "pipeline recipe, bfloat16" in lines[1] and "bfloat16" in lines[1].split("bfloat16", 1)[1]
    assert "pipeline recipe, float32" in lines[2]


@pytest.mark.slow  # trains, in each precision asked for
def test_bench_speed_times_only_the_precisions_asked_for():
    """--precisions float32: what runs where bfloat16 cannot (e.g. oneDNN held to AVX2)."""
    out = bench("bench.speed", "--models", "lenet5", "--images", "256", "--precisions", "float32")
    assert "bfloat16" not in out
    lines = [line for line in out.splitlines() if line.strip().startswith("lenet5")]
    assert len(lines) == 2 and "plain fit" in lines[0] and "pipeline recipe, float32" in lines[1]


@pytest.mark.slow  # times training steps
def test_breakdown_times_every_weighted_layer_the_optimizer_and_the_step():
    out = bench("bench.breakdown", "--model", "lenet5", "--batch", "16")
    assert "lenet5: batch 16, float32; matmul peak measured here" in out
    for part in (
        "C1 (Conv2D)",
        "C3 (Conv2D)",
        "C5 (Dense)",
        "F6 (Dense)",
        "output (Dense)",
        "other layers",
        "optimizer update",
        "whole train step",
    ):
        assert part in out
    step = next(line for line in out.splitlines() if line.strip().startswith("whole train step"))
    assert float(step.split()[3]) > 0 and step.split()[4] == "100%"


def test_the_device_check_trains_evaluates_and_checks_determinism(prepared_project, tmp_path):
    """bench/device.py (what bench/device.sh runs on a GPU machine), on CPU and tiny data."""
    import json

    from tests.projects import run

    project = prepared_project
    out = tmp_path / "device.json"
    result = run(
        [
            sys.executable,
            "-m",
            "bench.device",
            "--models",
            "lenet5",
            "--epochs",
            "2",
            "--no-diagnose",
            "--peak-size",
            "64",
            "--out",
            str(out),
        ],
        project,
    )
    record = json.loads(out.read_text())
    (lenet,) = record["models"]
    assert lenet["epochs"] == 2 and lenet["train_images"] == 200 and 0 <= lenet["test_accuracy"] <= 1
    assert lenet["images_per_second"] > 0 and 0 < lenet["peak_fraction"]
    assert record["deterministic"] is True  # two seeded trainings, bit-identical weights
    assert record["device"].startswith("CPU") and record["environment"]["keras_backend"] == "tensorflow"
    assert "| lenet5 | 2 |" in result.stdout and "two seeded trainings bit-identical: True" in result.stdout


def test_the_timeline_gives_each_stage_its_wall_time(tmp_path, monkeypatch, capsys):
    import io
    import json

    from bench import timeline

    lines = "x\nRunning stage 'train@lenet5':\nepoch 1\nRunning stage 'report':\ndone\n"
    clock = iter([0.0, 2.0, 12.5, 15.0])  # start, train@lenet5, report, end
    monkeypatch.setattr(timeline.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(timeline.sys, "stdin", io.StringIO(lines))
    assert timeline.main([str(tmp_path / "t.json")]) == 0
    assert capsys.readouterr().out == lines  # every line passed on
    assert json.loads((tmp_path / "t.json").read_text()) == {"train@lenet5": 10.5, "report": 2.5, "total": 15.0}
    clock = iter([0.0, 2.0, 12.5, 15.0])
    monkeypatch.setattr(timeline.sys, "stdin", io.StringIO(lines))
    timeline.main([str(tmp_path / "g.json"), "--total-only"])
    assert json.loads((tmp_path / "g.json").read_text()) == {"stages": 2, "total": 15.0}
