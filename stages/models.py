"""The two networks, in the Keras 3 API only (no backend-specific ops), so the same code runs on
the TensorFlow, JAX and PyTorch backends.

Each model takes raw pixels (0..255, float32) and normalises them itself with the training split's
statistics, so the saved model works on images as they come.
"""
from __future__ import annotations

import keras
from keras import layers


def lenet5(inputs: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """LeNet-5 as in the notebook: tanh, average pooling, 32x32x1 input; 61,706 parameters."""
    x = layers.Conv2D(6, 5, activation="tanh", name="C1")(inputs)  # 28x28x6
    x = layers.AveragePooling2D(2, name="S2")(x)  # 14x14x6
    x = layers.Conv2D(16, 5, activation="tanh", name="C3")(x)  # 10x10x16
    x = layers.AveragePooling2D(2, name="S4")(x)  # 5x5x16
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="tanh", name="C5")(x)
    x = layers.Dense(84, activation="tanh", name="F6")(x)
    return layers.Dense(num_classes, activation="softmax", name="output")(x)


def alexnet(inputs: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """AlexNet adapted to 32x32x3 as in the notebook: five convolutions (the first 11x11 at
    stride 1), three max-pools, two 4096-unit dense layers with dropout 0.5."""
    x = layers.Conv2D(96, 11, strides=1, activation="relu", name="conv1")(inputs)  # 22x22x96
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # 10x10x96
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)  # 4x4x256
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)  # 1x1x256
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5, name="drop6")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    x = layers.Dropout(0.5, name="drop7")(x)
    return layers.Dense(num_classes, activation="softmax", name="output")(x)


ARCHITECTURES = {"lenet5": lenet5, "alexnet": alexnet}


def build(architecture: str, input_shape: tuple[int, int, int], mean: list[float], std: list[float],
          num_classes: int = 10) -> keras.Model:
    inputs = keras.Input(shape=input_shape, dtype="float32", name="pixels")
    x = layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalise")(inputs)
    outputs = ARCHITECTURES[architecture](x, num_classes)
    return keras.Model(inputs, outputs, name=architecture)
