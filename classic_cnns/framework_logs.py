"""Keeps the frameworks' C++ start-up log lines off the stages' stderr.

TensorFlow logs through Abseil. On CPUs where it turns oneDNN on by default (AVX-512 VNNI/BF16,
AMX), loading `libtensorflow_framework.so` logs `oneDNN custom operations are on ...` from a static
initialiser, before any Python code can lower Abseil's level, and Abseil, not yet initialised,
writes it to stderr behind `WARNING: All log messages before absl::InitializeLog() ...` -- twice
(a second copy of Abseil in the profiler plugin). `TF_CPP_MIN_LOG_LEVEL` does not reach these; the
only switch that does, `TF_ENABLE_ONEDNN_OPTS=0`, changes the numerics. On AVX2-only CPUs nothing
is printed.

So the first import of each framework runs with file descriptor 2 sent to a temporary file; what
it wrote is then written to stderr without Abseil's lines below the level `TF_CPP_MIN_LOG_LEVEL`
asks for (the library sets 3: fatal only; 0 shows everything), each with the lines that continue
it. Every other line (Python warnings, anything else) passes unchanged, and if the import fails,
all of it does.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

FRAMEWORKS = ("tensorflow", "jaxlib")
# Abseil's prefix: severity letter, MMDD hh:mm:ss.micros (before initialisation: 0000 00:00:<epoch
# seconds>), thread id, file:line]
ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^ \]]+:\d+\] ")
PYTHON_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
ABSL_UNINITIALISED = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def keep(text: str, level: int) -> str:
    """`text` without Abseil's lines of a severity below `level` (and its uninitialised notice)."""
    if level <= 0:
        return text
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        match = ABSL_LINE.match(line)
        if match:
            dropping = SEVERITY[match.group(1)] < level
        elif line.rstrip("\n") == ABSL_UNINITIALISED:
            dropping = True
        elif PYTHON_WARNING.match(line):
            dropping = False
        # else: a continuation of the message before it (Abseil's messages may span lines)
        if not dropping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def filtered_stderr():
    """Run the block with fd 2 captured; write what it wrote back, Abseil's lines filtered out."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            text = text if failed else keep(text, min_level())
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    """Wraps the loading of each framework's top-level package in `filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name not in FRAMEWORKS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with filtered_stderr():
                load(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Quiet the frameworks' first import in this process (idempotent; no-op once imported)."""
    if not any(isinstance(finder, _QuietFirstImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFirstImport())
