"""The stages print no framework log lines, whatever the CPU (classic_cnns/framework_logs.py)."""

import os
import subprocess
import sys

import pytest

from classic_cnns.framework_logs import ABSL_LINE, ABSL_UNINITIALISED, filtered_stderr, keep
from tests.projects import ROOT

ONEDNN = (
    "I0000 00:00:1796235135.259950    2177 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors.\n"
)
CPU_GUARD = (
    "I0000 00:00:1796235260.592727    3471 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
    "to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow.\n"
)
WARNING = "W1202 18:09:54.123456    2177 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
ERROR = "E0000 00:00:1796235135.259950    2177 op_level_cost_estimator.cc:42] Some op failed.\n"
PY_WARNING = "/x/keras/src/trainers/epoch_iterator.py:74: UserWarning: `shuffle=True` was passed\n  code line\n"


def test_abseils_lines_below_the_level_are_dropped_and_everything_else_kept():
    ours = "a line of our own\n"
    text = ours + ABSL_UNINITIALISED + "\n" + ONEDNN + CPU_GUARD + PY_WARNING + WARNING + ERROR
    assert keep(text, 3) == ours + PY_WARNING  # a message's continuation lines go with it
    assert keep(text, 2) == ours + PY_WARNING + ERROR
    assert keep(text, 1) == ours + PY_WARNING + WARNING + ERROR
    assert keep(text, 0) == text
    assert all(ABSL_LINE.match(line) for line in (ONEDNN, CPU_GUARD, WARNING, ERROR))


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", **env},
    )


@pytest.mark.slow  # a process that loads TensorFlow per CPU kind
def test_tensorflows_start_up_lines_are_filtered_on_any_cpu():
    """TensorFlow logs oneDNN's start-up line on CPUs where oneDNN is on by default (AVX-512
    VNNI/BF16, AMX); TF_ENABLE_ONEDNN_OPTS=1 turns oneDNN on, and so that code path, on any x86 CPU."""
    code = "import classic_cnns, keras, sys; print('our line', file=sys.stderr)"
    shown = python(code, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="0")
    assert "oneDNN custom operations are on" in shown.stderr  # the path that prints did run
    quiet = python(code, TF_ENABLE_ONEDNN_OPTS="1")
    assert quiet.returncode == 0 and quiet.stderr == "our line\n", quiet.stderr


def test_what_a_failing_import_printed_is_all_shown(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered_stderr():
        os.write(2, ("kept\n" + ONEDNN).encode())
    assert capfd.readouterr().err == "kept\n"
    with pytest.raises(RuntimeError), filtered_stderr():
        os.write(2, ONEDNN.encode())
        raise RuntimeError("the import failed")
    assert capfd.readouterr().err == ONEDNN


def test_an_unknown_or_missing_keras_backend_is_one_line_and_exit_2(tmp_path):
    """Before `import keras`, whose failure is a 40-line traceback and exit 1."""
    import subprocess
    import sys

    from tests.projects import ROOT

    for backend, says in (
        (
            "tensorflw",
            "KERAS_BACKEND=tensorflw is not a backend this project runs on: use one of tensorflow, jax, torch",
        ),
        ("nosuch", "KERAS_BACKEND=nosuch is not a backend"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "stages.train", "lenet5"], cwd=ROOT, capture_output=True, text=True,
            env={**__import__("os").environ, "KERAS_BACKEND": backend}, timeout=60,
        )  # fmt: skip
        (line,) = result.stderr.strip().splitlines()
        assert result.returncode == 2 and line.startswith(f"error: {says}"), result.stderr


def test_a_backend_whose_package_is_missing_names_the_install(monkeypatch):
    import importlib.util

    from classic_cnns import backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert backend.requested_problem() == (
        "KERAS_BACKEND=torch needs the torch package, not installed here: pip install torch "
        "(or use tensorflow, jax, torch)"
    )
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.requested_problem() is None
