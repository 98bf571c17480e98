"""Multi-worker training with a custom loop over `strategy.run`.

Keras 3.15's `fit()` fails under MultiWorkerMirroredStrategy (`Attempt to convert a value
(PerReplica...)`, then `Invalid reduction dimension 0`), while a custom loop works unpatched:
every worker computes gradients on its shard of each global batch, the strategy all-reduces
them, and every worker applies the same update, so all end with identical weights.

The loop does what `fit` (dlzoo.train.loop) does, so the history and the MLflow records read the same:
- the loss is the Keras loss object without reduction: each replica sums its per-sample losses and
  divides by the step's global sample count (all-reduced), so a last partial batch weighs what it
  weighs in one process; the weight penalty (`model.losses`) is split evenly between the replicas;
- the metrics are those `compile` picks for the config's names (and `data_loss` beside a penalty),
  built in the strategy's scope: sync-on-read sums, which reading all-reduces across the workers;
- the phases and callbacks are `fit`'s own (`loop.phases`, `loop.callbacks_for`): fine-tuning
  unfreezes through the family's hook and builds a new optimizer in the scope; early stopping,
  ReduceLROnPlateau and the learning-rate and MLflow loggers get the same epoch logs as under `fit`.
  Every worker computes the same logs, so all of them stop, lower the rate or restore the best
  weights at the same epoch.
Refused with a message: mixed precision (it needs loss scaling this loop lacks) and `jit_compile`
(the loop's steps are not XLA-compiled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from dlzoo.config.experiments import TrainingConfig
from dlzoo.data.splits import Split
from dlzoo.errors import DlzooError
from dlzoo.inputs import InputSpec
from dlzoo.records import DATA_LOSS
from dlzoo.runtime import all_layers
from dlzoo.train.shared import FitSettings, make_dataset, make_optimizer, per_sample_loss

SUM = tf.distribute.ReduceOp.SUM
# Monitored metrics that improve upwards. `fit`'s callbacks find the direction among the compiled
# metrics; the loop compiles none, so it tells them (losses and errors go down).
RISING = {"accuracy"}
MONITORING = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau)


def check_supported(config: TrainingConfig, settings: FitSettings) -> None:
    if settings.jit_compile:
        raise DlzooError(
            "train.distribute: multi_worker does not XLA-compile its custom loop's steps; "
            "set train.jit_compile to false"
        )
    if keras.mixed_precision.global_policy().name != "float32":
        raise DlzooError(
            "train.distribute: multi_worker does not support mixed_precision yet (its custom loop has "
            "no loss scaling); set mixed_precision to false"
        )


def train(
    model: keras.Model,
    config: TrainingConfig,
    datasets: dict[str, Any],
    settings: FitSettings,
    phases: Sequence[tuple[str, float, int]],
    callbacks_for: Callable[[], list[keras.callbacks.Callback]],
) -> list[dict[str, float]]:
    """Trains `model` (built in `settings.strategy.scope()`) on `distribute(...)`'s batches, phase by
    phase as `fit` does (`phases` and a fresh `callbacks_for()` per phase are the fit path's), and
    returns one dict per epoch, like `fit`'s history."""
    check_supported(config, settings)
    synchronize_batch_norm(model)
    history: list[dict[str, float]] = []
    for phase, learning_rate, epochs in phases:
        if phase == "fine_tune":
            settings.unfreeze(model, config.fine_tune.from_layer)
        # A new optimizer and new traced steps: the trainable variables may have changed.
        loop = CustomLoop(model, config, learning_rate, settings, datasets)
        callbacks = [*callbacks_for(), *settings.callbacks]
        start = len(history)
        history += loop.fit(phase, start, start + settings.epochs(epochs), callbacks)
    return history


def distribute(
    splits: dict[str, Split], spec: InputSpec, batch_size: int, settings: FitSettings
) -> dict[str, Any]:
    """Train and val batches, sharded by data: each worker takes its part of every global batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return {
        name: settings.strategy.experimental_distribute_dataset(
            make_dataset(
                splits[name],
                spec,
                batch_size,  # global: the workers split each batch between them
                reconstruct=settings.reconstruct,
                shuffle_seed=settings.seed if name == "train" else None,
            ).with_options(options)
        )
        for name in ("train", "val")
    }


class CustomLoop:
    """One phase of training: its optimizer, loss, metrics and traced distributed steps."""

    def __init__(
        self,
        model: keras.Model,
        config: TrainingConfig,
        learning_rate: float,
        settings: FitSettings,
        datasets: dict[str, Any],
    ):
        self.model, self.strategy, self.datasets = model, settings.strategy, datasets
        self.verbose = settings.verbose
        self.penalised = bool(model.losses)  # an L1/L2 penalty: fit then also tracks data_loss
        with self.strategy.scope():  # mirrored optimizer state, sync-on-read metric states
            self.optimizer = make_optimizer(config, learning_rate)
            self.metrics = {
                split: epoch_metrics(config, model.output_shape[-1], settings.reconstruct, self.penalised)
                for split in ("train", "val")
            }
        model.optimizer = self.optimizer  # where the callbacks read and set the learning rate
        self.loss = per_sample_loss(config.loss)  # the loop divides by the global sample count
        # One traced step per call, driven by a Python loop. Not a whole epoch in one graph (twice
        # as fast on CPU workers): in its loop, imdb_lstm's embedding gradients (an all-gather)
        # met the partial last step on one worker and a full step on the other, and it aborted.
        self.train_step = traced_step(self.strategy, self._train_replica)
        self.eval_step = traced_step(self.strategy, self._eval_replica)

    def fit(
        self, phase: str, initial_epoch: int, epochs: int, callbacks: list[keras.callbacks.Callback]
    ) -> list[dict[str, float]]:
        """Epochs `initial_epoch` to `epochs` with `fit`'s callback calls; one history row each."""
        model = self.model
        rows = EpochRows(phase, epochs, self.verbose)
        # Last, as fit's History: the callbacks' additions (the learning rate) are in the row.
        listeners = keras.callbacks.CallbackList([*callbacks, rows], model=model)
        model.stop_training = False
        set_monitor_directions(callbacks)
        listeners.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            listeners.on_epoch_begin(epoch)
            logs = self.run_epoch()
            listeners.on_epoch_end(epoch, logs)
            if model.stop_training:  # early stopping
                break
        listeners.on_train_end(logs)  # early stopping restores the best weights here
        return rows.rows

    def run_epoch(self) -> dict[str, float]:
        """`fit`'s epoch logs: the training metrics, then the validation ones prefixed `val_`,
        each group in `fit`'s order (by name)."""
        logs = sorted(self._epoch("train", self.train_step).items())
        scores = sorted((f"val_{name}", value) for name, value in self._epoch("val", self.eval_step).items())
        return dict(logs + scores)

    def _epoch(self, split: str, step) -> dict[str, float]:
        metrics = self.metrics[split]
        for metric in metrics:
            metric.reset_state()
        batches = iter(self.datasets[split])  # a new iterator each epoch: the train split reshuffles
        while bool(step(batches)):
            pass
        # Read in cross-replica context, a sync-on-read state is summed over every replica.
        return {metric.name: float(metric.result()) for metric in metrics}

    def _train_replica(self, inputs, targets):
        model = self.model
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            per_sample, penalty = self._losses(targets, outputs)
            # This replica's share of the global batch's mean: the optimizer sums the replicas'
            # gradients, which gives the gradient of the mean over the global batch plus the penalty.
            loss = tf.reduce_sum(per_sample) / global_count(per_sample)
            loss += penalty / self.strategy.num_replicas_in_sync
        gradients = tape.gradient(loss, model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        update(self.metrics["train"], targets, outputs, per_sample, penalty)

    def _eval_replica(self, inputs, targets):
        outputs = self.model(inputs, training=False)
        update(self.metrics["val"], targets, outputs, *self._losses(targets, outputs))

    def _losses(self, targets, outputs):
        """Per-sample data losses and the model's weight penalty (0 without one), as `fit` adds."""
        per_sample = self.loss(targets, outputs)
        penalty = tf.add_n(self.model.losses) if self.penalised else tf.constant(0.0)
        return per_sample, penalty


class EpochRows(keras.callbacks.Callback):
    """The history rows, as the fit path makes them from Keras' History (numbered across phases)."""

    def __init__(self, phase: str, epochs: int, verbose: int):
        super().__init__()
        self.phase, self.epochs, self.verbose = phase, epochs, verbose
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, "phase": self.phase, **logs})
        if self.verbose:
            scores = ", ".join(f"{name} {value:.4f}" for name, value in logs.items())
            print(f"epoch {epoch + 1}/{self.epochs}: {scores}", flush=True)


