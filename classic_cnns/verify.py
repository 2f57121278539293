"""Did a rerun reproduce the committed results? Compares each stage output in the workspace
(a file's md5; a folder's from the workspace's dvc.lock, so run `dvc repro` first) with the hash in
the committed dvc.lock, and where a model's metrics
differ, the test accuracy against the spread between seeds that the claims grid measured for that
model (its cells in ablations/results/ of the variant that changes nothing).

    dvc repro -f train@lenet5 evaluate@lenet5 && python -m classic_cnns.verify      # against HEAD
    python -m classic_cnns.verify main~3

Prints a line per output: identical / within the seed spread / different (with the numbers);
exit 0 when nothing is different.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

IDENTICAL, WITHIN, DIFFERENT, MISSING = "identical", "within the seed spread", "different", "missing here"


def output_hashes(lock_text: str) -> dict[str, tuple[str, str]]:
    """{output path: (stage, md5)} of a dvc.lock."""
    lock = yaml.safe_load(lock_text) or {}
    return {out["path"]: (stage, out.get("md5", "")) for stage, entry in (lock.get("stages") or {}).items()
            for out in entry.get("outs", [])}


def seed_spread(model: str, variants: dict[str, dict], results_dir: Path) -> float | None:
    """Standard deviation of test accuracy across the seeds of the claims grid's cells that train
    `model` unchanged (a variant `{base: <model>}`), None where there are fewer than two. The grid
    trains at a smaller budget than the pipeline, so this spread is a generous tolerance."""
    import statistics

    unchanged = [v for v, spec in variants.items() if spec == {"base": model}]
    values = [json.loads(p.read_text())["test_accuracy"] for v in unchanged
              for p in sorted(results_dir.glob(f"{v}-seed*.json"))]
    return statistics.stdev(values) if len(values) >= 2 else None


def current_md5(path: Path, locked: str) -> str:
    """A file's md5 as DVC records it (of its bytes); a folder's from the workspace's dvc.lock."""
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    return locked if path.is_dir() else ""


def compare_metrics(committed: dict, rerun: dict, spread: float | None) -> tuple[str, str]:
    if committed == rerun:
        return IDENTICAL, "the same numbers, written differently"
    diff = rerun.get("test_accuracy", float("nan")) - committed.get("test_accuracy", float("nan"))
    detail = (f"test accuracy {committed.get('test_accuracy')} -> {rerun.get('test_accuracy')} ({100 * diff:+.2f} points"
              + (f"; seed spread {100 * spread:.2f}" if spread is not None else "; no seed spread recorded") + ")")
    if spread is not None and abs(diff) <= 2 * spread:
        return WITHIN, detail
    return DIFFERENT, detail


def verify(rev: str = "HEAD", root: Path = Path(".")) -> list[tuple[str, str, str, str]]:
    """(stage, output, verdict, detail) per output of the committed dvc.lock."""
    committed_lock = subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=root, capture_output=True, text=True,
                                    check=True).stdout
    committed, rerun = output_hashes(committed_lock), output_hashes((root / "dvc.lock").read_text())
    variants = (yaml.safe_load((root / "params.yaml").read_text()).get("ablations") or {}).get("variants", {})
    rows = []
    for path, (stage, md5) in committed.items():
        now = current_md5(root / path, rerun.get(path, ("", ""))[1])
        if not now:
            rows.append((stage, path, MISSING, ""))
        elif now == md5:
            rows.append((stage, path, IDENTICAL, ""))
        elif path.endswith("metrics.json"):
            old = json.loads(subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True,
                                            text=True, check=True).stdout)
            new = json.loads((root / path).read_text())
            model = Path(path).parent.name
            spread = seed_spread(model, variants, root / "ablations/results")
            rows.append((stage, path, *compare_metrics(old, new, spread)))
        else:
            rows.append((stage, path, DIFFERENT, ""))
    return rows


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
    return 1 if any(verdict == DIFFERENT for _, _, verdict, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
