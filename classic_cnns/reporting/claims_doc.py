"""The claims document (reports/claims.md and .html): each claim's verdict per budget, with what was
measured and every variant's numbers, from the claims table (classic_cnns/analysis/claims.py)."""

from __future__ import annotations

import math

import pandas as pd

from classic_cnns.analysis.claims import MEASURES


def pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def budget_words(budget: dict, seeds: list[int], cells: pd.DataFrame) -> str:
    """The budget in words; what the cells' training took is in costs.md (timings are not hashed)."""
    return (
        f"each variant trained {len(seeds)} times (seeds {', '.join(map(str, seeds))}) for {budget['epochs']} "
        f"epoch{'s' if budget['epochs'] != 1 else ''} on {budget['train_limit'] or 'all'} training images"
        + (" (a seeded subset)" if budget["train_limit"] else "")
        + f", validated on {budget['val_limit'] or 'all'} "
        f"and tested on {int(cells['test_images'].iloc[0]):,} test images "
        "(what the training took: [costs.md](costs.md#the-claims-grid))"
    )


def verdict_table(table: pd.DataFrame) -> tuple:
    return (
        "table",
        ["Claim (the notebook's)", "Measured", "Variants: mean ± std (%)", "Difference (points)", "95% CI", "Verdict"],
        [
            [
                r.claim,
                MEASURES[r.measure],
                "; ".join(f"{v} {pct(s['mean'])} ± {pct(s['std'])}" for v, s in r.variants.items()),
                f"{100 * r.difference:+.1f} ({r.reading})",
                f"[{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]",
                r.verdict
                + (f": {r.to_decide}" if r.to_decide else "")
                + (f" (did not learn: {'; '.join(r.did_not_learn)})" if r.did_not_learn else ""),
            ]
            for r in table.itertuples()
        ],
    )


def variants_table(cells: pd.DataFrame, ablations) -> tuple:
    summary = cells.groupby("variant", sort=False).agg(
        seeds=("seed", "count"),
        parameters=("parameters", "first"),
        test=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        speed=("learning_speed", "mean"),
        train=("train_accuracy", "mean"),
        gap=("generalisation_gap", "mean"),
        learned=("outcome", lambda s: int((s == "learned").sum())),
    )
    devices = "device" in cells  # the full-size grid's cells say where they ran (GPU or CPU)
    made_by = "made_by" in cells  # ... and whether the pipeline or a record made them
    return (
        "table",
        [
            "Variant",
            "Changes",
            "Parameters",
            "Test accuracy (%)",
            "Learning speed (%)",
            "Training accuracy (%)",
            "Train - test (points)",
            "Runs that learned",
            *(["Trained on"] if devices else []),
            *(["Made by"] if made_by else []),
        ],
        [
            [
                r.Index,
                ", ".join(f"{k}={x}" for k, x in ablations.changes(r.Index).items()),
                f"{int(r.parameters):,}",
                f"{pct(r.test)} ± {pct(r.test_std)}",
                pct(r.speed),
                pct(r.train),
                pct(r.gap),
                f"{int(r.learned)}/{int(r.seeds)}",
                *([device_counts(cells[cells["variant"] == r.Index])] if devices else []),
                *([makers(cells[cells["variant"] == r.Index])] if made_by else []),
            ]
            for r in summary.itertuples()
        ],
    )


def device_counts(cells: pd.DataFrame) -> str:
    """'GPU: NVIDIA H200 (26 cells), CPU: AMD EPYC (2 cores) (7 cells)': where the cells were trained."""
    return counted(cells["device"].fillna("not recorded").value_counts().items())


MAKERS = {"pipeline": "pipeline stage", "record": "imported record"}


def makers(cells: pd.DataFrame) -> str:
    """'pipeline stage: seeds 1, 2; imported record: seed 3': what made each of a variant's cells."""
    parts = []
    for maker, label in MAKERS.items():
        seeds = sorted(int(s) for s in cells.loc[cells["made_by"] == maker, "seed"])
        if seeds:
            parts.append(f"{label}: seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}")
    return "; ".join(parts)


def counted(counts) -> str:
    """'a (2 cells), b (1 cell)' from (value, count) pairs, in their order."""
    return ", ".join(f"{value} ({n} cell{'s' if n != 1 else ''})" for value, n in counts)


