"""Dense autoencoder: encoder and decoder are sub-models, so each can be used on its own."""

from __future__ import annotations

import math

import keras
from keras import layers

from dlzoo.config.experiments import AutoencoderConfig
from dlzoo.inputs import InputSpec
from dlzoo.models.common import model_input, output_layer, rescaled
from dlzoo.models.keras_family import KerasFamily


def build(config: AutoencoderConfig, spec: InputSpec) -> keras.Model:
    size = math.prod(spec.shape)
    inputs = model_input(spec)
    x = layers.Flatten()(rescaled(inputs, spec))
    for units in config.encoder_units:
        x = layers.Dense(units, activation=config.activation)(x)
    encoder = keras.Model(inputs, x, name="encoder")

    code = keras.Input(shape=(config.encoder_units[-1],), name="code")
    y = code
    for units in config.decoder_units:
        y = layers.Dense(units, activation=config.activation)(y)
    # The reconstruction is flat, in [0, 1]: compared with the flattened, rescaled input.
    y = output_layer(size, config.output_activation, name="reconstruction")(y)
    decoder = keras.Model(code, y, name="decoder")

    return keras.Model(inputs, decoder(encoder(inputs)), name="autoencoder")


# Trained to give back its (rescaled, flattened) input: targets are the inputs, scored as reconstruction.
FAMILY = KerasFamily("autoencoder", AutoencoderConfig, build, reconstructs=True)
