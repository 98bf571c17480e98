"""Compile and fit: seeds, the tf.data input pipeline, callbacks, schedules and phases.

`train` returns the per-epoch history as plain dicts (epoch, phase, metrics, learning rate).
Transfer learning runs in two phases: the frozen base, then (if `fine_tune` is set) the base
unfrozen from a layer on, recompiled at the low learning rate, continuing the epoch count.
"""

from __future__ import annotations

import contextlib

import keras

from dlzoo.config.experiments import TrainingConfig
from dlzoo.data.splits import Split
from dlzoo.inputs import InputSpec
from dlzoo.records import DATA_LOSS
from dlzoo.train import distributed
from dlzoo.train.shared import FitSettings, make_dataset, make_optimizer, per_sample_loss


def set_seeds(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy and TensorFlow and turns TF's op determinism on or off.

    Off explicitly: the switch is process-wide, and a process that trains twice (a notebook, a
    test session) must not keep an earlier run's setting (Keras then silently drops XLA).
    TensorFlow exports only the "enable" half; the "disable" half is the same private module's.
    """
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def compile_model(
    model: keras.Model, config: TrainingConfig, learning_rate: float, jit_compile: bool = False
) -> None:
    metrics: list = list(config.metrics)
    if model.losses:  # a weight penalty: Keras' loss includes it, so track the loss alone too
        metrics.append(keras.metrics.MeanMetricWrapper(per_sample_loss(config.loss), name=DATA_LOSS))
    model.compile(
        optimizer=make_optimizer(config, learning_rate),
        loss=config.loss,
        metrics=metrics,
        jit_compile=jit_compile,
    )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate used in each epoch to the epoch's logs (schedules included)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def callbacks_for(config: TrainingConfig) -> list[keras.callbacks.Callback]:
    found: list[keras.callbacks.Callback] = [LearningRateLogger()]
    if config.early_stopping is not None:
        stop = config.early_stopping
        found.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor, patience=stop.patience, restore_best_weights=stop.restore_best_weights
            )
        )
    if config.reduce_lr is not None:
        reduce = config.reduce_lr
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=reduce.monitor, factor=reduce.factor, patience=reduce.patience, min_lr=reduce.min_lr
            )
        )
    return found


def train(
    model: keras.Model,
    config: TrainingConfig,
    splits: dict[str, Split],
    spec: InputSpec,
    settings: FitSettings,
) -> list[dict[str, float]]:
    """Fits `model` (one or two phases) and returns one dict per epoch.

    Under a tf.distribute strategy the model must have been built in `strategy.scope()`; a
    multi-worker strategy trains with a custom loop (Keras 3.15's fit fails under it).
    """
    if config.fine_tune is not None and settings.unfreeze is None:
        raise ValueError("training.fine_tune needs the family's unfreeze policy (only transfer has one)")
    if distributed.is_multi_worker(settings.strategy):
        datasets = distributed.distribute(splits, spec, config.batch_size, settings)
        # The custom loop runs this path's phases and callbacks (below) with the same epoch logs.
        return distributed.train(
            model, config, datasets, settings, phases(config), lambda: callbacks_for(config)
        )
    batches = {split: _batches(splits[split], split, spec, config, settings) for split in ("train", "val")}
    history: list[dict[str, float]] = []
    for phase, learning_rate, epochs in phases(config):
        if phase == "fine_tune":
            settings.unfreeze(model, config.fine_tune.from_layer)
        # A new scope per phase (a scope is entered once); recompiling makes new trainable flags count.
        with settings.strategy.scope() if settings.strategy is not None else contextlib.nullcontext():
            compile_model(model, config, learning_rate, settings.jit_compile)
        start = len(history)
        fitted = model.fit(
            batches["train"],
            validation_data=batches["val"],
            initial_epoch=start,
            epochs=start + settings.epochs(epochs),
            callbacks=[*callbacks_for(config), *settings.callbacks],
            shuffle=False,  # the dataset shuffles itself, with the seed
            verbose=settings.verbose,
        )
        history += _rows(fitted, start, phase)
    return history


def _batches(split: Split, name: str, spec: InputSpec, config: TrainingConfig, settings: FitSettings):
    shuffle_seed = settings.seed if name == "train" else None
    return make_dataset(
        split, spec, config.batch_size, reconstruct=settings.reconstruct, shuffle_seed=shuffle_seed
    )


def _rows(fitted: keras.callbacks.History, start: int, phase: str) -> list[dict[str, float]]:
    """Keras' history (one list per metric) as one dict per epoch, numbered across phases."""
    return [
        {
            "epoch": start + offset + 1,
            "phase": phase,
            **{name: float(values[offset]) for name, values in fitted.history.items()},
        }
        for offset in range(len(fitted.epoch))
    ]


def phases(config: TrainingConfig) -> list[tuple[str, float, int]]:
    """(phase, learning rate, epochs): training, then fine-tuning if the config asks for it."""
    found = [("train", config.learning_rate, config.epochs)]
    if config.fine_tune is not None:
        found.append(("fine_tune", config.fine_tune.learning_rate, config.fine_tune.epochs))
    return found


def evaluate(
    model: keras.Model, split: Split, spec: InputSpec, batch_size: int, *, reconstruct: bool = False
) -> dict[str, float]:
    data = make_dataset(split, spec, batch_size, reconstruct=reconstruct, shuffle_seed=None)
    return {name: float(value) for name, value in model.evaluate(data, verbose=0, return_dict=True).items()}
