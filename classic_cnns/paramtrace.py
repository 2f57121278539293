"""The base of every params section: pydantic, strict (a YAML 1 is not a float's text, a 2.5 not a
whole number), frozen, no unknown keys; pydantic's errors worded as one line naming the key.

It also records which params a stage reads: set CLASSIC_CNNS_PARAMS_TRACE to a folder, and every
stage writes there, when it exits, the params.yaml keys it read after loading them
(`train@lenet5.json`, as dvc.yaml names the stage). The tests compare them with what dvc.lock says
each stage declares.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

TRACE_ENV = "CLASSIC_CNNS_PARAMS_TRACE"
_read: set[str] | None = None  # the keys read since tracing started (None: not tracing)


class ParamsError(ValueError):
    """params.yaml is not valid; the message names the key and the fix."""


def check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ParamsError(f"params.yaml: '{key}' {msg}")


def record(key: str) -> None:
    if _read is not None:
        _read.add(key)


class Section(BaseModel):
    """A params section that knows its key once loaded (`label`), so that reading a knob is recorded."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    _key: str | None = PrivateAttr(default=None)

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if _read is not None and not name.startswith("_") and name in type(self).model_fields:
            key = object.__getattribute__(self, "__pydantic_private__").get("_key")
            if key is not None and not isinstance(value, (Section, dict)):
                record(f"{key}.{name}".lstrip("."))
        return value

    def label(self, key: str = "") -> None:
        """Remember the keys of this section and those under it (reads are recorded from now on)."""
        self._key = key
        for name in type(self).model_fields:
            value = object.__getattribute__(self, name)
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for k, item in items:
                if isinstance(item, Section):
                    item.label(".".join(p for p in (key, name, k) if p))

    def asdict(self) -> dict:
        """The knobs as plain values, each read as a stage reads it (so recorded)."""

        def plain(value):
            if isinstance(value, Section):
                return value.asdict()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(map(plain, value)) if isinstance(value, list) else value

        return {name: plain(getattr(self, name)) for name in type(self).model_fields}

    def replace(self, **changes):
        """A copy with `changes` (not validated, not recorded: for code that varies a recipe)."""
        copy = self.model_copy(update=changes)
        copy._key = None
        return copy


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


def _section_at(cls: type, loc: tuple) -> type | None:
    """The Section class that holds the key at `loc` (for listing what is allowed there)."""
    for part in loc:
        if isinstance(cls, type) and issubclass(cls, Section) and part in cls.model_fields:
            cls = cls.model_fields[part].annotation
        elif typing.get_origin(cls) is dict:
            cls = typing.get_args(cls)[1]
        else:
            return None
    return cls if isinstance(cls, type) and issubclass(cls, Section) else None


def _float_hint(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return f" (YAML reads {value} as text: write it with a dot, e.g. {number!r})" if isinstance(value, str) else ""


def worded(exc: ValidationError, cls: type, key: str = "") -> str:
    """pydantic's first error as one line: 'params.yaml: 'models.lenet5.epochs' must be ...'."""
    error = exc.errors()[0]
    loc, kind, got, ctx = error["loc"], error["type"], error.get("input"), error.get("ctx") or {}
    path = key
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}".lstrip(".")
    if kind == "extra_forbidden":
        allowed = _section_at(cls, loc[:-1])
        msg = "is not a known key" + (f"; allowed here: {', '.join(allowed.model_fields)}" if allowed else "")
    elif kind == "missing":
        msg = "is missing; add it to params.yaml"
    elif kind.startswith("int_"):
        msg = f"must be a whole number, got {got!r}"
    elif kind.startswith("float_"):
        msg = f"must be a number, got {got!r}{_float_hint(got)}"
    elif kind.startswith("bool_"):
        msg = f"must be true or false, got {got!r}"
    elif kind.startswith("string_"):
        msg = f"must be a non-empty string, got {got!r}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx['expected']}; got {got!r}"
    elif kind in ("greater_than_equal", "less_than_equal"):
        sign, bound = (">=", ctx.get("ge")) if kind == "greater_than_equal" else ("<=", ctx.get("le"))
        msg = f"must be {sign} {bound}, got {got!r}"
    elif kind == "too_short":
        msg = "must be a non-empty " + ("list" if ctx.get("field_type") == "List" else "mapping")
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        msg = f"must be a mapping (key: value), got {type(got).__name__}"
    elif kind == "list_type":
        msg = f"must be a list, got {got!r}"
    else:
        msg = error["msg"].removeprefix("Value error, ")
    return f"params.yaml: '{path or '<top level>'}' {msg}"
