"""The two networks, in the Keras 3 API only (no backend-specific ops), so the same code runs on
the TensorFlow, JAX and PyTorch backends.

Each model takes raw pixels (0..255, float32) and normalises them itself with the training split's
statistics, so the saved model works on images as they come. The layer stacks are the reference
notebook's; `batch_norm` and `kernel_initializer` are explicit additions, off by default.
"""
from __future__ import annotations

import keras
from keras import layers


class Blocks:
    """Conv and dense blocks with the model's options: with batch_norm, each conv/dense is
    followed by BatchNormalization before its activation (and loses its now-redundant bias)."""

    def __init__(self, batch_norm: bool = False, kernel_initializer: str = "glorot_uniform"):
        self.batch_norm, self.init = batch_norm, kernel_initializer

    def _finish(self, x, name: str, activation: str):
        if not self.batch_norm:
            return x
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_act")(x)

    def conv(self, x, filters: int, size: int, name: str, activation: str, **kwargs):
        x = layers.Conv2D(filters, size, name=name, kernel_initializer=self.init,
                          activation=None if self.batch_norm else activation,
                          use_bias=not self.batch_norm, **kwargs)(x)
        return self._finish(x, name, activation)

    def dense(self, x, units: int, name: str, activation: str):
        x = layers.Dense(units, name=name, kernel_initializer=self.init,
                         activation=None if self.batch_norm else activation, use_bias=not self.batch_norm)(x)
        return self._finish(x, name, activation)


def lenet5(x, num_classes: int, b: Blocks):
    """LeNet-5 as in the notebook: tanh, average pooling, 32x32x1 input; 61,706 parameters."""
    x = b.conv(x, 6, 5, "C1", "tanh")  # 28x28x6
    x = layers.AveragePooling2D(2, name="S2")(x)  # 14x14x6
    x = b.conv(x, 16, 5, "C3", "tanh")  # 10x10x16
    x = layers.AveragePooling2D(2, name="S4")(x)  # 5x5x16
    x = layers.Flatten(name="flatten")(x)
    x = b.dense(x, 120, "C5", "tanh")
    x = b.dense(x, 84, "F6", "tanh")
    return layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)


def alexnet(x, num_classes: int, b: Blocks):
    """AlexNet adapted to 32x32x3 as in the notebook: five convolutions (the first 11x11 at
    stride 1), three max-pools, two 4096-unit dense layers with dropout 0.5."""
    x = b.conv(x, 96, 11, "conv1", "relu", strides=1)  # 22x22x96
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # 10x10x96
    x = b.conv(x, 256, 5, "conv2", "relu", padding="same")
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)  # 4x4x256
    x = b.conv(x, 384, 3, "conv3", "relu", padding="same")
    x = b.conv(x, 384, 3, "conv4", "relu", padding="same")
    x = b.conv(x, 256, 3, "conv5", "relu", padding="same")
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)  # 1x1x256
    x = layers.Flatten(name="flatten")(x)
    x = b.dense(x, 4096, "fc6", "relu")
    x = layers.Dropout(0.5, name="drop6")(x)
    x = b.dense(x, 4096, "fc7", "relu")
    x = layers.Dropout(0.5, name="drop7")(x)
    return layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)


ARCHITECTURES = {"lenet5": lenet5, "alexnet": alexnet}


def build(architecture: str, input_shape: tuple[int, int, int], mean: list[float], std: list[float],
          num_classes: int = 10, batch_norm: bool = False,
          kernel_initializer: str = "glorot_uniform") -> keras.Model:
    inputs = keras.Input(shape=input_shape, dtype="float32", name="pixels")
    x = layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalise")(inputs)
    outputs = ARCHITECTURES[architecture](x, num_classes, Blocks(batch_norm, kernel_initializer))
    return keras.Model(inputs, outputs, name=architecture)


def multiply_adds(layer) -> int:
    """Multiply-accumulates one image costs in this layer's forward pass (conv and dense only)."""
    if isinstance(layer, layers.Conv2D):
        h, w, c_out = layer.output.shape[1:]
        kh, kw = layer.kernel_size
        return int(h * w * c_out * kh * kw * layer.input.shape[-1])
    if isinstance(layer, layers.Dense):
        return int(layer.input.shape[-1] * layer.units)
    return 0


def layer_table(model: keras.Model):
    """One row per layer: name, type, activation, output shape, parameters, multiply-adds."""
    import pandas as pd

    rows = []
    for layer in model.layers[1:]:  # skip the Input
        activation = getattr(layer, "activation", None)
        rows.append({
            "layer": layer.name,
            "type": type(layer).__name__,
            "activation": getattr(activation, "__name__", "") if activation else "",
            "output_shape": "x".join(str(d) for d in layer.output.shape[1:]),
            "parameters": layer.count_params(),
            "multiply_adds": multiply_adds(layer),
        })
    return pd.DataFrame(rows)
