"""Stage `diagnose`: why did the reference notebook's AlexNet not learn?

    python -m stages.diagnose

Replays the first `diagnose.steps` training steps of `diagnose.model` twice, from the same initial
weights: once with its recipe from params.yaml, once with the notebook's settings
(`diagnose.notebook`), measuring every `diagnose.every` steps (classic_cnns/analysis/diagnose.py).
Writes reports/diagnostics/steps.csv, layers.csv and summary.json.
"""

from __future__ import annotations

import sys

import pandas as pd

from classic_cnns import outputs, paths
from classic_cnns.analysis.diagnose import notebook_config, replay, summarise
from classic_cnns.data.prepared import load_split
from classic_cnns.errors import run_stage
from classic_cnns.params import load_or_exit


def main(argv: list[str]) -> int:
    params = load_or_exit()
    diagnose = params.diagnose
    name = diagnose.model
    if name not in params.models:
        print(
            f"error: params.yaml: 'diagnose.model' is '{name}', not one of models: {', '.join(params.models)}",
            file=sys.stderr,
        )
        return 2
    cfg = params.model(name)
    arrays, meta = load_split(cfg.dataset)
    recipes = {"recipe": cfg, "notebook": notebook_config(diagnose.notebook, cfg)}
    steps, layers = [], []
    for label, recipe in recipes.items():
        s, lay = replay(label, recipe, params.seed, diagnose, arrays, meta)
        steps += s
        layers += lay
    steps_df, layers_df = pd.DataFrame(steps), pd.DataFrame(layers)
    outputs.write_csv(steps_df, paths.DIAGNOSTICS / "steps.csv", index=False, float_format="%.6g")
    outputs.write_csv(layers_df, paths.DIAGNOSTICS / "layers.csv", index=False, float_format="%.6g")
    summary = {"model": name, "probe_images": diagnose.probe_images, **summarise(steps_df, layers_df, recipes)}
    outputs.write_json(paths.DIAGNOSTICS / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
