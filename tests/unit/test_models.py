"""Model behaviour: every family builds and trains on tiny data; transfer phases; determinism."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlzoo import models
from dlzoo.config.experiments import (
    FAMILY_CONFIGS,
    AutoencoderConfig,
    CnnConfig,
    FineTuneConfig,
    MlpConfig,
    RnnConfig,
    ScratchMlpConfig,
    TrainingConfig,
    TransferConfig,
    TransformerConfig,
)
from dlzoo.inputs import InputSpec
from dlzoo.models.transfer import BASE_NAME
from dlzoo.train import loop
from dlzoo.train.shared import FitSettings

IMAGE = InputSpec((32, 32, 3), "float32", scale=1 / 255)
TEXT = InputSpec((12,), "int32", vocab_size=50)
SEQUENCE = InputSpec((6, 1), "float32")
VECTOR = InputSpec((2,), "float32")
DIGITS = InputSpec((28, 28), "float32", scale=1 / 255)

# family: (tiny model config, input spec, loss, number of outputs)
TINY = {
    "mlp": (MlpConfig((8, 4), "relu", 0.1, 0.0, 0.001, True, 3, "softmax"), VECTOR),
    "cnn": (
        CnnConfig((4, 8), (True, False), 3, 2, "relu", (8,), 0.0, 3, "softmax", "horizontal", 0.1),
        IMAGE,
    ),
    "rnn": (RnnConfig("gru", 4, "tanh", 0.0, 0.0, 8, False, (4,), "relu", 1, "sigmoid"), TEXT),
    "transfer": (TransferConfig(32, 32, 0.2, 2, "softmax", "random"), IMAGE),
    "autoencoder": (AutoencoderConfig((16, 4), (16,), "relu", "sigmoid"), DIGITS),
    "transformer": (TransformerConfig(8, 2, 16, 0.1, 0.1, 1, "sigmoid"), TEXT),
}
# Every registered family's smoke config: the Keras ones above and the NumPy MLP.
SMOKE = {**TINY, "scratch_mlp": (ScratchMlpConfig((8,), "tanh"), VECTOR)}
LOSSES = {"softmax": "sparse_categorical_crossentropy", "sigmoid": "binary_crossentropy"}


def plain_training(loss: str, **changes) -> TrainingConfig:
    metrics = () if loss == "mse" or changes.pop("no_metrics", False) else ("accuracy",)
    config = TrainingConfig("adam", 0.01, loss, metrics, 1, 1, 8, None, None, None, None)
    return dataclasses.replace(config, **changes)


def tiny_data(spec: InputSpec, outputs: int, rng: np.random.Generator, count: int = 24) -> tuple:
    if spec.vocab_size:
        x = rng.integers(0, spec.vocab_size, size=(count, *spec.shape)).astype(np.int32)
        x[:, :3] = 0  # some padding, which the transformer masks
    elif spec.scale:
        x = rng.integers(0, 256, size=(count, *spec.shape)).astype(np.uint8)
    else:
        x = rng.normal(size=(count, *spec.shape)).astype(np.float32)
    y = rng.integers(0, max(outputs, 2), size=count).astype(np.int64)
    return x, y


def test_every_family_has_a_config_and_a_builder():
    assert set(FAMILY_CONFIGS) == set(models.names())
    assert set(SMOKE) == set(models.names())


def test_unknown_family_and_cell_name_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown model family 'resnet'; valid: autoencoder, cnn, mlp, rnn, scratch_mlp, transfer",
    ):
        models.family("resnet")
    config = dataclasses.replace(TINY["rnn"][0], cell="transformer_xl")
    with pytest.raises(
        ValueError, match=r"unknown recurrent cell 'transformer_xl'; valid: simple_rnn, lstm, gru"
    ):
        models.family("rnn").builder(config, TEXT)


@pytest.mark.parametrize("family", list(TINY))
def test_a_keras_builder_returns_an_uncompiled_functional_model(family: str):
    """The builder contract; fitting, saving and exporting are in test_families.py."""
    config, spec = TINY[family]
    model = models.family(family).builder(config, spec)
    assert type(model).__name__ == "Functional"
    assert not model.compiled
    expected = 28 * 28 if models.family(family).reconstructs else config.output_units
    assert model.output_shape == (None, expected)


def test_a_learnable_task_loss_goes_down():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    config = MlpConfig((16,), "relu", 0.0, 0.0, 0.0, False, 1, "sigmoid")
    model = models.family("mlp").builder(config, VECTOR)
    history = loop.train(
        model,
        plain_training("binary_crossentropy", epochs=15, batch_size=32),
        {"train": (x, y), "val": (x[:64], y[:64])},
        VECTOR,
        FitSettings(seed=1, verbose=0),
    )
    losses = [row["loss"] for row in history]
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["accuracy"] > 0.9


def test_a_penalised_sigmoid_model_tracks_its_data_loss_apart():
    """`data_loss` is computed by the Keras loss object, which reconciles (B,) labels with (B, 1)
    outputs (the bare `keras.losses.get` function failed with a rank error here)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = models.family("mlp").builder(MlpConfig((4,), "relu", 0.0, 0.0, 0.01, False, 1, "sigmoid"), VECTOR)
    config = plain_training("binary_crossentropy", epochs=1)
    (row,) = loop.train(
        model, config, {"train": (x, y), "val": (x[:8], y[:8])}, VECTOR, FitSettings(seed=4, verbose=0)
    )
    penalty = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    assert row["val_data_loss"] == pytest.approx(row["val_loss"] - penalty, rel=1e-4)