def blocks(budgets: dict[str, tuple[pd.DataFrame, pd.DataFrame, dict]], ablations) -> list[tuple]:
    """The claims document. `budgets`: per budget ("full", "quick"), (claims table, cells, budget);
    the full-size verdicts come first where that grid has run, the quick check after them."""
    out = intro_blocks(budgets) + verdict_blocks(budgets, ablations)
    for size, (_, cells, _) in budgets.items():
        out += [
            ("h2", "Every variant" + (" at full size" if size == "full" else " at the small budget")),
            variants_table(cells, ablations),
        ]
    return out + [("p", KERNEL_NOTE), ("p", RERUN_NOTE)]


KERNEL_NOTE = (
    "Changing the first kernel keeps the notebook's valid padding, so a smaller kernel also leaves larger feature "
    "maps for the layers after it (see the parameter counts): the first-kernel rows compare those whole networks, "
    "not the kernel alone."
)
RERUN_NOTE = (
    "Rerun: `dvc repro ablations/dvc.yaml` (cells already run are cached); the full-size grid: `dvc repro "
    "ablations/full-size/dvc.yaml`, or spread over Dask workers: `python -m classic_cnns.dispatch "
    "ablations/full-size/dvc.yaml --workers N`. Each cell a pipeline stage made is an MLflow run under its "
    "budget's parent run, tagged ablation_variant, ablation_groups and ablation_budget."
)


def intro_blocks(budgets: dict) -> list[tuple]:
    every = pd.concat([cells for _, cells, _ in budgets.values()])
    titles = every["dataset_title"].value_counts()
    sources = counted(sorted(titles.items())) if len(titles) > 1 else ", ".join(titles.index)
    non_official = sorted(set(every.loc[~every["dataset_official"].astype(bool), "dataset_title"]))
    out: list[tuple] = [
        ("h1", "The notebook's claims, measured"),
        (
            "p",
            "Each claim is an experiment: variants of the two networks that differ in one thing, each "
            "trained with several seeds, with each base model's full-run recipe, regularisation included. "
            f"Data, as each cell's results name it: {sources}."
            + (
                f" **Not official data**: {', '.join(non_official)} (see the main report's provenance)."
                if non_official
                else ""
            ),
        ),
        (
            "p",
            "Differences are in percentage points, as mean over seeds; the interval is the 95% Welch "
            "interval of the difference. **supported**: the interval is above 0; **contradicted**: below; "
            "**inconclusive**: it contains 0. Each verdict is of the budget its section names.",
        ),
    ]
    return out


def made_count(cells: pd.DataFrame, maker: str) -> int:
    return int((cells["made_by"] == maker).sum())


def verdict_blocks(budgets: dict, ablations) -> list[tuple]:
    out = []
    if "full" in budgets:
        table, cells, budget = budgets["full"]
        out += [
            ("h2", "At full size"),
            (
                "p",
                f"The grid at `ablations.full_size`: {budget_words(budget, ablations.seeds, cells)}; "
                f"{len(cells)} of {len(ablations.variants) * len(ablations.seeds)} cells: "
                f"{made_count(cells, 'pipeline')} made by the full-size pipeline (`dvc repro "
                "ablations/full-size/dvc.yaml`, an hour per AlexNet cell on a 2-core CPU, minutes on a GPU), "
                f"{made_count(cells, 'record')} from records of cells trained outside DVC "
                "(ablations/records-full/, each with its provenance; *Made by* below says which is which), "
                f"trained on {device_counts(cells)}; where a variant's seeds ran on different devices "
                "(*Trained on* below), its spread includes theirs.",
            ),
            verdict_table(table),
        ]
    table, cells, budget = budgets["quick"]
    out += [
        ("h2", "Quick check (small budget, CPU)" if "full" in budgets else "At a small budget (CPU)"),
        (
            "p",
            f"The grid of `dvc repro ablations/dvc.yaml`: {budget_words(budget, ablations.seeds, cells)}. "
            "Far shorter than a full training: a network still far from fitting its training images here "
            "(see *Training accuracy* below) may rank differently after a full training."
            + (
                " Where the two budgets disagree, the full-size verdict is the one to read."
                if "full" in budgets
                else ""
            ),
        ),
        verdict_table(table),
    ]
    return out
