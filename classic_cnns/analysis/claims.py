"""The notebook's claims as contrasts between grid variants, with their statistics and the claims
table: each claim's measure, the mean ± std over seeds per variant, the 95% confidence interval of
the difference and a verdict.

Each claim is a contrast between variants that the claim says is positive: e.g. ReLU's learning
speed minus tanh's. Its interval is Welch's: the contrast's standard error from each variant's own
variance over seeds, with Welch-Satterthwaite degrees of freedom. The verdict is "supported" when
the whole interval is above 0, "contradicted" when it is below, and "inconclusive" otherwise,
with the number of seeds that would make an interval that narrow exclude 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

MEASURES = {
    "learning_speed": "learning speed: mean validation accuracy over the epochs (area under the learning curve)",
    "generalisation_gap": "overfitting: training accuracy minus test accuracy, both without dropout or augmentation",
    "test_accuracy": "test accuracy",
}


@dataclass(frozen=True)
class Claim:
    group: str  # what the MLflow runs are tagged with
    claim: str  # the notebook's claim, as issue 5 quotes it
    measure: str  # a key of MEASURES
    contrast: dict[str, float]  # variant -> weight; the claim says the weighted sum is > 0
    reading: str  # what a positive contrast means, in words


CLAIMS = [
    Claim(
        "relu-vs-tanh",
        "ReLU trains faster than tanh (no vanishing gradients) -- AlexNet",
        "learning_speed",
        {"alexnet": 1, "alexnet-tanh": -1},
        "AlexNet with ReLU minus with tanh",
    ),
    Claim(
        "relu-vs-tanh",
        "ReLU trains faster than tanh (no vanishing gradients) -- LeNet-5",
        "learning_speed",
        {"lenet5-relu-avg": 1, "lenet5-tanh-avg": -1},
        "LeNet-5 with ReLU minus with tanh",
    ),
    Claim(
        "dropout",
        "Dropout prevents overfitting",
        "generalisation_gap",
        {"alexnet-no-dropout": 1, "alexnet": -1},
        "AlexNet's gap without dropout minus with dropout 0.5",
    ),
    Claim(
        "pooling",
        "Max pooling works better than average pooling -- tanh LeNet-5",
        "test_accuracy",
        {"lenet5-tanh-max": 1, "lenet5-tanh-avg": -1},
        "max minus average pooling",
    ),
    Claim(
        "pooling",
        "Max pooling works better than average pooling -- ReLU LeNet-5",
        "test_accuracy",
        {"lenet5-relu-max": 1, "lenet5-relu-avg": -1},
        "max minus average pooling",
    ),
    Claim(
        "capacity",
        "LeNet-5's small capacity cannot handle complex data like CIFAR-10, while the deeper AlexNet can",
        "test_accuracy",
        {"alexnet": 1, "lenet5-cifar10": -1},
        "AlexNet minus LeNet-5 on CIFAR-10",
    ),
    Claim(
        "capacity",
        "... and it is the data's complexity that needs the capacity "
        "(AlexNet's lead is larger on CIFAR-10 than on MNIST)",
        "test_accuracy",
        {"alexnet": 1, "lenet5-cifar10": -1, "alexnet-mnist": -1, "lenet5-tanh-avg": 1},
        "AlexNet's lead over LeNet-5 on CIFAR-10 minus its lead on MNIST",
    ),
    Claim(
        "first-kernel",
        "AlexNet's large first kernels capture more global features (11x11 vs 5x5)",
        "test_accuracy",
        {"alexnet": 1, "alexnet-kernel5": -1},
        "11x11 minus 5x5 first kernel",
    ),
    Claim(
        "first-kernel",
        "AlexNet's large first kernels capture more global features (11x11 vs 3x3)",
        "test_accuracy",
        {"alexnet": 1, "alexnet-kernel3": -1},
        "11x11 minus 3x3 first kernel",
    ),
]


def contrast_interval(samples: dict[str, list[float]], weights: dict[str, float], level: float = 0.95) -> dict:
    """Estimate, standard error, Welch-Satterthwaite df and the `level` interval of
    sum(w * mean(samples[v])). With fewer than 2 samples of some variant there is no interval."""
    estimate = sum(w * float(pd.Series(samples[v]).mean()) for v, w in weights.items())
    if any(len(samples[v]) < 2 for v in weights):
        return {"estimate": estimate, "se": math.nan, "df": math.nan, "low": math.nan, "high": math.nan}
    parts = {v: w * w * float(pd.Series(samples[v]).var(ddof=1)) / len(samples[v]) for v, w in weights.items()}
    var = sum(parts.values())
    if var == 0:
        return {"estimate": estimate, "se": 0.0, "df": math.inf, "low": estimate, "high": estimate}
    df = var**2 / sum(p**2 / (len(samples[v]) - 1) for v, p in parts.items() if p > 0)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(var)
    return {"estimate": estimate, "se": math.sqrt(var), "df": df, "low": estimate - half, "high": estimate + half}


def verdict(interval: dict, seeds: int) -> tuple[str, str]:
    """(verdict, what would decide it) from a contrast's interval, in the measure's units."""
    low, high, est = interval["low"], interval["high"], interval["estimate"]
    if math.isnan(low):
        return "inconclusive", "needs at least 2 seeds per variant for an interval"
    if low > 0:
        return "supported", ""
    if high < 0:
        return "contradicted", ""
    if abs(est) < 1e-3:
        return "inconclusive", (
            "no difference at this budget (under 0.1 points); a longer budget "
            "(more epochs and images, see README) would show whether one appears"
        )
    half = (high - low) / 2
    needed = math.ceil(seeds * (half / abs(est)) ** 2) + 1
    return "inconclusive", (
        f"if the difference of {100 * est:+.1f} points is real, about {needed} seeds per "
        f"variant would resolve it at this budget; or a longer budget"
    )


def claims_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per claim whose variants are all in `cells`: measure, per-variant mean ± std, the
    contrast's 95% interval (in the measure's units, fractions) and the verdict."""
    rows = []
    for claim in CLAIMS:
        if not set(claim.contrast) <= set(cells["variant"]):
            continue
        samples = {v: cells.loc[cells["variant"] == v, claim.measure].astype(float).tolist() for v in claim.contrast}
        interval = contrast_interval(samples, claim.contrast)
        seeds = min(len(s) for s in samples.values())
        word, decide = verdict(interval, seeds)
        outcomes = cells[cells["variant"].isin(list(claim.contrast)) & (cells["outcome"] != "learned")]
        rows.append(
            {
                "group": claim.group,
                "claim": claim.claim,
                "measure": claim.measure,
                "reading": claim.reading,
                "variants": {
                    v: {
                        "mean": float(pd.Series(s).mean()),
                        "std": float(pd.Series(s).std(ddof=1)) if len(s) > 1 else math.nan,
                        "n": len(s),
                    }
                    for v, s in samples.items()
                },
                "difference": interval["estimate"],
                "ci_low": interval["low"],
                "ci_high": interval["high"],
                "df": interval["df"],
                "seeds": seeds,
                "verdict": word,
                "to_decide": decide,
                "did_not_learn": sorted(f"{r.variant} seed {r.seed}: {r.outcome}" for r in outcomes.itertuples()),
            }
        )
    return pd.DataFrame(rows)
