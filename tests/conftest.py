"""Shared fixtures: tiny datasets in the official formats, served over loopback http, and a
throw-away copy of the project to run the real stages and `dvc` in."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.projects import (
    ROOT,
    Ran,
    built_once,
    copy_project,
    make_template,
    repro,
    set_grid,
    tiny_env,
    use_env,
)
from tests.servers import free_port, serve_folder
from tests.tiny_data import write_cifar, write_mnist, write_spec

# The `mlflow server`s the tests start (as team/server.sh's) run no job runner: its worker processes
# (MLflow's GenAI jobs, unused here) cost about 4 s of CPU each, 200 s of the suite's 1,500.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


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


@contextlib.contextmanager
def running_team_server(s3_server: str, **settings: str):
    """team/server.sh start (PostgreSQL and `mlflow server` on 127.0.0.1, artifacts in the S3 server's
    bucket) with `settings` added to its environment; yields (tracking URI, that environment)."""
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        if os.environ.get("CI"):
            raise AssertionError("PostgreSQL is missing: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, as .ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="team-"))
    folder.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    port = free_port()
    env = {
        **os.environ,
        "TEAM_DIR": str(folder),
        "TEAM_DB_PASSWORD": "team-db-secret",
        "TEAM_DB_PORT": str(free_port()),
        "MLFLOW_PORT": str(port),
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **settings,
    }
    try:
        started = subprocess.run([TEAM_SCRIPT, "start"], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{port}", env
    finally:
        subprocess.run([TEAM_SCRIPT, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


TEAM_SCRIPT = str(ROOT / "team/server.sh")


@pytest.fixture
def team_server(s3_server):
    """The team's tracking server as team/server.sh starts it; yields the tracking URI."""
    with running_team_server(s3_server) as (uri, _):
        yield uri


@pytest.fixture
def signed_in_team_server(s3_server):
    """The team's server with sign-in (as beyond 127.0.0.1); yields (URI, the script's environment)."""
    with running_team_server(s3_server, TEAM_AUTH="1", TEAM_ADMIN_PASSWORD="admin-secret-1") as started:
        yield started


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


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory):
    """Tiny MNIST and CIFAR-10 in their official formats, plus a spec-override file pinning the
    fixtures' checksums (the test-only stand-in for the real pinned ones)."""
    folder = tmp_path_factory.mktemp("mirror")
    sums = {"mnist": write_mnist(folder / "mnist"), "cifar10": write_cifar(folder / "cifar10")}
    return folder, sums


@pytest.fixture(autouse=True)
def no_mlflow_store_from_an_earlier_test(monkeypatch):
    """mlflow.set_tracking_uri and mlflow.set_experiment (a stage's use_store, called in-process) export
    MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID and keep both active: a later test in this process, or
    a project it builds with `dvc repro`, would log to that earlier test's store."""
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(name, "")  # restored (to unset, or the runner's own value) after the test
        monkeypatch.delenv(name)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)


class WarmServers:
    """Warm-start servers (classic_cnns/warm.py), one per Keras backend, started when first asked for;
    CLASSIC_CNNS_WARM lists them. Each logs beside its socket (`<backend>.log`)."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="warm-"))  # a short path: a socket's is at most 107 bytes
        self.default = os.environ.get("KERAS_BACKEND", "tensorflow")
        self.processes: dict[str, subprocess.Popen] = {}
        self.sockets: dict[str, Path] = {}

    def start(self, backend: str) -> Path:
        if backend not in self.sockets:
            sock = self.folder / f"{backend}.sock"
            env = os.environ if backend == self.default else {**os.environ, "KERAS_BACKEND": backend}
            with open(sock.with_suffix(".log"), "w") as log:
                server = subprocess.Popen(
                    [sys.executable, "-m", "classic_cnns.warm", str(sock)], cwd=ROOT, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            self.processes[backend] = server
            deadline = time.monotonic() + 180
            while not sock.exists() and server.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert sock.exists(), sock.with_suffix(".log").read_text()
            self.sockets[backend] = sock
        return self.sockets[backend]

    def listed(self) -> str:
        return os.pathsep.join(map(str, self.sockets.values()))

    def stop(self) -> None:
        for server in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, 9)
            server.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def warm_stages(tmp_path_factory):
    """Every `python -m stages.<name>` of this test process's session, from a test or from `dvc`,
    starts warm: forked by a server (one per xdist worker) that loaded the frameworks once
    (classic_cnns/warm.py; tests/test_warm.py shows it runs a stage as a cold start would). A stage
    with another load-time environment (KERAS_BACKEND, XLA_FLAGS, ...) starts cold; the `warm_jax`
    fixture adds a JAX server; a test whose point is the cold start removes the variable
    (monkeypatch.delenv(warm.SOCKET_ENV))."""
    from classic_cnns import warm

    # JAX's compiled programs, shared by the session's JAX stages (the same as compiling them again)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.getbasetemp().parent / "jax-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    servers = WarmServers()
    servers.start(servers.default)
    os.environ[warm.SOCKET_ENV] = servers.listed()
    yield servers
    del os.environ[warm.SOCKET_ENV]
    servers.stop()


@pytest.fixture
def warm_jax(warm_stages, monkeypatch):
    """A JAX server beside the default one, for a test that runs many JAX stages: each has ~8 s of
    imports to save, more than the server's start costs once."""
    from classic_cnns import warm

    if warm_stages.default != "jax" and importlib.util.find_spec("jax"):
        warm_stages.start("jax")
        monkeypatch.setenv(warm.SOCKET_ENV, warm_stages.listed())
    return warm_stages