def _weights_by_layer(model: keras.Model) -> dict[str, list[np.ndarray]]:
    base = model.get_layer(BASE_NAME)
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers}


def test_transfer_phase_one_freezes_the_base_and_phase_two_changes_only_unfrozen_layers(tmp_path):
    # Stand-in "pretrained" weights: a random MobileNetV2 base saved in Keras' weights format.
    keras.utils.set_random_seed(3)
    source = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    weights_file = tmp_path / "base.weights.h5"
    source.save_weights(weights_file)
    model = models.family("transfer").builder(
        TransferConfig(32, 32, 0.2, 2, "softmax", "random"), IMAGE, weights_file=weights_file
    )
    before = _weights_by_layer(model)
    x, y = tiny_data(IMAGE, 2, np.random.default_rng(2), count=32)
    splits = {"train": (x, y), "val": (x[:8], y[:8])}
    first = 100
    config = plain_training("sparse_categorical_crossentropy", fine_tune=FineTuneConfig(first, 0.01, 1))

    phase_one = dataclasses.replace(config, fine_tune=None)
    loop.train(model, phase_one, splits, IMAGE, FitSettings(seed=2, verbose=0))
    after_one = _weights_by_layer(model)
    for name, weights in before.items():
        for old, new in zip(weights, after_one[name], strict=True):
            np.testing.assert_array_equal(old, new, err_msg=f"phase 1 changed base layer {name}")

    # Under the default strategy, as the train stage passes it (a scope per phase, not one reused).
    history = loop.train(
        model,
        config,
        splits,
        IMAGE,
        FitSettings(
            seed=2,
            verbose=0,
            strategy=tf.distribute.get_strategy(),
            unfreeze=models.family("transfer").unfreeze,
        ),
    )
    assert [row["phase"] for row in history] == ["train", "fine_tune"]
    assert [row["epoch"] for row in history] == [1, 2]  # the epoch count continues
    after_two = _weights_by_layer(model)
    layers = model.get_layer(BASE_NAME).layers
    changed = []
    for index, layer in enumerate(layers):
        moved = any(
            not np.array_equal(a, b)
            for a, b in zip(after_one[layer.name], after_two[layer.name], strict=True)
        )
        if index < first:
            assert not moved, f"frozen layer {index} ({layer.name}) changed in phase 2"
        elif moved:
            changed.append(layer.name)
    assert changed, "phase 2 trained none of the unfrozen layers"
    # Called with training=False: BatchNormalization keeps its moving statistics even when unfrozen.
    for layer in layers[first:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(after_one[layer.name][2], after_two[layer.name][2])


def test_same_seed_gives_identical_weights_on_cpu():
    config, spec = TINY["cnn"]
    x, y = tiny_data(spec, 3, np.random.default_rng(4), count=48)
    splits = {"train": (x, y), "val": (x[:8], y[:8])}
    runs = []
    for _ in range(2):
        loop.set_seeds(7, deterministic=True)
        model = models.family("cnn").builder(config, spec)
        loop.train(
            model,
            plain_training("sparse_categorical_crossentropy", epochs=2),
            splits,
            spec,
            FitSettings(seed=7, verbose=0),
        )
        runs.append(model.get_weights())
    for first, second in zip(*runs, strict=True):
        np.testing.assert_array_equal(first, second)


def test_op_determinism_follows_the_latest_call_not_an_earlier_one():
    """The switch is process-wide: a non-deterministic run after a deterministic one turns it off
    (else Keras silently drops XLA for the second run)."""
    from tensorflow.python.framework.config import is_op_determinism_enabled

    loop.set_seeds(1, deterministic=True)
    assert is_op_determinism_enabled()
    loop.set_seeds(1, deterministic=False)
    assert not is_op_determinism_enabled()
