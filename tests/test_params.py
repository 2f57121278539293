import pytest
import yaml

from classic_cnns.params import ParamsError, flatten, load_params, stage_args
from tests.projects import ROOT, stage


def write(tmp_path, mutate):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.model("lenet5").dataset == "mnist"
    assert params.model("alexnet").dataset == "cifar10"
    flat = flatten(params.models, "models")
    assert flat["models.lenet5.learning_rate"] == params.model("lenet5").learning_rate
    assert flatten(params.data, "data")["data.cifar10.source"] == "official"
    assert params.evaluate.test_time_augmentation == {"lenet5": False, "alexnet": True}


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda p: p["models"]["lenet5"].update(learnig_rate=0.1), "models.lenet5.learnig_rate", "not a known key"),
        (lambda p: p.update(sed=1), "sed", "not a known key"),
        (lambda p: p["models"]["alexnet"].update(epochs="five"), "models.alexnet.epochs", "whole number"),
        (lambda p: p["models"]["alexnet"].update(epochs=2.5), "models.alexnet.epochs", "whole number"),
        (lambda p: p["models"]["lenet5"].update(learning_rate=-1), "models.lenet5.learning_rate", ">="),
        (lambda p: p["models"]["lenet5"].update(optimizer="adamw2"), "models.lenet5.optimizer", "one of"),
        (lambda p: p["models"]["lenet5"].update(devices="two"), "models.lenet5.devices", "whole number or 'all'"),
        (lambda p: p["models"]["lenet5"].update(devices=0), "models.lenet5.devices", ">= 1"),
        (lambda p: p["models"]["lenet5"].update(dataset="imagenet"), "models.lenet5.dataset", "entry of 'data'"),
        (
            lambda p: p["evaluate"]["test_time_augmentation"].pop("lenet5"),
            "evaluate.test_time_augmentation.lenet5",
            "add true or false for each model",
        ),
        (
            lambda p: p["evaluate"]["test_time_augmentation"].update(vgg=True),
            "evaluate.test_time_augmentation.vgg",
            "names no entry of 'models'",
        ),
        (
            lambda p: p["data"].update(shapes={"source": "data/external/s.npz"}),
            "data.shapes",
            "declare title, classes, image_shape",
        ),
        (
            lambda p: p["data"].update(
                shapes={"source": "official", "title": "S", "classes": ["a", "b"], "image_shape": [8, 8, 1]}
            ),
            "data.shapes",
            "not a dataset the pipeline knows",
        ),
        (
            lambda p: p["models"]["lenet5"].update(learning_rate="1e-3"),
            "models.lenet5.learning_rate",
            "YAML reads 1e-3 as text: write it with a dot, e.g. 0.001",
        ),
        (lambda p: p["prepare"].update(val_size=0), "prepare.val_size", ">="),
        (lambda p: p["models"]["lenet5"].pop("architecture"), "models.lenet5.architecture", "missing"),
        (lambda p: p["data"]["mnist"].update(source=""), "data.mnist.source", "non-empty"),
        (lambda p: p.update(seed=True), "seed", "whole number"),
        (lambda p: p["models"]["alexnet"].update(mixed_precision="fast"), "models.alexnet.mixed_precision", "auto"),
    ],
)
def test_bad_params_name_the_key(tmp_path, mutate, key, words):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, mutate))
    assert f"'{key}'" in str(err.value)
    assert words in str(err.value)


def test_a_stage_with_bad_params_fails_before_any_work(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["mnist"]["sorce"] = "x"
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    result = stage("download", "mnist", cwd=project, check=False)
    assert result.returncode == 2
    assert "'data.mnist.sorce' is not a known key" in result.stderr
    assert not (project / "data").exists()


def declared_keys() -> set[str]:
    """Every params key a stage of dvc.yaml or ablations/dvc.yaml declares, foreach/matrix expanded."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = set()
    for path in ("dvc.yaml", "ablations/dvc.yaml"):
        for entry in yaml.safe_load((ROOT / path).read_text())["stages"].values():
            body = entry.get("do", entry)
            names = list(raw[entry["foreach"][2:-1]]) if "foreach" in entry else [None]
            variants = list(raw["ablations"]["variants"]) if "matrix" in entry else [None]
            for key in body.get("params", []):
                for name in names:
                    for variant in variants:
                        k = key.replace("${key}", str(name)).replace("${item.variant}", str(variant))
                        keys.add(k.replace("${diagnose.model}", raw["diagnose"]["model"]))
    return keys


def test_every_knob_of_params_yaml_is_declared_by_a_stage():
    """A knob no stage declares would change nothing DVC sees: `dvc repro` would not rerun anything."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    leaves = sorted(flatten(raw))
    declared = declared_keys()
    undeclared = [leaf for leaf in leaves if not any(leaf == k or leaf.startswith(k + ".") for k in declared)]
    assert not undeclared, undeclared
    # and evaluation-only knobs are not training's: switching them leaves the trainings alone
    train = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]["params"]
    assert not any(k.startswith("evaluate") for k in train)


def test_a_stage_names_the_arguments_it_takes(capsys):
    params = load_params(ROOT / "params.yaml")
    assert stage_args("cell", ["alexnet-tanh", "2"], variant=params.ablations.variants, seed=int).seed == 2
    with pytest.raises(SystemExit) as exit_:
        stage_args("train", ["vgg"], model=params.models)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m stages.train" in err and "invalid choice: 'vgg' (choose from 'lenet5', 'alexnet')" in err
