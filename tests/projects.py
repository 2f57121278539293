"""Throw-away copies of the project to run the real stages and `dvc` in, and how the tests run them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


PROJECT_FILES = [
    "stages",
    "classic_cnns",
    "bench",
    "dvc.yaml",
    "ablations/dvc.yaml",
    "ablations/full-size/dvc.yaml",
    "ablations/records-full/README.md",
    "params.yaml",
    ".dvc/config",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
]


TINY_PARAMS = {
    "prepare": {"val_size": 40, "train_limit": 0, "test_limit": 0},
    "evaluate": {"batch_size": 64, "test_time_augmentation": {"lenet5": False, "alexnet": True}},
    "diagnose": {
        "model": "alexnet",
        "steps": 4,
        "every": 2,
        "probe_images": 16,
        "notebook": {"optimizer": "adam", "learning_rate": 0.001, "batch_size": 64, "input_scaling": "unit"},
    },
}


# The claims grid, tiny: two LeNet-5 variants, two seeds, 2 epochs on 120 images (grid_template);
# its full size: 1 epoch on the same 120 images
TINY_GRID = {
    "seeds": [1, 2],
    "epochs": 2,
    "train_limit": 120,
    "val_limit": 20,
    "test_limit": 0,
    "variants": {"lenet5-tanh-avg": {"base": "lenet5"}, "lenet5-tanh-max": {"base": "lenet5", "pooling": "max"}},
    "full_size": {"epochs": 1, "train_limit": 120, "val_limit": 20, "test_limit": 0},
}


def set_grid(root: Path, **changes) -> None:
    """params.yaml `ablations`: the tiny grid, with `changes`."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ablations"].update({**TINY_GRID, **changes})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(src: Path, dst: Path) -> Path:
    """A copy of a test project. DVC's cache, data/ and models/ are hard-linked (the stages and DVC
    replace those files, never write into them); everything else, mlflow.db and the .gitignore files
    DVC appends to included, is copied."""

    def link_or_copy(a, b):
        rel = Path(a).relative_to(src).parts
        if (rel[0] in ("data", "models") or rel[:2] == (".dvc", "cache")) and rel[-1] != ".gitignore":
            os.link(a, b)
        else:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)
    return dst


def make_template(root: Path) -> None:
    root.mkdir(parents=True)
    for rel in PROJECT_FILES:
        src = ROOT / rel
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.update(TINY_PARAMS)
    for model in params["models"].values():
        # float32: bfloat16 is emulated, ~20x slower, on CPUs without it (test_recipe_knobs_train covers it)
        model.update(epochs=1, batch_size=32, mixed_precision=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "fixture"], root, env=env)


class Ran:
    """A test project after a real `dvc repro`: its root, what DVC printed (stdout, stderr), and the
    folder of the params each stage read (CLASSIC_CNNS_PARAMS_TRACE)."""

    def __init__(self, folder: Path):
        self.root, self.trace = folder / "project", folder / "trace"
        self.stdout, self.stderr = ((folder / name).read_text() for name in ("stdout", "stderr"))


def repro(folder: Path, source: Path, args: list[str], env: dict) -> Ran:
    """Copy `source` to folder/project, run `dvc repro *args` there with a params trace; keep its output."""
    from classic_cnns.params import TRACE_ENV

    copy_project(source, folder / "project")
    result = run(["dvc", "repro", *args], folder / "project", env={**env, TRACE_ENV: str(folder / "trace")})
    (folder / "stdout").write_text(result.stdout)
    (folder / "stderr").write_text(result.stderr)
    return Ran(folder)


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, **env} if env else None
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_queue(project: Path, *start_args: str, timeout_s: float = 900) -> str:
    """`dvc queue start` the project's queued experiments and wait for all to end; `dvc queue status`."""
    run(["dvc", "queue", "start", *start_args], project)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def stage(name: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", f"stages.{name}", *args], cwd, check)


def assert_stages_declare_what_they_read(lock: Path, trace: Path) -> set[str]:
    """Each stage that ran (and wrote a trace of the params it read, CLASSIC_CNNS_PARAMS_TRACE) reads
    only params under the keys its dvc.yaml entry declares (dvc.lock lists them; a declared section
    also covers knobs left at their defaults), and reads something under every key it declares.
    Returns the stages checked."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    checked = set()
    for name, entry in stages.items():
        traced = trace / f"{name}.json"
        if not traced.exists():
            continue
        read = set(json.loads(traced.read_text()))
        declared = {key for values in (entry.get("params") or {}).values() for key in values}
        under = {key: {r for r in read if r == key or r.startswith(key + ".")} for key in declared}
        undeclared = read - set().union(*under.values())
        assert not undeclared, f"{name} reads params its dvc.yaml entry does not declare: {sorted(undeclared)}"
        unread = [key for key, found in under.items() if not found]
        assert not unread, f"{name} declares params it never reads: {unread}"
        checked.add(name)
    return checked


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str):
    """A folder that one process of the test session builds and every xdist worker shares: yields
    (folder, built) under a file lock; the caller builds when `built` is False."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each worker's own
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        yield folder, done.exists()
        done.touch()


def tiny_env(project_env: dict) -> dict[str, str]:
    """project_env for a subprocess, with the project's own MLflow store (no MLFLOW_TRACKING_URI)."""
    env = {**os.environ, **project_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def use_env(monkeypatch, project_env: dict) -> None:
    for key, value in project_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's default store


def runs_by_name(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classic-cnns")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    grouped = {}
    for r in runs:
        grouped.setdefault(r.info.run_name, []).append(r)
    return client, grouped
