"""Did a rerun reproduce the committed results? Compares each stage output in the workspace with
the committed one, output by output, from what it holds (a folder file by file), never from the
workspace's dvc.lock alone:

    dvc repro -f train@lenet5 evaluate@lenet5 && python -m classic_cnns.verify      # against HEAD
    python -m classic_cnns.verify main~3

The committed copy of an output comes from git (outputs with `cache: false`) or from the DVC cache
(after `dvc pull`); a committed copy that is not what dvc.lock records is reported as different:
- identical: the same bytes;
- equal within floating-point rounding: CSV and JSON files with the same structure and text whose
  numbers agree within a relative RTOL (1e-4), and model files whose every weight (the optimizer's
  state included) agrees within WEIGHT_RTOL (1e-3) of its tensor's largest magnitude: what kernels
  that differ between CPU instruction sets (or backends) give for the same computation. Measured
  (docs/measurements.md): LeNet-5's 20 epochs with three CPU kernel sets gave histories up to 6e-5
  apart, the same test predictions, and weights up to 1.4e-4 (Adam's moments 8.6e-4) apart;
- within the seed spread: metrics each of which moved by less than twice its own spread between
  seeds, as the claims grid measured it for that model (its cells of the variant that changes
  nothing: test accuracy and test loss); a moved metric without such a spread (macro F1) is different;
- different; missing here (an output committed to git that the workspace lacks); not here (an
  output kept in DVC's cache, neither pulled nor rerun here: with no DVC remote configured, it was
  only ever in the cache of the machine that made it, and `dvc repro -s STAGE` remakes it);
- not comparable here: the bytes differ and the committed copy is in no DVC cache here.
Exit 1 when anything is different or missing, else 0.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from classic_cnns.paths import GRID_RESULTS

IDENTICAL, ROUNDING, WITHIN = "identical", "equal within floating-point rounding", "within the seed spread"
DIFFERENT, MISSING, UNKNOWN = "different", "missing here", "not comparable here"
NOT_HERE = "not here"
# best to worst: a folder gets its worst file's verdict
ORDER = [IDENTICAL, ROUNDING, WITHIN, NOT_HERE, UNKNOWN, DIFFERENT, MISSING]
RTOL = 1e-4  # numbers in CSV/JSON outputs
WEIGHT_RTOL = 1e-3  # a model's weights, relative to their tensor's largest magnitude


# --- the committed and the current contents -------------------------------------------------
def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def folder_md5(files: dict[str, bytes]) -> str:
    """A folder's hash as DVC records it: md5 of its sorted (relpath, md5) listing, plus `.dir`."""
    listing = sorted(({"md5": md5(data), "relpath": rel} for rel, data in files.items()), key=lambda e: e["relpath"])
    return md5(json.dumps(listing, sort_keys=True).encode()) + ".dir"


def dvc_hash(files: dict[str, bytes], folder: bool) -> str:
    """An output's hash as dvc.lock records it, from current_files' or Committed.files' contents."""
    return folder_md5(files) if folder else md5(files[""])


class Committed:
    """The committed copy of each output at `rev`: from git, else from the DVC cache."""

    def __init__(self, root: Path, rev: str):
        self.root, self.rev = root, rev
        self.cache = root / ".dvc/cache/files/md5"
        config = "".join(p.read_text() for p in (root / ".dvc").glob("config*") if p.is_file())
        self.fetch = "dvc pull" if re.search(r"^\s*\[\s*'?remote", config, re.M) else "no DVC remote is configured"

    def not_cached(self, stage: str) -> str:
        """How to get an output that is in no DVC cache here."""
        return f"{self.fetch}; dvc repro -s {stage} remakes it"

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=self.root, capture_output=True, check=False)

    def cached(self, digest: str) -> bytes | None:
        path = self.cache / digest[:2] / digest[2:]
        return path.read_bytes() if path.is_file() else None

    def files(self, path: str, digest: str) -> dict[str, bytes] | None:
        """{relpath: bytes} of a committed output ('' for a file), None where it is not here."""
        if not digest.endswith(".dir"):
            shown = self.git("show", f"{self.rev}:{path}")
            data = shown.stdout if shown.returncode == 0 else self.cached(digest)
            return None if data is None else {"": data}
        listed = self.git("ls-tree", "-r", "--name-only", self.rev, "--", path)
        names = listed.stdout.decode().split() if listed.returncode == 0 else []
        if names:
            return {name[len(path) + 1 :]: self.git("show", f"{self.rev}:{name}").stdout for name in names}
        manifest = self.cached(digest)
        if manifest is None:
            return None
        out = {}
        for entry in json.loads(manifest):
            data = self.cached(entry["md5"])
            if data is None:
                return None
            out[entry["relpath"]] = data
        return out


