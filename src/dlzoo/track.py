"""MLflow: one experiment per task, one run per pipeline experiment.

The default store is a SQLite file at the repository root, as an absolute URI, so that runs
started from `dvc exp run --queue` temporary copies land in the same store;
MLFLOW_TRACKING_URI points elsewhere (a tracking server). A run that raises ends FAILED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import mlflow
import requests
import tensorflow as tf

from dlzoo.errors import DlzooError
from dlzoo.records import DataInfo

TRACKING_ENV = "MLFLOW_TRACKING_URI"
ENVIRONMENT_ARTIFACTS = "environment"  # the run's artifact directory for what log_environment() writes


class TrackingError(DlzooError):
    """The tracking store cannot be used; the message names the URI."""


def project_root(start: Path | None = None) -> Path:
    """The project root, also from inside DVC's temporary experiment copies (.dvc/tmp/exps/...)."""
    path = (start or Path.cwd()).resolve()
    if ".dvc" in path.parts:
        return Path(*path.parts[: path.parts.index(".dvc")])
    return path


def tracking_uri() -> str:
    return os.environ.get(TRACKING_ENV) or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fails fast (instead of MLflow's long retries) when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as error:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({error}); start it, fix {TRACKING_ENV}, "
            f"or unset {TRACKING_ENV} to log to the local SQLite store"
        ) from error


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'training.early_stopping.patience': 5, ...} for mlflow.log_params."""
    if dataclasses.is_dataclass(value):
        value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): list(value) if isinstance(value, tuple) else value}


def environment_tags(data_info: DataInfo) -> dict[str, str]:
    files = data_info.source.get("files", {})
    return {
        "git.commit": _git_commit(),
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
        "data.profile": data_info.profile,
        "data.stand_in": str(data_info.stand_in),
        "data.dataset": data_info.dataset,
        "data.sha256": json.dumps({name: entry["sha256"] for name, entry in files.items()}),
        "tensorflow.version": tf.__version__,
        "keras.version": keras.__version__,
        "python.version": platform.python_version(),
        "device": ", ".join(d.name for d in tf.config.list_physical_devices("GPU")) or "CPU",
    }


def frozen_requirements() -> list[str]:
    """`name==version` of every installed distribution, sorted like `pip freeze` (without needing pip)."""
    found = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]  # a half-removed install can leave metadata without a name
    }
    return sorted(found, key=str.lower)


def tensorflow_build() -> dict[str, Any]:
    """How this TensorFlow was built: `is_cuda_build`, the CUDA and cuDNN versions it expects, ..."""
    return {
        "tensorflow_version": tf.__version__,
        "git_version": tf.version.GIT_VERSION,
        **dict(tf.sysconfig.get_build_info()),
    }


def physical_devices() -> list[dict[str, Any]]:
    """Every device TensorFlow sees; for GPUs also the product name and compute capability."""
    devices = []
    for device in tf.config.list_physical_devices():
        entry: dict[str, Any] = {"name": device.name, "device_type": device.device_type}
        if device.device_type == "GPU":
            try:
                details = tf.config.experimental.get_device_details(device)
            except (ValueError, RuntimeError, tf.errors.OpError):
                details = {}
            entry["device_name"] = details.get("device_name", "unknown")
            capability = details.get("compute_capability")
            entry["compute_capability"] = ".".join(map(str, capability)) if capability else None
        devices.append(entry)
    return devices


def platform_facts() -> dict[str, Any]:
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "system": platform.system(),
        "release": platform.release(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpu_count": len(usable) if usable is not None else os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def log_environment() -> dict[str, Any]:
    """Records, in the active run, what the run ran on; returns the same facts.

    Artifacts under `environment/`: `requirements-frozen.txt` (every installed distribution),
    `tensorflow-build.json` (CUDA/cuDNN build info), `devices.json` (devices and platform); and tags.
    """
    requirements = frozen_requirements()
    build = tensorflow_build()
    devices = physical_devices()
    facts = platform_facts()
    mlflow.log_text("\n".join(requirements) + "\n", f"{ENVIRONMENT_ARTIFACTS}/requirements-frozen.txt")
    mlflow.log_dict(build, f"{ENVIRONMENT_ARTIFACTS}/tensorflow-build.json")
    mlflow.log_dict({"devices": devices, "platform": facts}, f"{ENVIRONMENT_ARTIFACTS}/devices.json")
    mlflow.set_tags(
        {
            "tensorflow.cuda_build": str(bool(build.get("is_cuda_build"))).lower(),
            "tensorflow.cuda_version": str(build.get("cuda_version", "none")),
            "tensorflow.cudnn_version": str(build.get("cudnn_version", "none")),
            "devices": ", ".join(_describe(device) for device in devices),
            "platform.os": f"{facts['system']} {facts['release']}",
            "platform.machine": facts["machine"],
            "platform.cpu_count": str(facts["usable_cpu_count"]),
        }
    )
    return {"requirements": requirements, "tensorflow_build": build, "devices": devices, "platform": facts}


def _describe(device: dict[str, Any]) -> str:
    short = device["name"].removeprefix("/physical_device:")
    if device["device_type"] != "GPU":
        return short
    capability = device.get("compute_capability")
    return f"{short} {device['device_name']}" + (f" (compute {capability})" if capability else "")


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=project_root()
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


@contextlib.contextmanager
def start_run(task: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> Iterator[Any]:
    """An MLflow run in experiment `task`; ends FINISHED, or FAILED if the block raises."""
    _connect()
    mlflow.set_experiment(task)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        yield run


@contextlib.contextmanager
def resume_run(run_id: str) -> Iterator[Any]:
    """Reopens a training run, so that evaluation and export add to it."""
    _connect()
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def _connect() -> None:
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(value)


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics (and learning rate) to the active MLflow run."""

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            mlflow.log_metrics({name: float(value) for name, value in logs.items()}, step=epoch + 1)


def log_history(history: list[dict[str, Any]]) -> None:
    """For models trained outside Keras (the NumPy MLP): the same per-epoch metrics."""
    for row in history:
        metrics = {key: value for key, value in row.items() if key not in ("epoch", "phase")}
        mlflow.log_metrics(metrics, step=int(row["epoch"]))


def log_keras_model(model: keras.Model, example: Any) -> None:
    signature = mlflow.models.infer_signature(example, model.predict(example, verbose=0))
    # mlflow.keras.log_model in MLflow 3.17.2 writes the input example before creating its
    # directory (FileNotFoundError); the tensorflow flavor saves the same Keras 3 model.
    mlflow.tensorflow.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        # Listed explicitly: inferring them imports the model in a subprocess, slowly.
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
