"""One worker of the two-worker test: `python -m tests.integration.multi_worker_job INDEX OUT_DIR`.

TF_CONFIG (set by the test) names both workers. Each worker trains every experiment of
EXPERIMENTS with MultiWorkerMirroredStrategy through `loop.train` (the train stage's path) and
writes `<OUT_DIR>/<experiment>/worker-<INDEX>-initial.npz`, `-final.npz` (the weights) and
`.json` (the history). Then the workers share the references, trained in one process: worker
INDEX takes every other experiment from INDEX on and trains it again with the same custom loop
under the default strategy (`one-process`) and with Keras' `fit` (`fit`). One pair of processes
for all of it: each TensorFlow start costs seconds. INDEX -1 (no TF_CONFIG) trains only the
references, of every experiment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dlzoo import models
from dlzoo.config.experiments import (
    AutoencoderConfig,
    EarlyStoppingConfig,
    ExponentialDecayConfig,
    FineTuneConfig,
    MlpConfig,
    ReduceLrConfig,
    TrainingConfig,
)
from dlzoo.inputs import InputSpec
from dlzoo.models.transfer import BASE_NAME
from dlzoo.train import distributed, loop
from dlzoo.train.shared import FitSettings

SEED = 7
VECTOR = InputSpec((2,), "float32")
DIGITS = InputSpec((6, 6), "float32", scale=1 / 255)
# Not multiples of the global batch (16): the last train batch has 11 samples (shards of 6 and 5),
# the last val batch 1, so one worker's shard of it is empty.
TRAIN, VAL = 43, 17


@dataclass(frozen=True)
class Experiment:
    build: Callable[[], keras.Model]
    spec: InputSpec
    training: TrainingConfig
    data: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    reconstruct: bool = False
    unfreeze: Callable[[keras.Model, int], None] | None = None


def moons(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, size=count)
    angle = rng.uniform(0, np.pi, size=count)
    x = np.stack([np.cos(angle) + y, np.sin(angle) * (1 - 2 * y) + 0.5 * y], axis=1)
    return (x + rng.normal(scale=0.1, size=x.shape)).astype(np.float32), y.astype(np.int64)


def blobs(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 3, size=count)
    centres = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    return (centres[y] + rng.normal(scale=1.2, size=(count, 2))).astype(np.float32), y.astype(np.int64)


def wave(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-2, 2, size=(count, 2)).astype(np.float32)
    return x, (np.sin(x[:, 0]) + 0.5 * x[:, 1]).astype(np.float32)


def digits(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, size=(count, *DIGITS.shape)).astype(np.float32), np.zeros(count, np.int64)


def mlp(config: MlpConfig, spec: InputSpec = VECTOR) -> Callable[[], keras.Model]:
    return lambda: models.family("mlp").builder(config, spec)


def pretrained_stand_in() -> keras.Model:
    """A transfer-shaped model (a frozen sub-model named `base`, called with training=False) small
    enough to train both phases in seconds; the transfer family's unfreeze hook works on it."""
    base_inputs = keras.Input(VECTOR.shape)
    x = keras.layers.Dense(8, activation="relu", name="kept")(base_inputs)  # base layer 1
    x = keras.layers.BatchNormalization(name="statistics")(x)  # 2: unfreeze keeps BN frozen
    x = keras.layers.Dense(8, activation="relu", name="tuned")(x)  # 3: from_layer on
    base = keras.Model(base_inputs, x, name=BASE_NAME)
    base.trainable = False
    inputs = keras.Input(VECTOR.shape)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(base(inputs, training=False))
    return keras.Model(inputs, outputs)


def training(loss: str, **changes) -> TrainingConfig:
    """Adam, 3 epochs of global batches of 16, accuracy for the classifiers; nothing else."""
    metrics = ("accuracy",) if loss != "mse" else ()
    plain = TrainingConfig("adam", 0.02, loss, metrics, 3, 3, 16, None, None, None, None)
    return dataclasses.replace(plain, **changes)


