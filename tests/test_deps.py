"""Each stage declares every project file it runs, so DVC reruns it when any of them changes: the
static import closure of its `python -m <module>` within the project (imports inside functions
included) is covered by its `deps` in dvc.yaml and ablations/dvc.yaml."""

import ast
import re

import pytest
import yaml

from tests.projects import ROOT

PACKAGES = ("classic_cnns", "stages", "bench")


def module_file(name: str):
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported(path) -> set[str]:
    """The project modules a file imports (`import a.b`, `from a import b`, `from a.b import c`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in PACKAGES}


def closure(module: str) -> set[str]:
    """Every project file that `python -m module` may run: the module, the packages above it (their
    __init__.py runs first), and everything they import, transitively."""
    seen, todo = set(), [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path and path not in seen:
                seen.add(path)
                todo.extend(imported(path))
    return {p.relative_to(ROOT).as_posix() for p in seen}


def stages():
    """(file, stage name, module, deps) for every stage of both pipelines (paths from the root)."""
    for path in ("dvc.yaml", "ablations/dvc.yaml"):
        for name, entry in yaml.safe_load((ROOT / path).read_text())["stages"].items():
            body = entry.get("do", entry)
            module = re.match(r"python -m ([\w.]+)", body["cmd"]).group(1)
            yield path, name, module, [d.split("#")[0].strip() for d in body.get("deps", [])]


@pytest.mark.parametrize("path, name, module, deps", list(stages()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_stage_declares_every_project_file_it_runs(path, name, module, deps):
    def covered(f):  # a file or its folder
        return any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)

    undeclared = sorted(f for f in closure(module) if not covered(f))
    assert not undeclared, f"{path}: stage {name} runs {undeclared} but does not declare them in its deps"


def test_the_closure_follows_imports_inside_functions_and_packages():
    files = closure("stages.evaluate")
    assert {
        "stages/__init__.py",
        "classic_cnns/__init__.py",
        "classic_cnns/framework_logs.py",
        "classic_cnns/training/augment.py",
    } <= files  # augment: imported inside tta's functions
    assert "classic_cnns/analysis/grid.py" not in files