@pytest.fixture(scope="session")
def project_env(tmp_path_factory, fixture_data, warm_stages) -> dict[str, str]:
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


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """A git-initialised copy of the project with tiny params: 1 epoch per model, float32."""
    with built_once(tmp_path_factory, "template") as (folder, built):
        root = folder / "project"
        if not built:
            make_template(root)
    return root


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


@pytest.fixture(scope="session")
def grid_template(tmp_path_factory, prepared_template, project_env) -> Ran:
    """The tiny project after `dvc repro ablations/dvc.yaml` of the tiny claims grid (tests/projects.py
    TINY_GRID; once a session): work on a copy (grid_copy)."""
    with built_once(tmp_path_factory, "grid") as (folder, built):
        if not built:
            source = copy_project(prepared_template.root, folder / "source")
            set_grid(source)
            repro(folder, source, ["ablations/dvc.yaml"], tiny_env(project_env))
            shutil.rmtree(source)
    return Ran(folder)


@pytest.fixture
def grid_copy(tmp_path, grid_template, project_env, monkeypatch) -> Path:
    """A copy of the tiny project after its claims grid ran serially (its MLflow store included)."""
    use_env(monkeypatch, project_env)
    return copy_project(grid_template.root, tmp_path / "project")


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


PROJECT_FIXTURES = {
    "project",
    "prepared_project",
    "pipeline",
    "pipeline_copy",
    "grid_template",
    "grid_copy",
    "team_server",
    "signed_in_team_server",
    "s3_server",
}


LONGEST_FIRST = (
    "test_the_pipeline_on_jax_against_the_team_server",
    "test_two_dask_workers_run_the_tiny_grid_as_a_serial_run_does_with_one_killed_mid_cell",
    "test_sigterm_at_20_moments_of_train_is_never_lost",
    "test_two_devices_and_two_processes_train_as_one_device",
    "test_a_tiny_grid_runs_end_to_end",
    "test_a_server_back_with_a_new_database_is_named_so_and_a_rerun_logs_a_new_run",
    "test_queued_experiments_run_at_once_against_the_team_server",
)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker more than the CPUs, as the suite's tests also wait (on servers, `dvc`, the
    stages they start): on 2 cores 3 workers kept both busy (idle 1%) and took 10% less time than 2."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items):
    """Tests that run the stages or `dvc` on a test project are `slow`: `pytest -m "not slow"` is the
    edit-test loop (README). The others go first, so that a plain mistake fails in the first minute;
    then the longest, so that the xdist workers finish together. `--dist worksteal` (pyproject.toml)
    splits this list among the workers in order, and a worker that runs out takes the last tests
    queued on another. Against xdist's default, `load`, on 2 cores: 629-634 s with load and 508 s with
    worksteal in one checkout, but 607-698 s with worksteal in clean clones (docs/measurements.md):
    no gain shown beyond the runs' spread."""
    for item in items:
        if PROJECT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: (item.get_closest_marker("slow") is not None, rank.get(item.name, len(rank))))
