"""What every training loop shares: a split's tf.data pipeline, the optimiser and the loss.

Keras' `fit` (dlzoo.train.loop) and the multi-worker custom loop (dlzoo.train.distributed) both build
on this module, so neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from dlzoo.config.experiments import TrainingConfig
from dlzoo.data.splits import Split
from dlzoo.inputs import InputSpec


@dataclass(frozen=True)
class FitSettings:
    """How to fit, besides the model, its config and its data: what both training loops read."""

    seed: int  # shuffles the training data
    max_epochs: int | None = None  # per phase: the demo profile's cap
    reconstruct: bool = False  # the targets are the inputs (autoencoder)
    callbacks: Sequence[keras.callbacks.Callback] = ()  # besides the config's own (MLflow logging)
    verbose: int = 2
    jit_compile: bool = False
    strategy: tf.distribute.Strategy | None = None  # the model was built in its scope
    unfreeze: Callable[[keras.Model, int], None] | None = None  # the family's phase-2 policy

    def epochs(self, configured: int) -> int:
        return min(configured, self.max_epochs) if self.max_epochs else configured


OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def make_dataset(
    split: Split, spec: InputSpec, batch_size: int, *, reconstruct: bool, shuffle_seed: int | None
) -> tf.data.Dataset:
    """Batches of (inputs, targets). An autoencoder's targets are its own rescaled, flat inputs."""
    x, y = split
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    input_dtype = tf.int32 if spec.dtype == "int32" else tf.float32

    def to_model_types(inputs, targets):
        inputs = tf.cast(inputs, input_dtype)
        if reconstruct:
            return inputs, tf.reshape(inputs, [-1]) * (spec.scale or 1.0)
        return inputs, tf.cast(targets, tf.float32 if targets.dtype.is_floating else tf.int64)

    dataset = dataset.map(to_model_types, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_optimizer(config: TrainingConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    rate = learning_rate
    if config.lr_schedule is not None:
        schedule = config.lr_schedule
        rate = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, schedule.decay_steps, schedule.decay_rate, staircase=schedule.staircase
        )
    return OPTIMIZERS[config.optimizer](learning_rate=rate)


# The loss classes behind the config's names: what `compile(loss=name)` computes. The bare
# functions (`keras.losses.get(name)`) do not reconcile (B,) targets with (B, 1) outputs.
LOSSES = {
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "mse": keras.losses.MeanSquaredError,
}


def per_sample_loss(name: str) -> keras.losses.Loss:
    """The config's loss as a Keras loss object that returns one value per sample."""
    return LOSSES[name](reduction=None)
