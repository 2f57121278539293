"""python -m classic_cnns.verify: a rerun against the committed results, output by output."""
import hashlib
import os
import json
import subprocess
import sys

import yaml

from tests.conftest import ROOT, run


def lock(files: dict[str, bytes]) -> str:
    outs = {"train@m": {"cmd": "x", "outs": [{"path": p, "hash": "md5", "md5": hashlib.md5(b).hexdigest()}
                                            for p, b in files.items()]}}
    return yaml.safe_dump({"schema": "2.0", "stages": outs})


def test_verify_says_identical_within_the_seed_spread_or_different(tmp_path):
    root = tmp_path
    metrics = json.dumps({"test_accuracy": 0.80, "test_loss": 0.6}).encode()
    files = {"reports/m/metrics.json": metrics, "reports/m/history.csv": b"epoch,loss\n1,0.5\n",
             "reports/m/training.json": b"{}\n"}
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / "dvc.lock").write_text(lock(files))
    (root / "params.yaml").write_text(yaml.safe_dump({"ablations": {"variants": {"m": {"base": "m"}, "m-x": {"base": "m", "a": 1}}}}))
    (root / "ablations/results").mkdir(parents=True)
    for seed, acc in ((1, 0.78), (2, 0.80), (3, 0.82)):  # stdev 0.02
        (root / f"ablations/results/m-seed{seed}.json").write_text(json.dumps({"test_accuracy": acc}))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], root)

    verify = lambda: subprocess.run([sys.executable, "-m", "classic_cnns.verify"], cwd=root, capture_output=True,  # noqa: E731
                                    text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    same = verify()
    assert same.returncode == 0 and same.stdout.count("identical") == 3, same.stdout + same.stderr

    (root / "reports/m/metrics.json").write_text(json.dumps({"test_accuracy": 0.83, "test_loss": 0.6}))
    (root / "reports/m/history.csv").write_text("epoch,loss\n1,0.49\n")
    near = verify()
    lines = {line.split()[0]: line for line in near.stdout.splitlines()}
    assert "within the seed spread" in lines["reports/m/metrics.json"] and "+3.00 points" in lines["reports/m/metrics.json"]
    assert "different" in lines["reports/m/history.csv"] and "identical" in lines["reports/m/training.json"]
    assert near.returncode == 1

    (root / "reports/m/metrics.json").write_text(json.dumps({"test_accuracy": 0.70, "test_loss": 0.6}))
    far = verify()
    assert "different: test accuracy 0.8 -> 0.7 (-10.00 points; seed spread 2.00)" in far.stdout
