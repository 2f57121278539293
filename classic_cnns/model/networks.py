"""The two networks, in the Keras 3 API only (no backend-specific ops), so the same code runs on
the TensorFlow, JAX and PyTorch backends.

Each model takes raw pixels (0..255, float32) and normalises them itself with the training split's
statistics, so the saved model works on images as they come. The layer stacks are the reference
notebook's; `batch_norm` and `kernel_initializer` are explicit additions, off by default.
`activation`, `pooling`, `dropout` and `first_kernel` default to each architecture's own (see
DEFAULTS); the claims grid (classic_cnns/analysis/grid.py) changes them one at a time.
"""

from __future__ import annotations

import keras
from keras import layers

TITLES = {"lenet5": "LeNet-5", "alexnet": "AlexNet"}

# Each architecture's own choices, as in the notebook.
DEFAULTS = {
    "lenet5": {"activation": "tanh", "pooling": "average", "dropout": 0.0, "first_kernel": 5},
    "alexnet": {"activation": "relu", "pooling": "max", "dropout": 0.5, "first_kernel": 11},
}
POOLING = {"average": layers.AveragePooling2D, "max": layers.MaxPooling2D}


class Blocks:
    """Conv, pool, dense and dropout blocks with the model's options. With batch_norm, each
    conv/dense is followed by BatchNormalization before its activation (and loses its bias);
    dropout 0 adds no layer at all."""

    def __init__(
        self,
        batch_norm: bool = False,
        kernel_initializer: str = "glorot_uniform",
        activation: str = "relu",
        pooling: str = "max",
        dropout: float = 0.0,
        first_kernel: int = 5,
    ):
        self.batch_norm, self.init = batch_norm, kernel_initializer
        self.activation, self.pooling, self.dropout, self.first_kernel = activation, pooling, dropout, first_kernel

    def pool(self, x, size: int, name: str, strides: int | None = None):
        return POOLING[self.pooling](size, strides=strides, name=name)(x)

    def drop(self, x, name: str):
        return layers.Dropout(self.dropout, name=name)(x) if self.dropout else x

    def _finish(self, x, name: str, activation: str):
        if not self.batch_norm:
            return x
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation(activation, name=f"{name}_act")(x)

    def conv(self, x, filters: int, size: int, name: str, **kwargs):
        activation = self.activation
        x = layers.Conv2D(
            filters,
            size,
            name=name,
            kernel_initializer=self.init,
            activation=None if self.batch_norm else activation,
            use_bias=not self.batch_norm,
            **kwargs,
        )(x)
        return self._finish(x, name, activation)

    def dense(self, x, units: int, name: str):
        activation = self.activation
        x = layers.Dense(
            units,
            name=name,
            kernel_initializer=self.init,
            activation=None if self.batch_norm else activation,
            use_bias=not self.batch_norm,
        )(x)
        return self._finish(x, name, activation)


def lenet5(x, num_classes: int, b: Blocks):
    """LeNet-5 as in the notebook: tanh, average pooling, 32x32x1 input; 61,706 parameters."""
    x = b.conv(x, 6, b.first_kernel, "C1")  # 28x28x6
    x = b.pool(x, 2, "S2")  # 14x14x6
    x = b.conv(x, 16, 5, "C3")  # 10x10x16
    x = b.pool(x, 2, "S4")  # 5x5x16
    x = layers.Flatten(name="flatten")(x)
    x = b.drop(b.dense(x, 120, "C5"), "drop5")
    x = b.drop(b.dense(x, 84, "F6"), "drop6")
    return layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)


