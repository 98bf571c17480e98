"""Recurrent networks: SimpleRNN on the sine wave, LSTM and GRU on IMDB."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from dlzoo import runtime
from dlzoo.config.experiments import RnnConfig, TrainSettings
from dlzoo.errors import InvalidInput
from dlzoo.inputs import InputSpec
from dlzoo.models.common import model_input, output_layer
from dlzoo.models.family import Environment
from dlzoo.models.keras_family import KerasFamily

CELLS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def build(config: RnnConfig, spec: InputSpec) -> keras.Model:
    if config.cell not in CELLS:
        raise InvalidInput(f"unknown recurrent cell {config.cell!r}; valid: {', '.join(CELLS)}")
    inputs = model_input(spec)
    x = inputs
    if config.embedding_dim:
        if spec.vocab_size is None:
            raise InvalidInput("model.embedding_dim needs token ids as inputs, but the data are not text")
        x = layers.Embedding(
            spec.vocab_size, config.embedding_dim, mask_zero=config.mask_padding, name="embedding"
        )(x)
    # Keras' cuDNN LSTM/GRU asserts that masks are right-padded and fails inside `fit` on
    # pre-padded ids; such data keep the generic kernel (masked models read post-padded data).
    cudnn = "auto" if not (config.mask_padding and spec.padding == "pre") else False
    recurrent = CELLS[config.cell]
    options = {"use_cudnn": cudnn} if recurrent is not layers.SimpleRNN else {}
    x = recurrent(
        config.units,
        activation=config.activation,
        dropout=config.dropout,
        recurrent_dropout=config.recurrent_dropout,
        name=config.cell,
        **options,
    )(x)
    for units in config.dense_units:
        x = layers.Dense(units, activation=config.dense_activation)(x)
    outputs = output_layer(config.output_units, config.output_activation)(x)
    return keras.Model(inputs, outputs, name=config.cell)


@dataclass(frozen=True)
class RnnFamily(KerasFamily):
    def adapt(self, config: RnnConfig, settings: TrainSettings, environment: Environment, demo: bool):
        return runtime.for_device(config, settings, environment.device != "CPU")


FAMILY = RnnFamily("rnn", RnnConfig, build)
