import subprocess
import sys

from tests.conftest import ROOT


def test_bench_prints_the_speed_table_on_tiny_sizes():
    result = subprocess.run([sys.executable, "-m", "bench.speed", "--models", "lenet5", "--images", "256"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "matmul peak measured here" in out
    for column in ("images/s", "epoch s", "GFLOP/s", "of peak", "vs plain"):
        assert column in out
    lines = [line for line in out.splitlines() if line.strip().startswith("lenet5")]
    assert len(lines) == 2 and "1.00x" in lines[0]
