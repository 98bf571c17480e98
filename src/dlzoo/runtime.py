"""Where and how training runs: precision, tf.distribute strategy, and GPU-only adjustments.

Everything here comes from `train:` in params.yaml and is recorded in the MLflow run, so that two
runs can be compared knowing what hardware path each took.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

from dlzoo.config.experiments import RnnConfig, TrainSettings
from dlzoo.errors import DlzooError


def gpu_names() -> list[str]:
    return [device.name for device in tf.config.list_physical_devices("GPU")]


def configure_precision(mixed: bool) -> None:
    """Keras' global dtype policy, read by every layer built afterwards."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def strategy_for(distribute: str) -> tf.distribute.Strategy:
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise DlzooError(
                "train.distribute is multi_worker but TF_CONFIG is not set; set it on every worker, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()  # the default: one device, no distribution


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief (worker 0) writes outputs and logs to MLflow; the others only compute."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def for_device(config: RnnConfig, settings: TrainSettings, on_gpu: bool) -> tuple[RnnConfig, str | None]:
    """Deterministic GPU runs need the cuDNN-compatible recurrence: recurrent_dropout 0.

    With recurrent_dropout > 0 Keras falls back from the cuDNN kernel to a generic loop that is
    much slower on a GPU and not covered by TF's op determinism. CPU runs keep the config.
    """
    if not (settings.deterministic and on_gpu and config.recurrent_dropout > 0):
        return config, None
    note = (
        f"recurrent_dropout {config.recurrent_dropout} -> 0.0: deterministic runs on a GPU use the "
        "cuDNN recurrence (train.deterministic: false keeps it)"
    )
    return dataclasses.replace(config, recurrent_dropout=0.0), note


def set_cudnn(model: keras.Model, enabled: bool) -> None:
    """LSTM/GRU layers: cuDNN kernels never, or as their builder chose ("auto", Keras' default,
    unless the builder turned them off for data the kernel cannot take)."""
    if enabled:
        return
    for layer in all_layers(model):
        if hasattr(layer, "use_cudnn"):
            layer.use_cudnn = False


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found
