"""The architecture families: each a Functional-API builder (no compile, fit or I/O).

A builder takes the family's model config and an InputSpec and returns an uncompiled
keras.Model. Adding a family is one module plus one line here (and its config class in
dlzoo.config.experiments). The NumPy MLP is not a Keras family: see dlzoo.scratch.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from dlzoo.models import autoencoder, cnn, mlp, rnn, transfer, transformer

FAMILIES: dict[str, Callable[..., keras.Model]] = {
    "mlp": mlp.build,
    "cnn": cnn.build,
    "rnn": rnn.build,
    "transfer": transfer.build,
    "autoencoder": autoencoder.build,
    "transformer": transformer.build,
}


def builder(family: str) -> Callable[..., keras.Model]:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[family]
