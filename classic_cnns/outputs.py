"""Writing a stage's files so that no failure (a kill, a full disk, an exception) leaves one
half-written: each is written to a temporary name beside it and renamed into place when complete."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from classic_cnns.errors import DiskFull, is_disk_full


def temporary_name(path: Path) -> Path:
    """mnist.npz -> mnist.tmp.npz: keeps the suffix numpy and Keras insist on."""
    return path.with_name(f"{path.stem}.tmp{path.suffix}")


@contextmanager
def atomic(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` only if the block succeeds, and is
    removed otherwise. A full disk becomes a DiskFull error naming the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(path.parent, what=f"writing {path.name} (after {written:,} bytes)") from exc
        raise


def write_text(path: Path | str, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, data, **kwargs) -> None:
    write_text(path, json.dumps(data, indent=2, **kwargs) + "\n")


def write_csv(frame, path: Path | str, **kwargs) -> None:
    with atomic(path) as tmp:
        frame.to_csv(tmp, **kwargs)