def traced_step(strategy: tf.distribute.Strategy, replica_step) -> Callable:
    """One step on the iterator's next global batch; False once the data is used up.

    The batch is fetched in the graph, where the workers agree whether any of them has data left
    (fetched eagerly, that is a round of collectives more per step: half the speed), and a worker
    without gets an empty shard. Its batch size is unknown to the trace, so the partial last
    batch and an empty shard run the same graph: every worker traces, and runs collectives, alike.
    """

    def step(batches):
        fetched = batches.get_next_as_optional()
        if fetched.has_value():
            strategy.run(replica_step, args=fetched.get_value())
        return fetched.has_value()

    return tf.function(step)


def epoch_metrics(
    config: TrainingConfig, output_units: int, reconstruct: bool, penalised: bool
) -> list[keras.metrics.Metric]:
    """What `fit` tracks, in its order: the loss (penalty included), the compiled metrics, and
    `data_loss` (the loss alone) when the model has a weight penalty (`loop.compile_model`)."""
    found = [keras.metrics.Mean(name="loss")]
    found += [compiled_metric(name, output_units, reconstruct) for name in config.metrics]
    if penalised:
        found.append(keras.metrics.Mean(name=DATA_LOSS))
    return found


def compiled_metric(name: str, output_units: int, reconstruct: bool) -> keras.metrics.Metric:
    """The metric `compile(metrics=[name])` builds for this model (Keras' `get_metric`): accuracy is
    binary for one output unit, sparse categorical for label targets, categorical for an
    autoencoder's (targets shaped like the outputs)."""
    if name == "mae":
        return keras.metrics.MeanAbsoluteError(name=name)
    if output_units == 1:
        return keras.metrics.BinaryAccuracy(name=name)
    if reconstruct:
        return keras.metrics.CategoricalAccuracy(name=name)
    return keras.metrics.SparseCategoricalAccuracy(name=name)


