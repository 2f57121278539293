"""Warm starts for the stages: a server that has loaded the frameworks once (TensorFlow or JAX, Keras,
MLflow, DVC, pandas, matplotlib: the 4-8 s each `python -m stages.<name>` spends importing) and forks
a process per stage. That process imports this project's code from the stage's own folder and runs
as `python -m stages.<name>` would: its folder, environment, arguments, standard streams, signals and
exit status are those of the command that asked (`python -m bench.<name>` asks too). The test suite
runs every stage this way (tests/conftest.py); so can anyone who runs many short stages:

    python -m classic_cnns.warm .dvc/tmp/warm.sock &
    export CLASSIC_CNNS_WARM=$PWD/.dvc/tmp/warm.sock   # each `python -m stages.<name>` now starts warm

CLASSIC_CNNS_WARM may list several servers (separated by ':'), say one per Keras backend: a stage runs
on the first whose Python and load-time environment (what the frameworks read as they load:
KERAS_BACKEND, TF_*, XLA_*, JAX_*, CUDA_*, PYTHON*, ...) are its own, and starts cold, as without a
server, when none is. A killed command (even kill -9) takes its stage with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import pkgutil
import select
import signal
import socket
import sys
import traceback

SOCKET_ENV = "CLASSIC_CNNS_WARM"
# what the frameworks read as they load: a stage whose values differ cannot use the loaded ones
LOAD_TIME_PREFIXES = ("KERAS_", "TF_", "XLA_", "JAX_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "LD_", "PYTHON")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
OWN = ("classic_cnns", "stages", "bench")  # imported afresh by each stage, from its own folder
# what the stages import only as they open the MLflow store (its SQL stores and their migrations) or
# ask DVC: a second or so of each stage's imports (python -X importtime), loaded once here
LOADED_LATER = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "alembic.command",
    "alembic.autogenerate",
    "dvc.repo",
)


PER_STAGE = ("PYTHONUNBUFFERED",)  # each forked stage sets its streams by it
NOT_READ = ("PYTHON",)  # a script's name for its interpreter (bench/gpu_repro.sh's), which Python never reads


# read by JAX (jaxlib's xla_client, from os.environ) only as it makes its backend, which each stage does
# itself while the server has not: a stage may set them (Dask workers sharing a GPU: each one's memory share)
READ_AS_JAX_STARTS = ("XLA_PYTHON_CLIENT_", "XLA_CLIENT_MEM_FRACTION")
# XLA parses XLA_FLAGS as JAX makes its backend too (not as it loads: a server with JAX loaded and no
# backend made serves a stage that asks for N host devices); TensorFlow's servers still count them
READ_AS_JAX_BACKEND_STARTS = ("XLA_FLAGS",)
# read only when the stage calls keras.distribution.initialize() (classic_cnns/training/distribute.py)
READ_WHEN_CALLED = ("KERAS_DISTRIBUTION_",)


def jax_backend_made() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(bridge and bridge.backends_are_initialized())


def load_time_env(env) -> dict[str, str]:
    jax_waiting = "jax._src.xla_bridge" in sys.modules and not jax_backend_made()
    not_yet_read = (
        READ_WHEN_CALLED
        + (READ_AS_JAX_STARTS if not jax_backend_made() else ())
        + (READ_AS_JAX_BACKEND_STARTS if jax_waiting else ())
    )
    return {
        k: v
        for k, v in env.items()
        if k.startswith(LOAD_TIME_PREFIXES) and k not in PER_STAGE + NOT_READ and not k.startswith(not_yet_read)
    }


# The command's side: `python -m stages.<name>` (stages/__init__.py calls this first).


def run_warm_if_served(pending: list[int]) -> None:
    """If a server answers at $CLASSIC_CNNS_WARM and can run this stage, run it there and exit with
    its status (or die of its signal); else return, and the stage starts here as usual. `pending`:
    the signals that came so far (stages/__init__.py records them from its first line); they, and
    any that come before the stage's process exists, are passed on once it does, or stay in
    `pending` for the stage starting here."""
    paths = [p for p in os.environ.get(SOCKET_ENV, "").split(os.pathsep) if p]
    if not paths or sys.orig_argv[1:2] != ["-m"]:  # interpreter options (-u, -X ...): start here, with them
        return
    target = []

    def forward(signum, frame):
        if target:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target[0], signum)
        else:
            pending.append(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    request = {"argv": sys.orig_argv[2:], "cwd": os.getcwd(), "env": dict(os.environ), "python": sys.executable}
    for path in paths:  # the first server whose Python and load-time environment are this stage's
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(path)
            socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
            answer = conn.recv(64).decode().split()
        except OSError:
            answer = []
        if answer[:1] == ["pid"]:
            break
        conn.close()  # no server there, or "cold": its Python or load-time environment differs
    else:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        return
    target.append(int(answer[1]))
    for signum in pending:
        forward(signum, None)
    pending.clear()
    answer = conn.recv(64).decode().split()  # "status <wait status>"; nothing if the server died
    status = int(answer[1]) if answer[:1] == ["status"] else 1 << 8
    if os.WIFSIGNALED(status):  # die of it too (SIGKILL, SIGSTOP: no handler to reset)
        with contextlib.suppress(OSError, ValueError):
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# The server's side.


def preload() -> None:
    """Import every stage, so that every module they use is loaded, then forget this project's own
    modules: each stage imports them from its folder, which may hold other code than this one's."""
    import classic_cnns  # noqa: F401 - quiets the frameworks and sets their flags before they load
    import stages

    for module in pkgutil.iter_modules(stages.__path__):
        importlib.import_module(f"stages.{module.name}")
    import matplotlib.pyplot  # noqa: F401 - the figures' (non-interactive) backend, as they set it

    for name in LOADED_LATER:
        importlib.import_module(name)
    forget_own_modules()