def current_files(path: Path) -> dict[str, bytes] | None:
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


# --- equal up to rounding ----------------------------------------------------------------------
def relative(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def json_deviation(a, b) -> float | None:
    """The largest relative difference between the numbers of two JSON values; None where their
    structure or text differs."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str):
        return 0.0 if a == b else None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return relative(float(a), float(b))
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        parts = [json_deviation(a[k], b[k]) for k in a]
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        parts = [json_deviation(x, y) for x, y in zip(a, b, strict=False)]
    else:
        return None
    return None if None in parts else max(parts, default=0.0)


def csv_deviation(a: bytes, b: bytes) -> float | None:
    """As json_deviation, cell by cell."""
    rows_a, rows_b = (list(csv.reader(io.StringIO(x.decode()))) for x in (a, b))
    if len(rows_a) != len(rows_b) or any(len(r) != len(s) for r, s in zip(rows_a, rows_b, strict=False)):
        return None
    worst = 0.0
    for x, y in zip((c for r in rows_a for c in r), (c for r in rows_b for c in r), strict=False):
        if x != y:
            try:
                worst = max(worst, relative(float(x), float(y)))
            except ValueError:
                return None
    return worst


def keras_weights(data: bytes) -> tuple[dict[str, bytes], dict[str, object]]:
    """(the archive's other members, {name: weight array}) of a .keras file."""
    import h5py

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    arrays = {}
    with h5py.File(io.BytesIO(members.pop("model.weights.h5")), "r") as h5:
        h5.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return members, arrays


def model_deviation(a: bytes, b: bytes) -> float | None:
    """The largest difference between two models' weights (the optimizer's state included), each
    relative to the largest magnitude in its tensor; None where the architecture differs."""
    import numpy as np

    (meta_a, weights_a), (meta_b, weights_b) = keras_weights(a), keras_weights(b)
    if meta_a != meta_b or weights_a.keys() != weights_b.keys():
        return None
    worst = 0.0
    for name, x in weights_a.items():
        y = weights_b[name]
        if x.shape != y.shape:
            return None
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        if scale:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))) / scale)
    return worst


def file_verdict(name: str, old: bytes, new: bytes) -> tuple[str, str]:
    """(verdict, detail) of one file."""
    if old == new:
        return IDENTICAL, ""
    deviation, tolerance, what = None, RTOL, "numbers"
    try:
        if name.endswith(".json"):
            deviation = json_deviation(json.loads(old), json.loads(new))
        elif name.endswith(".csv"):
            deviation = csv_deviation(old, new)
        elif name.endswith(".keras"):
            deviation, tolerance, what = model_deviation(old, new), WEIGHT_RTOL, "weights"
    except (ValueError, KeyError, OSError, zipfile.BadZipFile):
        pass
    if deviation is None:
        return DIFFERENT, ""
    detail = f"{what} up to {deviation:.1e} apart (relative)"
    return (ROUNDING if deviation <= tolerance else DIFFERENT), detail


# --- the seed spread (metrics) -----------------------------------------------------------------
SPREAD_OF = {  # a metric of metrics.json -> the claims grid's measure whose seed spread judges it
    "test_accuracy": "test_accuracy",
    "test_accuracy_single_view": "test_accuracy",  # the grid scores a single view
    "test_loss": "test_loss",
}


def seed_spread(model: str, variants: dict[str, dict], results_dir: Path) -> dict[str, float]:
    """Standard deviation across seeds of each measure (test accuracy, test loss) of the claims
    grid's cells that train `model` unchanged (a variant `{base: <model>}`); a measure with fewer
    than two values is left out. The grid trains at a smaller budget than the pipeline, so this
    spread is a generous tolerance."""
    unchanged = [v for v, spec in variants.items() if spec == {"base": model}]
    cells = [json.loads(p.read_text()) for v in unchanged for p in sorted(results_dir.glob(f"{v}-seed*.json"))]
    spreads = {}
    for measure in sorted(set(SPREAD_OF.values())):
        values = [cell[measure] for cell in cells if isinstance(cell.get(measure), (int, float))]
        if len(values) >= 2:
            spreads[measure] = statistics.stdev(values)
    return spreads


