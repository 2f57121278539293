"""Failures a user can fix, and how a stage reports any failure: one line on stderr (what, where,
the fix) and a non-zero exit status. The traceback is printed too with CLASSIC_CNNS_TRACEBACK=1."""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

TRACEBACK_ENV = "CLASSIC_CNNS_TRACEBACK"


class UserError(Exception):
    """A failure whose message says what went wrong, where, and what to do about it."""


class TrainingFailed(UserError):
    """A training that diverged or did not learn (classic_cnns/training/health.py): `reason`, `epoch`."""

    def __init__(self, reason: str, epoch: int, message: str):
        super().__init__(message)
        self.reason, self.epoch = reason, epoch


def free_bytes(folder: Path) -> int:
    """Free space on the file system that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class DiskFull(UserError):
    def __init__(self, folder: Path, needed: int | None = None, what: str = ""):
        free = free_bytes(folder)
        need = f"needs {megabytes(needed)}, " if needed is not None else ""
        super().__init__(
            f"disk full: {what or 'writing'} in {folder} {need}{megabytes(free)} free there; "
            "free some space (or point the project at a bigger disk) and rerun"
        )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFull before writing `needed` bytes into `folder` if they cannot fit."""
    if free_bytes(folder) < needed:
        raise DiskFull(folder, needed, what)


