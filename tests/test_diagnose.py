import json

import pandas as pd
import yaml

from classic_cnns.analysis.diagnose import notebook_config, notebook_overrides
from classic_cnns.params import load_params
from tests.projects import ROOT, stage


def test_the_notebook_recipe_is_the_models_defaults_plus_its_settings():
    params = load_params(ROOT / "params.yaml")
    nb = notebook_config(params.diagnose.notebook, params.model("alexnet"))
    assert (nb.optimizer, nb.learning_rate, nb.batch_size, nb.input_scaling) == ("adam", 0.001, 64, "unit")
    assert (nb.schedule, nb.augment_flip, nb.augment_cutout, nb.label_smoothing, nb.batch_norm) == (
        "constant",
        False,
        0,
        0.0,
        False,
    )


def test_diagnose_measures_both_recipes(prepared_project):
    project = prepared_project
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["diagnose"].update(steps=6, every=3, probe_images=16)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    stage("diagnose", cwd=project)
    out = project / "reports/diagnostics"
    steps = pd.read_csv(out / "steps.csv")
    assert sorted(steps.recipe.unique()) == ["notebook", "recipe"]
    assert steps[steps.recipe == "notebook"].step.tolist() == [0, 3, 6]
    layers = pd.read_csv(out / "layers.csv")
    relu_layers = {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"}
    assert set(layers.layer) == relu_layers
    assert layers.dead_fraction.between(0, 1).all()
    assert (layers.grad_norm >= 0).all()
    summary = json.loads((out / "summary.json").read_text())
    nb = summary["recipes"]["notebook"]
    assert nb["settings"]["input_scaling"] == "unit" and nb["steps"] == 6
    assert set(nb["dead_fraction"]) == relu_layers
    assert summary["ln_classes"] > 2.30


def test_the_notebook_experiment_sets_exactly_the_notebook_recipe():
    """experiments/notebook-alexnet.sh takes its -S arguments from the one spelling in params.yaml."""
    params = load_params(ROOT / "params.yaml")
    cfg = params.model("alexnet")
    args = notebook_overrides(params.diagnose.notebook, "alexnet", cfg)
    assert "-S models.alexnet.optimizer=adam" in args and "-S models.alexnet.input_scaling=unit" in args
    assert "-S models.alexnet.augment_cutout=0" in args and "-S models.alexnet.mixed_precision=false" in args
    assert not [a for a in args if a.endswith("=None")]
    changed = dict(a[3:].split("=", 1) for a in args)
    applied = {k.split(".")[-1]: v for k, v in changed.items()}
    nb = notebook_config(params.diagnose.notebook, cfg)
    for field, value in applied.items():
        assert str(getattr(nb, field)).lower() == value.lower()