EXPERIMENTS = {
    # One sigmoid unit: (B,) targets, (B, 1) outputs.
    "binary": Experiment(
        mlp(MlpConfig((8,), "relu", 0.0, 0.0, 0.0, False, 1, "sigmoid")),
        VECTOR,
        training("binary_crossentropy"),
        moons,
    ),
    # Batch normalisation; early stopping and a plateau learning rate on the accuracy (a rising
    # metric, and a count: float noise cannot change their decisions between the runs).
    "sparse": Experiment(
        mlp(MlpConfig((8,), "relu", 0.0, 0.0, 0.0, True, 3, "softmax")),
        VECTOR,
        training(
            "sparse_categorical_crossentropy",
            # SGD: Adam would turn the float noise in the (zero) gradients of the Dense biases
            # before batch normalisation into full steps, and the runs would drift apart.
            optimizer="sgd",
            epochs=12,
            learning_rate=0.1,
            early_stopping=EarlyStoppingConfig("val_accuracy", 2, True),
            reduce_lr=ReduceLrConfig("val_accuracy", 0.5, 1, 0.01),
        ),
        blobs,
    ),
    # An L2 penalty (data_loss apart) and a learning-rate schedule.
    "regression": Experiment(
        mlp(MlpConfig((8,), "tanh", 0.0, 0.0, 0.01, False, 1, "linear")),
        VECTOR,
        training("mse", metrics=("mae",), lr_schedule=ExponentialDecayConfig(3, 0.5, True)),
        wave,
    ),
    "autoencoder": Experiment(
        lambda: models.family("autoencoder").builder(
            AutoencoderConfig((8, 4), (8,), "relu", "sigmoid"), DIGITS
        ),
        DIGITS,
        training("binary_crossentropy", metrics=()),
        digits,
        reconstruct=True,
    ),
    "fine_tune": Experiment(
        pretrained_stand_in,
        VECTOR,
        training("sparse_categorical_crossentropy", epochs=1, fine_tune=FineTuneConfig(3, 0.005, 1)),
        blobs,
        unfreeze=models.family("transfer").unfreeze,
    ),
}


def run(experiment: Experiment, strategy: tf.distribute.Strategy | None, custom_loop: bool) -> dict:
    """Weights before and after, and the history, of one training; `strategy` None: `fit`."""
    loop.set_seeds(SEED, deterministic=True)
    rng = np.random.default_rng(1)
    splits = {"train": experiment.data(rng, TRAIN), "val": experiment.data(rng, VAL)}
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = experiment.build()
    initial = weights(model)
    settings = FitSettings(
        seed=SEED,
        reconstruct=experiment.reconstruct,
        verbose=0,
        strategy=strategy,
        unfreeze=experiment.unfreeze,
    )
    config = experiment.training
    if custom_loop and not distributed.is_multi_worker(strategy):  # what loop.train runs, one process
        datasets = distributed.distribute(splits, experiment.spec, config.batch_size, settings)
        history = distributed.train(
            model, config, datasets, settings, loop.phases(config), lambda: loop.callbacks_for(config)
        )
    else:
        history = loop.train(model, config, splits, experiment.spec, settings)
    return {"initial": initial, "final": weights(model), "history": history}


def weights(model: keras.Model) -> dict[str, np.ndarray]:
    """By variable path, in the model's order (only named layers keep their path between runs)."""
    return {variable.path: keras.ops.convert_to_numpy(variable) for variable in model.weights}


def write(directory: Path, run_name: str, result: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stage in ("initial", "final"):
        np.savez(directory / f"{run_name}-{stage}.npz", **result[stage])
    (directory / f"{run_name}.json").write_text(json.dumps(result["history"]))


def main(index: int, out_dir: Path) -> None:
    names = list(EXPERIMENTS)
    if index >= 0:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        for name in names:
            write(out_dir / name, f"worker-{index}", run(EXPERIMENTS[name], strategy, custom_loop=True))
    for name in names if index < 0 else names[index::2]:
        default = tf.distribute.get_strategy()
        write(out_dir / name, "one-process", run(EXPERIMENTS[name], default, custom_loop=True))
        write(out_dir / name, "fit", run(EXPERIMENTS[name], None, custom_loop=False))


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
