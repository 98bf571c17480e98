"""Multi-worker training with a custom loop over `strategy.run`.

Keras 3.15's `fit()` fails under MultiWorkerMirroredStrategy (`Attempt to convert a value
(PerReplica...)`, then `Invalid reduction dimension 0`), while a custom loop works unpatched:
every worker computes gradients on its shard of each global batch, the strategy all-reduces
them, and every worker applies the same update, so all end with identical weights.

The loop covers the plain recipe (optimizer, learning-rate schedule, loss, accuracy, seeds);
callbacks that steer training (early stopping, plateau LR) and fine-tuning phases need `fit`, so
those configs are refused with a clear message instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlzoo.config.experiments import TrainingConfig
from dlzoo.data.splits import Split
from dlzoo.errors import DlzooError
from dlzoo.inputs import InputSpec
from dlzoo.runtime import all_layers
from dlzoo.train.shared import FitSettings, make_dataset, make_optimizer

SUM = tf.distribute.ReduceOp.SUM


def check_supported(config: TrainingConfig) -> None:
    unsupported = [
        name
        for name, value in (
            ("early_stopping", config.early_stopping),
            ("reduce_lr", config.reduce_lr),
            ("fine_tune", config.fine_tune),
        )
        if value is not None
    ]
    if unsupported:
        raise DlzooError(
            f"train.distribute: multi_worker trains with a custom loop that has no {', '.join(unsupported)}; "
            "set them to null for this experiment, or use distribute: none or mirrored"
        )
    if keras.mixed_precision.global_policy().name != "float32":
        raise DlzooError(
            "train.distribute: multi_worker does not support mixed_precision yet; set it to false"
        )


def train(
    model: keras.Model, config: TrainingConfig, datasets: dict[str, Any], settings: FitSettings
) -> list[dict[str, float]]:
    """Trains `model` (built in `settings.strategy.scope()`) on `distribute(...)`'s train and val
    batches and returns one dict per epoch, like `fit`."""
    check_supported(config)
    synchronize_batch_norm(model)
    loop = CustomLoop(model, config, settings.strategy)
    epochs = settings.epochs(config.epochs)
    history = []
    for epoch in range(epochs):
        logs = loop.run_epoch(datasets["train"], loop.train_step)
        logs.update(
            {f"val_{name}": value for name, value in loop.run_epoch(datasets["val"], loop.eval_step).items()}
        )
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(loop.optimizer.learning_rate))
        for callback in settings.callbacks:
            callback.on_epoch_end(epoch, logs)
        if settings.verbose:
            print(
                f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()),
                flush=True,
            )
        history.append({"epoch": epoch + 1, "phase": "train", **logs})
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
    """The per-replica steps and their all-reduced sums: loss, correct predictions, samples."""

    def __init__(self, model: keras.Model, config: TrainingConfig, strategy: tf.distribute.Strategy):
        self.model, self.strategy, self.batch_size = model, strategy, config.batch_size
        with strategy.scope():
            self.optimizer = make_optimizer(config, config.learning_rate)
        self.loss_function = keras.losses.get(config.loss)
        self.with_accuracy = "accuracy" in config.metrics
        self.distributed_step = tf.function(self._distributed_step)

    def batch_sums(self, targets, outputs):
        per_example = self.loss_function(targets, outputs)
        count = tf.cast(tf.shape(per_example)[0], tf.float32)
        if not self.with_accuracy:
            return per_example, tf.constant(0.0), count
        if outputs.shape[-1] == 1:
            predicted = tf.cast(outputs[:, 0] >= 0.5, tf.float32)
            correct = tf.cast(tf.equal(predicted, tf.cast(tf.reshape(targets, [-1]), tf.float32)), tf.float32)
        else:
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int64)
            correct = tf.cast(tf.equal(predicted, tf.cast(tf.reshape(targets, [-1]), tf.int64)), tf.float32)
        return per_example, tf.reduce_sum(correct), count

    def train_step(self, inputs, targets):
        model = self.model
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            per_example, correct, count = self.batch_sums(targets, outputs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return tf.reduce_sum(per_example), correct, count

    def eval_step(self, inputs, targets):
        per_example, correct, count = self.batch_sums(targets, self.model(inputs, training=False))
        return tf.reduce_sum(per_example), correct, count

    def _distributed_step(self, step, inputs, targets):
        results = self.strategy.run(step, args=(inputs, targets))
        return [self.strategy.reduce(SUM, value, axis=None) for value in results]

    def run_epoch(self, dataset, step) -> dict[str, float]:
        totals = np.zeros(3)
        for inputs, targets in dataset:
            totals += [float(value) for value in self.distributed_step(step, inputs, targets)]
        loss_sum, correct, count = totals
        scores = {"loss": loss_sum / count}
        if self.with_accuracy:
            scores["accuracy"] = correct / count
        return scores


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
