"""Which params a stage reads: set CLASSIC_CNNS_PARAMS_TRACE to a folder, and every stage writes
there, when it exits, the params.yaml keys it read after loading them (`train@lenet5.json`, as
dvc.yaml names the stage). The tests compare them with what dvc.lock says each stage declares.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

TRACE_ENV = "CLASSIC_CNNS_PARAMS_TRACE"
_read: set[str] | None = None  # the keys read since tracing started (None: not tracing)


def record(key: str) -> None:
    if _read is not None:
        _read.add(key)


class Section:
    """A params section that knows its key, so that reading a knob can be recorded."""

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if _read is not None and name in type(self).__dataclass_fields__:
            key = object.__getattribute__(self, "__dict__").get("_key")
            if key is not None and not isinstance(value, (Section, dict)):
                record(f"{key}.{name}".lstrip("."))
        return value


def start_tracing() -> None:
    """Record every knob read from now on; write them to $CLASSIC_CNNS_PARAMS_TRACE at exit,
    in a file named after the stage (`train@lenet5`, as dvc.yaml names it)."""
    global _read
    folder = os.environ.get(TRACE_ENV)
    if not folder or _read is not None:
        return
    _read = set()
    stage = Path(sys.argv[0]).stem + ("@" + "-".join(sys.argv[1:]) if sys.argv[1:] else "")

    def write() -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{stage}.json").write_text(json.dumps(sorted(_read)))

    atexit.register(write)
