"""What a dispatch runs: the stages of the targets (and the stages they depend on) that `dvc repro`
would run, upstream first, each with the stages it waits for.

A stage is run if `dvc status` calls it changed, or a stage it depends on is run. A worker can run it
when its results can come back: cached outputs through the DVC remote and run-cache, uncached ones
(small, git-tracked files such as the grid's results) in the Dask task's result. A stage with both
kinds runs in this clone instead, at the end, as does every stage after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class Step:
    stage: str  # DVC's address: prepare@mnist, ablations/dvc.yaml:cell@alexnet-1
    upstream: list[str] = field(default_factory=list)  # dispatched stages it waits for
    uncached: list[str] = field(default_factory=list)  # its uncached outputs, relative to the root
    here: bool = False  # run by this clone's final `dvc repro`, not by a worker

    def asdict(self) -> dict:
        return {"stage": self.stage, "upstream": self.upstream, "uncached": self.uncached}


def plan(targets: list[str]) -> list[Step]:
    import networkx as nx
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage whose outputs it reads
        wanted = {s for target in targets for s in repo.stage.collect(target, with_deps=True)}
        changed = set(repo.status(targets=targets, with_deps=True))
        steps: dict[object, Step] = {}
        for stage in reversed(list(nx.topological_sort(graph.subgraph(wanted)))):
            before = [u for u in graph.successors(stage) if u in steps]
            if stage.frozen or not (stage.addressing in changed or before):
                continue
            uncached = [
                os.path.relpath(out.fs_path, repo.root_dir)
                for out in stage.outs
                if not out.use_cache and not (out.is_metric or out.is_plot)
            ]
            cached = [out for out in stage.outs if out.use_cache]
            steps[stage] = Step(
                stage.addressing,
                upstream=[steps[u].stage for u in before],
                uncached=uncached,
                here=bool(uncached and cached) or any(steps[u].here for u in before),
            )
    return list(steps.values())