def alexnet(x, num_classes: int, b: Blocks, stride: int = 1, padding: str = "same", groups: int = 1):
    """AlexNet adapted to 32x32x3 as in the notebook: five convolutions (the first 11x11 at
    stride 1), three max-pools, two 4096-unit dense layers with dropout 0.5. `stride` (of the
    first convolution), `padding` (of convolutions 2-5) and `groups` (of conv2, conv4, conv5, one
    per GPU) give the ImageNet versions (alexnet_imagenet)."""
    x = b.conv(x, 96, b.first_kernel, "conv1", strides=stride)  # 22x22x96
    x = b.pool(x, 3, "pool1", strides=2)  # 10x10x96
    x = b.conv(x, 256, 5, "conv2", padding=padding, groups=groups)
    x = b.pool(x, 3, "pool2", strides=2)  # 4x4x256
    x = b.conv(x, 384, 3, "conv3", padding=padding)
    x = b.conv(x, 384, 3, "conv4", padding=padding, groups=groups)
    x = b.conv(x, 256, 3, "conv5", padding=padding, groups=groups)
    x = b.pool(x, 3, "pool3", strides=2)  # 1x1x256
    x = layers.Flatten(name="flatten")(x)
    x = b.drop(b.dense(x, 4096, "fc6"), "drop6")
    x = b.drop(b.dense(x, 4096, "fc7"), "drop7")
    return layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)


ARCHITECTURES = {"lenet5": lenet5, "alexnet": alexnet}


def alexnet_imagenet(variant: str) -> keras.Model:
    """AlexNet for ImageNet (1000 classes), untrained, for comparing layer tables. 'notebook': the
    reference notebook's, 224x224x3 with valid padding throughout, which shrinks the maps to 1x1x256
    before the dense layers (25,678,184 parameters). 'krizhevsky': Krizhevsky et al. (2012),
    227x227x3, padded convolutions 2-5 (maps 55/27/13/13/13, 6x6x256 before the dense layers) and
    conv2, conv4 and conv5 split in two groups, one per GPU (60,965,224 parameters; its local
    response normalisation has no weights and is left out)."""
    krizhevsky = variant == "krizhevsky"
    side = 227 if krizhevsky else 224
    inputs = keras.Input(shape=(side, side, 3), name="pixels")
    outputs = alexnet(
        inputs,
        1000,
        Blocks(activation="relu", pooling="max", dropout=0.5, first_kernel=11),
        stride=4,
        padding="same" if krizhevsky else "valid",
        groups=2 if krizhevsky else 1,
    )
    return keras.Model(inputs, outputs, name=f"alexnet_imagenet_{variant}")


def build(
    architecture: str,
    input_shape: tuple[int, int, int],
    mean: list[float],
    std: list[float],
    num_classes: int = 10,
    batch_norm: bool = False,
    kernel_initializer: str = "glorot_uniform",
    **choices,
) -> keras.Model:
    """`choices` (activation, pooling, dropout, first_kernel) left out or None take the
    architecture's own from DEFAULTS."""
    unknown = set(choices) - set(DEFAULTS[architecture])
    if unknown:
        raise TypeError(f"unknown model options: {', '.join(sorted(unknown))}")
    own = {k: v if choices.get(k) is None else choices[k] for k, v in DEFAULTS[architecture].items()}
    inputs = keras.Input(shape=input_shape, dtype="float32", name="pixels")
    x = layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalise")(inputs)
    outputs = ARCHITECTURES[architecture](x, num_classes, Blocks(batch_norm, kernel_initializer, **own))
    return keras.Model(inputs, outputs, name=architecture)


def multiply_adds(layer) -> int:
    """Multiply-accumulates one image costs in this layer's forward pass (conv and dense only)."""
    if isinstance(layer, layers.Conv2D):
        h, w, c_out = layer.output.shape[1:]
        kh, kw = layer.kernel_size
        return int(h * w * c_out * kh * kw * layer.input.shape[-1] // layer.groups)
    if isinstance(layer, layers.Dense):
        return int(layer.input.shape[-1] * layer.units)
    return 0


def layer_table(model: keras.Model):
    """One row per layer: name, type, activation, output shape, parameters, multiply-adds."""
    import pandas as pd

    rows = []
    for layer in model.layers[1:]:  # skip the Input
        activation = getattr(layer, "activation", None)
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "activation": getattr(activation, "__name__", "") if activation else "",
                "output_shape": "x".join(str(d) for d in layer.output.shape[1:]),
                "parameters": layer.count_params(),
                "multiply_adds": multiply_adds(layer),
            }
        )
    return pd.DataFrame(rows)
