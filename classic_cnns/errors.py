"""Failures a user can fix, and how a stage reports any failure: one line on stderr (what, where,
the fix) and a non-zero exit status. The traceback is printed too with CLASSIC_CNNS_TRACEBACK=1."""

from __future__ import annotations

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


def _terminate(signum, frame):
    raise Terminated()


def run_stage(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a stage's main(argv): its exit status, or one line on stderr and 2 for a failure the user
    can fix (UserError, a full disk), 1 for a bug, 130 for Ctrl-C, 143 for SIGTERM. Bad params and
    bad arguments exit 2 themselves (SystemExit passes through)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except Terminated:
        print("error: stopped by SIGTERM; what was finished is kept: rerun the stage to continue", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); what was finished is kept: rerun the stage to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure ends as one line and a status
        if os.environ.get(TRACEBACK_ENV):
            traceback.print_exc(file=sys.stderr)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) or is_disk_full(exc) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
