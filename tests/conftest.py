"""Shared fixtures: tiny datasets in the official formats, served over loopback http, and a
throw-away copy of the project to run the real stages and `dvc` in."""

from __future__ import annotations

import contextlib
import functools
import glob
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = [
    "stages",
    "classic_cnns",
    "bench",
    "dvc.yaml",
    "ablations/dvc.yaml",
    "ablations/parallel.sh",
    "params.yaml",
    ".dvc/config",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
]


def _images(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Noisy images whose brightness pattern depends on the label, so a network can learn them."""
    x = rng.integers(0, 60, size=(len(labels), *shape)).astype(np.int64)
    rows = shape[0]
    for i, label in enumerate(labels):
        band = slice(int(label) * rows // 10, (int(label) + 1) * rows // 10)
        x[i, band] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_mnist(folder: Path, n_train: int = 240, n_test: int = 80, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(n_train) % 10, np.arange(n_test) % 10
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(_images(rng, y_train, (28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(y_train.astype(np.uint8)),
        "t10k-images-idx3-ubyte.gz": idx_bytes(_images(rng, y_test, (28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(y_test.astype(np.uint8)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def cifar_archive(per_batch: int = 40, n_test: int = 80, seed: int = 1) -> bytes:
    """cifar-10-python.tar.gz in the official layout: pickled dicts, rows of 3072 bytes (CHW)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        batches = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
        for name, n in batches:
            labels = rng.permutation(np.arange(n) % 10)
            images = _images(rng, labels, (32, 32, 3)).transpose(0, 3, 1, 2).reshape(n, -1)
            payload = pickle.dumps(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels.tolist(),
                    b"data": images,
                    b"filenames": [b"x.png"] * n,
                }
            )
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def write_cifar(folder: Path, **kwargs) -> dict[str, str]:
    data = cifar_archive(**kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cifar-10-python.tar.gz").write_bytes(data)
    return {"cifar-10-python.tar.gz": hashlib.sha256(data).hexdigest()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """An S3-compatible object store (moto's server) on 127.0.0.1 with a bucket `classic-cnns`;
    its credentials in the environment, as a team's would be. Yields the endpoint URL."""
    import boto3

    port = free_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "team",
        "AWS_SECRET_ACCESS_KEY": "team-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=url).create_bucket(Bucket="classic-cnns")
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise AssertionError(f"the S3 server on {url} did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


class _HoldingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards HTTP requests to `server.target`; lets `server.allow` requests that complete an
    object through (a PUT of a whole object, or the POST that completes a multipart upload; the
    parts of a multipart upload always pass), and holds every later one unanswered (sets
    `server.held`) until `server.release` is set, then drops the connection."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def completes_an_object(self) -> bool:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        return (self.command == "PUT" and "partNumber" not in query) or (self.command == "POST" and "uploadId" in query)

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.completes_an_object():
            with self.server.lock:
                hold = self.server.puts >= self.server.allow
                if not hold:
                    self.server.puts += 1
            if hold:
                self.server.held.set()
                self.server.release.wait(600)
                self.close_connection = True
                return
        upstream = http.client.HTTPConnection(*self.server.target, timeout=60)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", answer.getheader("Content-Length") or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward


@contextlib.contextmanager
def holding_proxy(target_url: str, allow: int):
    """A proxy on 127.0.0.1 in front of `target_url` that lets `allow` objects be stored and hangs
    on every later one: an upload cut off part way, deterministically. Yields the server (`.url`,
    `.held`: an Event set when it first holds one)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HoldingProxy)
    server.daemon_threads = False  # server_close() then waits for uploads still being forwarded
    parsed = urllib.parse.urlsplit(target_url)
    server.target = (parsed.hostname, parsed.port)
    server.allow, server.puts, server.lock = allow, 0, threading.Lock()
    server.held, server.release = threading.Event(), threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def team_server(s3_server, monkeypatch):
    """The team's tracking server as team/server.sh starts it: PostgreSQL and `mlflow server` on
    127.0.0.1, artifacts in the S3 server's bucket. Yields the tracking URI."""
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        if os.environ.get("CI"):
            raise AssertionError("PostgreSQL is missing: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, as .ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="team-"))
    folder.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    port = free_port()
    env = {
        "TEAM_DIR": str(folder),
        "TEAM_DB_PASSWORD": "team-db-secret",
        "TEAM_DB_PORT": str(free_port()),
        "MLFLOW_PORT": str(port),
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    script = str(ROOT / "team/server.sh")
    try:
        started = subprocess.run(
            [script, "start"], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([script, "stop"], env={**os.environ, **env}, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an http server on 127.0.0.1 for that folder."""
    servers = []

    def start(folder: Path) -> str:
        servers.append(serve_folder(folder))
        return f"http://127.0.0.1:{servers[-1].server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def serve_folder(folder: Path) -> http.server.ThreadingHTTPServer:
    """A running http server on 127.0.0.1 for `folder` (shut it down when done)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory):
    """Tiny MNIST and CIFAR-10 in their official formats, plus a spec-override file pinning the
    fixtures' checksums (the test-only stand-in for the real pinned ones)."""
    folder = tmp_path_factory.mktemp("mirror")
    sums = {"mnist": write_mnist(folder / "mnist"), "cifar10": write_cifar(folder / "cifar10")}
    return folder, sums


def write_spec(path: Path, sums: dict, urls: list[str] | None = None) -> Path:
    """A CLASSIC_CNN_DATASET_SPEC file: the fixtures' checksums and (by default) no official URLs,
    so a test never reaches beyond 127.0.0.1."""
    path.write_text(json.dumps({name: {"files": files, "urls": urls or []} for name, files in sums.items()}))
    return path


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


@pytest.fixture(scope="session")
def project_env(tmp_path_factory, fixture_data) -> dict[str, str]:
    """What a test project's stages and `dvc` run with: the fixtures served over http on 127.0.0.1
    as the data mirror, their checksums, this Python's scripts first on PATH."""
    mirror, sums = fixture_data
    server = serve_folder(mirror)
    yield {
        "DATA_MIRROR": f"http://127.0.0.1:{server.server_address[1]}/",
        "CLASSIC_CNN_DATASET_SPEC": str(write_spec(tmp_path_factory.mktemp("spec") / "spec.json", sums)),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "true",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    server.shutdown()
    server.server_close()


def tiny_env(project_env: dict) -> dict[str, str]:
    """project_env for a subprocess, with the project's own MLflow store (no MLFLOW_TRACKING_URI)."""
    env = {**os.environ, **project_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


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


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """A git-initialised copy of the project with tiny params: 1 epoch per model, float32."""
    with built_once(tmp_path_factory, "template") as (folder, built):
        root = folder / "project"
        if not built:
            make_template(root)
    return root


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
    (root / "ablations/results-full").mkdir()  # the full-size grid's results: none yet
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


@pytest.fixture(scope="session")
def prepared_template(tmp_path_factory, template, project_env) -> Ran:
    """The tiny project with both datasets downloaded and prepared by `dvc repro` (once a session)."""
    with built_once(tmp_path_factory, "prepared") as (folder, built):
        if not built:
            repro(folder, template, ["prepare@mnist", "prepare@cifar10"], tiny_env(project_env))
    return Ran(folder)


@pytest.fixture(scope="session")
def pipeline_template(tmp_path_factory, prepared_template, project_env) -> Ran:
    """The tiny project after the whole default `dvc repro` on TensorFlow (once a session; its data
    from prepared_template): read it, or work on a copy (pipeline_copy)."""
    with built_once(tmp_path_factory, "pipeline") as (folder, built):
        if not built:
            shutil.copytree(prepared_template.trace, folder / "trace")  # the data stages' reads too
            repro(folder, prepared_template.root, [], tiny_env(project_env))
    return Ran(folder)


def use_env(monkeypatch, project_env: dict) -> None:
    for key, value in project_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's default store


@pytest.fixture
def project(tmp_path, template, project_env, monkeypatch) -> Path:
    """A fresh copy of the tiny project (no data yet), its data served over http."""
    use_env(monkeypatch, project_env)
    return copy_project(template, tmp_path / "project")


@pytest.fixture
def prepared_project(tmp_path, prepared_template, project_env, monkeypatch) -> Path:
    """A copy of the tiny project with both datasets prepared (DVC sees them up to date)."""
    use_env(monkeypatch, project_env)
    return copy_project(prepared_template.root, tmp_path / "project")


@pytest.fixture
def pipeline(pipeline_template, project_env, monkeypatch) -> Ran:
    """The session's finished tiny pipeline, to read only (change things in pipeline_copy)."""
    use_env(monkeypatch, project_env)
    return pipeline_template


@pytest.fixture
def pipeline_copy(tmp_path, pipeline_template, project_env, monkeypatch) -> Path:
    """A copy of the finished tiny pipeline (its MLflow store included) to change things in."""
    use_env(monkeypatch, project_env)
    return copy_project(pipeline_template.root, tmp_path / "project")


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, **env} if env else None
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


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


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB file system (tmpfs) at tmp_path/small: a real full disk. Mounting needs root, which
    CI and the project's containers have."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


PROJECT_FIXTURES = {"project", "prepared_project", "pipeline", "pipeline_copy", "team_server", "s3_server"}


LONGEST_FIRST = (
    "test_the_pipeline_on_jax_against_the_team_server",
    "test_a_tiny_grid_runs_end_to_end",
    "test_queued_experiments_run_at_once_against_the_team_server",
)


def pytest_collection_modifyitems(items):
    """Tests that run the stages or `dvc` on a test project are `slow`: `pytest -m "not slow"` is the
    edit-test loop (README). The longest tests go first, so that the xdist workers finish together."""
    for item in items:
        if PROJECT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.name not in LONGEST_FIRST)
