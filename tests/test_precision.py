"""`mixed_precision: auto`: bfloat16 where it was measured to train faster (an NVIDIA GPU with
bfloat16 units, a CPU with AMX or AVX-512 BF16), float32 elsewhere (AVX2 only: about 20x slower);
true and false are kept as written."""

import keras
import pytest

from classic_cnns import environment
from classic_cnns.model.recipe import build_compiled
from classic_cnns.params import load_params
from tests.projects import ROOT


@pytest.mark.parametrize(
    "gpu, capability, flags, precision, words",
    [
        (True, (9, 0), set(), "bfloat16", "the GPU computes bfloat16"),
        (True, (7, 5), {"amx_bf16"}, "float32", "compute capability below 8.0"),
        (False, None, {"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}, "bfloat16", "AMX"),
        (False, None, {"avx2", "avx512f", "avx512_bf16"}, "bfloat16", "AVX-512 BF16"),
        (False, None, {"avx2", "avx512f", "fma"}, "float32", "no native bfloat16"),
    ],
)
def test_auto_picks_bfloat16_only_where_it_was_measured_faster(monkeypatch, gpu, capability, flags, precision, words):
    monkeypatch.setattr(environment, "accelerators", lambda: ["Fixture GPU"] if gpu else [])
    monkeypatch.setattr(environment, "gpu_has_bfloat16", lambda: capability >= (8, 0))
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)
    chosen, why = environment.compute_precision("auto")
    assert chosen == precision and why.startswith("auto: ") and words in why
    assert environment.compute_precision(True) == ("bfloat16", "set in params.yaml")
    assert environment.compute_precision(False) == ("float32", "set in params.yaml")


@pytest.mark.parametrize("pays, policy", [(True, "mixed_bfloat16"), (False, "float32")])
def test_the_model_is_built_in_the_precision_auto_chose(monkeypatch, pays, policy):
    monkeypatch.setattr(environment, "bfloat16_pays", lambda: (pays, "fixture"))
    cfg = load_params(ROOT / "params.yaml").model("lenet5").replace(mixed_precision="auto")
    meta = {"shape": [32, 32, 1], "mean": [0.0], "std": [1.0], "classes": list("0123456789")}
    try:
        build_compiled(cfg, meta, 10)
        assert keras.mixed_precision.global_policy().name == policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_this_machine_gets_an_answer_with_its_reason():
    precision, why = environment.compute_precision("auto")
    assert precision in ("bfloat16", "float32") and len(why) > len("auto: ")
