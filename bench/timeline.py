"""Wall time per DVC stage, from `dvc repro`'s own output: pipe it through this, which passes every
line on and, at the end, writes {stage: seconds, ..., "total": seconds} (a stage runs from its
"Running stage 'X'" line to the next stage's, or to the end). Used by bench/gpu_repro.sh.

    dvc repro 2>&1 | python -m bench.timeline timeline.json
    ... | python -m bench.timeline out.json --total-only   # stages that overlap: only the whole run
"""

from __future__ import annotations

import json
import re
import sys
import time

STAGE = re.compile(r"Running stage '([^']+)'")


def main(argv: list[str]) -> int:
    started = now = time.monotonic()
    stages: dict[str, float] = {}
    current = None
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        found = STAGE.search(line)
        if found:
            now = time.monotonic()
            if current:
                stages[current] = round(now - stages[current], 1)
            current, stages[found.group(1)] = found.group(1), now
    end = time.monotonic()
    if current:
        stages[current] = round(end - stages[current], 1)
    if "--total-only" in argv:  # stages that run at once: their lines interleave, so only the whole
        stages = {"stages": len(stages)}
    with open(argv[0], "w") as fh:
        json.dump({**stages, "total": round(end - started, 1)}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
