import numpy as np
import pytest

from classic_cnns.model.networks import build, layer_table


def test_lenet5_has_the_papers_shapes_and_61706_parameters():
    model = build("lenet5", (32, 32, 1), mean=[33.0], std=[78.0])
    table = layer_table(model).set_index("layer")
    assert model.count_params() == 61_706
    assert table["parameters"].sum() == 61_706
    assert table.loc[["C1", "S2", "C3", "S4", "C5", "F6", "output"], "output_shape"].tolist() == [
        "28x28x6",
        "14x14x6",
        "10x10x16",
        "5x5x16",
        "120",
        "84",
        "10",
    ]
    assert set(table.loc[["C1", "C3", "C5", "F6"], "activation"]) == {"tanh"}
    assert table.loc["S2", "type"] == "AveragePooling2D"


def test_alexnet_for_32x32_follows_the_notebook():
    model = build("alexnet", (32, 32, 3), mean=[120.0] * 3, std=[60.0] * 3)
    table = layer_table(model).set_index("layer")
    assert table.loc[["conv1", "pool1", "conv2", "pool2", "conv5", "pool3"], "output_shape"].tolist() == [
        "22x22x96",
        "10x10x96",
        "10x10x256",
        "4x4x256",
        "4x4x256",
        "1x1x256",
    ]
    assert table.loc["conv1", "parameters"] == 11 * 11 * 3 * 96 + 96
    assert table.loc["fc7", "parameters"] == 4096 * 4096 + 4096
    assert table.loc[["drop6", "drop7"], "type"].tolist() == ["Dropout", "Dropout"]
    assert model.count_params() == 21_622_154


def test_models_normalise_raw_pixels_themselves():
    model = build("lenet5", (32, 32, 1), mean=[100.0], std=[50.0])
    normalise = model.get_layer("normalise")
    out = np.asarray(normalise(np.full((1, 32, 32, 1), 150.0, dtype="float32")))
    assert out == pytest.approx(np.ones_like(out), abs=1e-5)


def test_multiply_adds_per_image():
    lenet = layer_table(build("lenet5", (32, 32, 1), [0.0], [1.0])).set_index("layer")
    assert lenet.loc["C1", "multiply_adds"] == 28 * 28 * 6 * 25
    assert lenet.loc["C3", "multiply_adds"] == 10 * 10 * 16 * 25 * 6
    assert lenet.loc["C5", "multiply_adds"] == 400 * 120
    alex = layer_table(build("alexnet", (32, 32, 3), [0.0] * 3, [1.0] * 3)).set_index("layer")
    assert alex.loc["conv1", "multiply_adds"] == 22 * 22 * 96 * 121 * 3
    assert alex.loc["conv2", "multiply_adds"] == 10 * 10 * 256 * 25 * 96


def test_batch_norm_is_an_explicit_addition():
    plain = build("alexnet", (32, 32, 3), [0.0] * 3, [1.0] * 3)
    with_bn = build("alexnet", (32, 32, 3), [0.0] * 3, [1.0] * 3, batch_norm=True, kernel_initializer="he_normal")
    names = [layer.name for layer in with_bn.layers]
    assert "conv1_bn" in names and "fc7_bn" in names
    assert not any(layer.name.endswith("_bn") for layer in plain.layers)
    assert with_bn.get_layer("conv1").activation.__name__ == "linear"
    assert with_bn.get_layer("conv1_act").activation.__name__ == "relu"


def test_a_saved_model_is_byte_stable_and_loads(tmp_path):
    """Two saves of the same weights give the same bytes (so the same DVC hash): no save date."""
    import time

    import keras

    from classic_cnns import outputs

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    outputs.save_keras_model(model, tmp_path / "a.keras")
    time.sleep(1.1)  # Keras records the second it saved at
    outputs.save_keras_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.models.load_model(tmp_path / "b.keras")
    x = np.ones((3, 4), "float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]
