import pytest
import yaml

from stages.params import ParamsError, load_params
from tests.conftest import ROOT, stage


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
    flat = params.as_flat_dict()
    assert flat["models.lenet5.learning_rate"] == params.model("lenet5").learning_rate
    assert flat["data.cifar10.source"] == "official"


@pytest.mark.parametrize("mutate, key, words", [
    (lambda p: p["models"]["lenet5"].update(learnig_rate=0.1), "models.lenet5.learnig_rate", "not a known key"),
    (lambda p: p.update(sed=1), "sed", "not a known key"),
    (lambda p: p["models"]["alexnet"].update(epochs="five"), "models.alexnet.epochs", "whole number"),
    (lambda p: p["models"]["alexnet"].update(epochs=2.5), "models.alexnet.epochs", "whole number"),
    (lambda p: p["models"]["lenet5"].update(learning_rate=-1), "models.lenet5.learning_rate", ">="),
    (lambda p: p["models"]["lenet5"].update(optimizer="adamw2"), "models.lenet5.optimizer", "one of"),
    (lambda p: p["models"]["lenet5"].update(dataset="imagenet"), "models.lenet5.dataset", "one of"),
    (lambda p: p["prepare"].update(val_size=0), "prepare.val_size", ">="),
    (lambda p: p["models"]["lenet5"].pop("architecture"), "models.lenet5.architecture", "missing"),
    (lambda p: p["data"]["mnist"].update(source=""), "data.mnist.source", "non-empty"),
    (lambda p: p.update(seed=True), "seed", "whole number"),
])
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