def forget_own_modules() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in OWN]:
        del sys.modules[name]
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__.split(".")[0] not in OWN]


def serve(path: str) -> None:
    import classic_cnns  # noqa: F401 - as a stage has when it asks (stages/__init__.py): it sets XLA_FLAGS...

    before = dict(os.environ)
    preload()
    loaded_with = load_time_env(before)  # not after: Keras sets TF_FORCE_GPU_ALLOW_GROWTH as it loads for JAX
    set_by_loading = {k: v for k, v in os.environ.items() if before.get(k) != v}  # each stage gets them too
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # each session's process reaped as it ends
    print(f"warm: serving stages at {path} (pid {os.getpid()})", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(message)
        except (OSError, ValueError):
            conn.close()
            continue
        asked = f"{' '.join(request['argv'])} in {request['cwd']}"
        ours, theirs = loaded_with, load_time_env(request["env"])
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if request["python"] != sys.executable or differ:
            print(f"warm: {asked}: cold (another Python, or {', '.join(differ) or 'no variable'} differs)", flush=True)
            conn.send(b"cold")
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            session(conn, fds, {**request, "env": {**request["env"], **set_by_loading}})
        conn.close()
        for fd in fds:
            os.close(fd)


def session(conn: socket.socket, fds: list[int], request: dict) -> None:
    """One stage: fork it, tell the command its pid, then its wait status; kill it if the command dies.
    Signals are blocked across the fork: one passed on before the stage has its handlers waits for them."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        stage_pid = os.fork()
        if stage_pid == 0:
            conn.close()
            run_stage_here(fds, request)
        for fd in fds:  # the stage's now: its streams end when it does
            os.close(fd)
        print(f"warm: {' '.join(request['argv'])} in {request['cwd']}: pid {stage_pid}", flush=True)
        conn.send(f"pid {stage_pid}".encode())
        while True:
            pid, status = os.waitpid(stage_pid, os.WNOHANG)
            if pid:
                conn.send(f"status {status}".encode())
                return
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable and not conn.recv(64):  # the command is gone (killed): so is its stage
                os.kill(stage_pid, signal.SIGKILL)
                os.waitpid(stage_pid, 0)
                return
    except OSError:
        traceback.print_exc()
    finally:
        os._exit(0)


def run_stage_here(fds: list[int], request: dict) -> None:
    """In the stage's process: become `python -m <argv>` run in the request's folder and environment."""
    code = 1
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]  # apart from 0-2, which they replace
        for fd in fds:
            os.close(fd)
        for target, fd in enumerate(high):
            os.dup2(fd, target)
            os.close(fd)
        unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))  # as `python -u` or a cold start would
        sys.stdout.reconfigure(line_buffering=os.isatty(1), write_through=unbuffered)
        sys.stderr.reconfigure(write_through=unbuffered)
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        module, *args = request["argv"]
        sys.argv = [module, *args]
        sys.path[0] = request["cwd"]  # as `python -m` puts the working folder first
        forget_own_modules()
        from classic_cnns import errors

        errors.hold_signals_while_starting()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # a signal that came already: recorded now
        import runpy

        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m classic_cnns.warm SOCKET_PATH")
    serve(sys.argv[1])