def compare_metrics(committed: dict, rerun: dict, spreads: dict[str, float]) -> tuple[str, str]:
    """Each metric that moved beyond rounding, named, and judged by its own seed spread: within
    twice it, or different (also a metric the grid has no spread for, such as macro F1)."""
    verdict, parts = WITHIN, []
    for key in sorted(committed.keys() | rerun.keys()):
        old, new = committed.get(key), rerun.get(key)
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and relative(old, new) <= RTOL:
            continue
        if not (isinstance(old, (int, float)) and isinstance(new, (int, float))):
            verdict = DIFFERENT
            parts.append(f"{key} {old} -> {new}")
            continue
        measure = SPREAD_OF.get(key)
        spread = spreads.get(measure) if measure else None
        points = key.startswith("test_accuracy")  # fractions shown as percentage points
        moved = f"{100 * (new - old):+.2f} points" if points else f"{new - old:+.4g}"
        if spread is None:
            verdict = DIFFERENT
            parts.append(f"{key} {old} -> {new} ({moved}; no seed spread recorded for it)")
            continue
        shown = f"{100 * spread:.2f}" if points else f"{spread:.4g}"
        parts.append(f"{key} {old} -> {new} ({moved}; seed spread {shown})")
        if abs(new - old) > 2 * spread:
            verdict = DIFFERENT
    return verdict, "; ".join(parts)


# --- the comparison ----------------------------------------------------------------------------
def output_hashes(lock_text: str) -> dict[str, tuple[str, str]]:
    """{output path: (stage, md5)} of a dvc.lock."""
    lock = yaml.safe_load(lock_text) or {}
    return {
        out["path"]: (stage, out.get("md5", ""))
        for stage, entry in (lock.get("stages") or {}).items()
        for out in entry.get("outs", [])
    }


def compare(stage: str, path: str, digest: str, committed: Committed, spread) -> tuple[str, str]:
    new = current_files(committed.root / path)
    if new is None:
        in_git = committed.git("ls-tree", "-r", "--name-only", committed.rev, "--", path).stdout.strip()
        return (MISSING, "") if in_git else (NOT_HERE, f"kept by DVC only: {committed.not_cached(stage)}")
    folder = digest.endswith(".dir")
    if dvc_hash(new, folder) == digest:
        return IDENTICAL, ""
    old = committed.files(path, digest)
    if old is None:
        return UNKNOWN, f"the bytes differ; the committed copy is in no DVC cache here: {committed.not_cached(stage)}"
    if dvc_hash(old, folder) != digest:
        return DIFFERENT, "the committed copy is not what dvc.lock records (changed without rerunning its stage)"
    if old.keys() != new.keys():
        return DIFFERENT, f"files {sorted(old.keys() ^ new.keys())} only on one side"
    verdicts = {rel: file_verdict(rel or path, old[rel], new[rel]) for rel in old}
    worst = max(verdicts, key=lambda rel: ORDER.index(verdicts[rel][0]))
    verdict, detail = verdicts[worst]
    if worst and verdict != IDENTICAL:
        detail = f"{worst}: {detail}" if detail else worst
    if verdict == DIFFERENT and path.endswith("metrics.json"):
        return compare_metrics(json.loads(old[""]), json.loads(new[""]), spread(Path(path).parent.name))
    return verdict, detail


def verify(rev: str = "HEAD", root: Path = Path(".")) -> list[tuple[str, str, str, str]]:
    """(stage, output, verdict, detail) per output of the committed dvc.lock."""
    committed = Committed(root, rev)
    shown = committed.git("show", f"{rev}:dvc.lock")
    if shown.returncode != 0:
        raise subprocess.CalledProcessError(shown.returncode, "git show", stderr=shown.stderr.decode())
    variants = (yaml.safe_load((root / "params.yaml").read_text()).get("ablations") or {}).get("variants", {})

    def spread(model):
        return seed_spread(model, variants, root / GRID_RESULTS)

    return [
        (stage, path, *compare(stage, path, digest, committed, spread))
        for path, (stage, digest) in output_hashes(shown.stdout.decode()).items()
    ]


def main(argv: list[str]) -> int:
    rev = argv[0] if argv else "HEAD"
    try:
        rows = verify(rev)
    except subprocess.CalledProcessError as exc:
        print(f"error: git could not show {rev}:dvc.lock ({exc.stderr.strip()})", file=sys.stderr)
        return 2
    width = max(len(path) for _, path, _, _ in rows)
    for stage, path, verdict, detail in rows:
        print(f"{path:<{width}}  {verdict}" + (f": {detail}" if detail else "") + f"  [{stage}]")
    print(
        f"(rounding: numbers in CSV/JSON within a relative {RTOL:g}; model weights within {WEIGHT_RTOL:g} of "
        "their tensor's largest magnitude)"
    )
    return 1 if any(verdict in (DIFFERENT, MISSING) for _, _, verdict, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