def one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        text = str(exc)
    elif is_disk_full(exc):
        where = Path(exc.filename).parent if getattr(exc, "filename", None) else Path.cwd()
        text = str(DiskFull(where))
    else:
        text = (
            f"{type(exc).__name__}: {exc} (unexpected: please report it; rerun with {TRACEBACK_ENV}=1 "
            "for the traceback)"
        )
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a CI timeout, a scheduler), raised in the main thread like Ctrl-C, so that
    whatever ends an interrupted run (an MLflow run KILLED, a checkpoint kept) handles both."""


class _Signals:
    """SIGTERM and SIGINT as a stage sees them. A signal is recorded first (`pending`), then raised
    in the main thread, unless the stage is starting (its imports) or finishing (after `finishing()`).
    Python drops an exception raised where it cannot propagate (a weakref callback, a finalizer:
    "Exception ignored in ..."), so a recorded signal is raised again at the next
    `check_interrupted()`: the training loop calls it after every batch, evaluate between its steps,
    and `finishing()` before the commit. A signal cannot be lost, and none ends a commit half-way."""

    pending: int | None = None  # the first SIGTERM / SIGINT that arrived
    held = 0  # above 0 while a stage starts (its imports) and once it is finishing
    raised = False  # raised once already: a second signal during the clean-up only records itself
    whole_process = False  # `python -m stages.<name>`: held from run_stage's end to the exit too


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum, frame):
    _Signals.pending = _Signals.pending or signum
    if _Signals.held > 0 or _Signals.raised:
        return
    _Signals.raised = True
    raise _interruption(signum)


def _unraisable(hook):
    """sys.unraisablehook that stays quiet about a signal's exception Python dropped (it is raised
    again at the next check), so an interrupted stage still prints one line."""

    def quiet(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    return quiet


def _install() -> dict:
    sys.unraisablehook = _unraisable(sys.__unraisablehook__)
    return {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}


def is_interruption(exc: BaseException) -> bool:
    """Whether `exc` stops the stage for SIGTERM or Ctrl-C: the signal's own exception, or any exception
    once one was raised into the stage (a library may turn it into its own: Keras made a TypeError of
    it while tracing a layer's call)."""
    return isinstance(exc, KeyboardInterrupt) or bool(_Signals.pending and _Signals.raised)


def check_interrupted() -> None:
    """Raise the signal that arrived and has not stopped the stage yet (or was dropped by Python)."""
    if _Signals.pending and _Signals.held <= 0:
        _Signals.raised = True
        raise _interruption(_Signals.pending)


def finishing() -> None:
    """The stage's work is done but for its commit (registering a model version, ending its run): a
    signal that came before stops the stage here; one that comes later waits for the stage's end,
    which exits 0 with its work complete. Nothing after this call is cut in two."""
    check_interrupted()
    _Signals.held += 1


def hold() -> None:
    """From here to `release()` a signal is recorded, not raised (see signals_held)."""
    _Signals.held += 1


def release() -> None:
    """A signal recorded since `hold()` stops the stage at its next check_interrupted()."""
    _Signals.held -= 1


@contextlib.contextmanager
def signals_held():
    """A block that a signal must not cut: library code that turns an exception raised inside it into
    another, prints it, or hangs (TensorFlow's C++ calling back into Python: "SystemError: <built-in
    function __import__> returned a result with an exception set"; Keras tracing a layer: TypeError).
    A signal waits for the block's end, or its next check_interrupted_while_held(), and stops the
    stage there."""
    hold()
    try:
        yield
    finally:
        release()
    check_interrupted()


def check_interrupted_while_held() -> None:
    """Inside signals_held: stop here if a signal came. For the block's safe points (a Keras batch's
    end: classic_cnns/training/loop.py's Interruptible)."""
    release()
    try:
        check_interrupted()
    finally:
        hold()


def hold_signals_while_starting(early: list[int] = ()) -> None:
    """Called as `python -m stages.<name>` starts, before its imports (seconds for TensorFlow): a
    signal then (or one of `early`, which came before this call) is recorded, and run_stage stops
    the stage with it in one line before any work."""
    _Signals.pending = early[0] if early else None
    _Signals.held, _Signals.raised, _Signals.whole_process = 1, False, True
    _install()


def run_stage(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a stage's main(argv): its exit status, or one line on stderr and 2 for a failure the user
    can fix (UserError, a full disk), 1 for a bug, 130 for Ctrl-C, 143 for SIGTERM. Bad params and
    bad arguments exit 2 themselves (SystemExit passes through). A signal that arrives after the
    stage began finishing (`finishing()`) finds its work complete: exit 0.

    As `python -m stages.<name>` the process then exits at once with that status, exit functions run
    and streams flushed: the interpreter's own shutdown takes seconds with TensorFlow loaded and gives
    SIGTERM its default action early in it, so a signal then would kill a stage whose work is complete,
    and DVC would call it failed."""
    hook, previous = sys.unraisablehook, _install()
    starting = _Signals.held > 0 and _Signals.pending  # arrived during the imports
    _Signals.held, _Signals.raised = 0, False
    if not starting:
        _Signals.pending = None
    try:
        status = _run(main, argv)
    finally:
        if _Signals.whole_process:
            _Signals.held = 1
    if _Signals.whole_process:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)
    _Signals.pending, _Signals.held, _Signals.raised = None, 0, False
    sys.unraisablehook = hook
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    return status


def _run(main: Callable[[list[str]], int], argv: list[str] | None) -> int:
    try:
        check_interrupted()
        status = main(sys.argv[1:] if argv is None else argv)
        if _Signals.pending:
            name = signal.Signals(_Signals.pending).name
            print(f"{name} arrived as the stage finished: its work is complete", file=sys.stderr)
        return status
    except Terminated:
        return _stopped(signal.SIGTERM)
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT)
    except Exception as exc:  # every failure ends as one line and a status
        if is_interruption(exc):
            return _stopped(_Signals.pending)
        if os.environ.get(TRACEBACK_ENV):
            traceback.print_exc(file=sys.stderr)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) or is_disk_full(exc) else 1


def _stopped(signum: int) -> int:
    if signum == signal.SIGTERM:
        print("error: stopped by SIGTERM; what was finished is kept: rerun the stage to continue", file=sys.stderr)
        return 143
    print("error: interrupted (Ctrl-C); what was finished is kept: rerun the stage to continue", file=sys.stderr)
    return 130
