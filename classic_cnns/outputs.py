"""Writing a stage's files so that no failure (a kill, a full disk, an exception) leaves one
half-written: each is written to a temporary name beside it and renamed into place when complete.
A Keras model file is also made byte-stable: the same weights give the same bytes (and DVC hash)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from classic_cnns.errors import DiskFull, UserError, is_disk_full, signals_held


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


def _renumbered(config, ids: dict[int, int]):
    """The config with each `shared_object_id` (a Python id(), which differs per process) replaced
    by its order of first appearance; Keras only matches them up on loading."""
    if isinstance(config, dict):
        return {
            k: ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else _renumbered(v, ids)
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_renumbered(v, ids) for v in config]
    return config


def save_keras_model(model, path: Path | str) -> str:
    """model.save(path), atomically, without what makes two saves of the same model differ: the
    save date in metadata.json, the zip entries' modification times and the memory addresses used
    as shared-object ids in config.json. Returns the file's sha256."""
    with atomic(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as src:
            entries = [(info, src.read(info)) for info in src.infolist()]
        with zipfile.ZipFile(tmp, "w") as dst:
            for info, data in entries:
                if info.filename == "metadata.json":
                    data = json.dumps({k: v for k, v in json.loads(data).items() if k != "date_saved"}).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumbered(json.loads(data), {})).encode()
                stable = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                stable.compress_type, stable.external_attr = info.compress_type, info.external_attr
                dst.writestr(stable, data)
        return sha256(tmp)


def sha256(path: Path | str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_keras_model(path: Path | str, made_by: str, compile: bool = True):
    """The model saved at `path` by stage `made_by` (e.g. train@lenet5); a missing or broken file is
    one UserError naming it and the command that restores it."""
    import keras

    # --force: DVC will not overwrite a file that differs from its cache without it (a broken one does)
    restore = f"`dvc checkout --force {made_by}` (the cached copy), or rerun `dvc repro -f {made_by}`"
    if not Path(path).exists():
        raise UserError(f"{path} is missing: run `dvc repro {made_by}` first")
    try:
        with zipfile.ZipFile(path) as archive:  # Keras reads a cut-off archive as "File not found"
            damaged = archive.testzip()
        if damaged:
            raise ValueError(f"{damaged} in the archive fails its CRC check")
        with signals_held():  # raised inside Keras, a signal would come out as a broken file
            return keras.models.load_model(path, compile=compile)
    except zipfile.BadZipFile:
        raise UserError(
            f"{path} is broken (not a whole .keras archive: truncated?); restore it with {restore}"
        ) from None
    except Exception as exc:  # a corrupt config.json or weights file
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{path} is broken ({type(exc).__name__}: {reason}); restore it with {restore}") from None