def update(metrics: list[keras.metrics.Metric], targets, outputs, per_sample, penalty) -> None:
    """One replica's batch into `epoch_metrics`: the loss as `fit` tracks it, per-sample data loss
    plus the penalty, averaged over the samples; then the compiled metrics and `data_loss`."""
    loss, *compiled = metrics
    loss.update_state(per_sample + penalty)
    for metric in compiled:
        if metric.name == DATA_LOSS:
            metric.update_state(per_sample)
        else:
            metric.update_state(targets, outputs)


def global_count(per_sample) -> tf.Tensor:
    """The number of samples in this step over all replicas (a partial batch has fewer)."""
    local = tf.cast(tf.shape(per_sample)[0], per_sample.dtype)
    return tf.distribute.get_replica_context().all_reduce(SUM, local)


def set_monitor_directions(callbacks: list[keras.callbacks.Callback]) -> None:
    """Early stopping and ReduceLROnPlateau in mode "auto" look the monitored metric's direction up
    in the compiled metrics, which an uncompiled model lacks: give them the direction instead."""
    for callback in callbacks:
        if isinstance(callback, MONITORING) and callback.mode == "auto":
            callback.mode = "max" if callback.monitor.removeprefix("val_") in RISING else "min"


def synchronize_batch_norm(model: keras.Model) -> None:
    """Batch statistics over the global batch, so the moving averages stay equal on every worker.

    Unsynchronised, each worker updates its BatchNormalization moving mean and variance from its
    own shard and the workers end with different weights.
    """
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def plain_copy(model: keras.Model, config: TrainingConfig) -> keras.Model:
    """The trained model outside the strategy, compiled, for evaluate/save/predict as usual."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(
        optimizer=make_optimizer(config, config.learning_rate), loss=config.loss, metrics=list(config.metrics)
    )
    return copy
