"""Small pieces the builders share."""

from __future__ import annotations

import keras
from keras import layers

from dlzoo.inputs import InputSpec


def model_input(spec: InputSpec) -> keras.KerasTensor:
    return keras.Input(shape=spec.shape, dtype=spec.dtype, name="inputs")


def rescaled(inputs: keras.KerasTensor, spec: InputSpec) -> keras.KerasTensor:
    """Raw pixels in, [0, 1] floats out: the model owns its scaling, so a server sends raw pixels."""
    return layers.Rescaling(spec.scale, name="rescale")(inputs) if spec.scale else inputs


def output_layer(units: int, activation: str, name: str = "outputs") -> layers.Dense:
    # float32 even under mixed precision: softmax/sigmoid and the loss need the range.
    return layers.Dense(units, activation=activation, name=name, dtype="float32")
