"""MLflow: one experiment per task, one run per pipeline experiment.

The default store is a SQLite file at the repository root, as an absolute URI, so that runs
started from `dvc exp run --queue` temporary copies land in the same store;
MLFLOW_TRACKING_URI points elsewhere (a tracking server). A run that raises ends FAILED.

Later stages find a training's run by what DVC pins, never by an id written into an out: the
run is tagged with the experiment name and the SHA-256 of the model file it saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import requests
from mlflow.entities import Metric

from dlzoo.errors import DlzooError
from dlzoo.records import DataInfo

TRACKING_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_TAG = "dlzoo.experiment"
MODEL_SHA256_TAG = "dlzoo.model_sha256"
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


def environment_tags(data_info: DataInfo, device: str) -> dict[str, str]:
    files = data_info.source.get("files", {})
    tags = {
        "git.commit": _git_commit(),
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
        "data.profile": data_info.profile,
        "data.stand_in": str(data_info.stand_in),
        "data.dataset": data_info.dataset,
        "data.sha256": json.dumps({name: entry["sha256"] for name, entry in files.items()}),
        "python.version": platform.python_version(),
        "device": device,
    }
    if _uses_tensorflow():
        tags["tensorflow.version"] = importlib.metadata.version("tensorflow")
        tags["keras.version"] = importlib.metadata.version("keras")
    return tags


def _uses_tensorflow() -> bool:
    """True once this process has loaded TensorFlow (a Keras family); the NumPy MLP never does."""
    return "tensorflow" in sys.modules


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
    import tensorflow as tf

    return {
        "tensorflow_version": tf.__version__,
        "git_version": tf.version.GIT_VERSION,
        **dict(tf.sysconfig.get_build_info()),
    }


def physical_devices() -> list[dict[str, Any]]:
    """Every device TensorFlow sees; for GPUs also the product name and compute capability."""
    import tensorflow as tf

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
    build = tensorflow_build() if _uses_tensorflow() else {}
    devices = physical_devices() if _uses_tensorflow() else [{"name": "CPU:0", "device_type": "CPU"}]
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


def training_run_id(task: str, experiment: str, model_sha256: str) -> str | None:
    """The MLflow run that trained this model file (tags set by the train stage), if the store has it."""
    _connect()
    if mlflow.get_experiment_by_name(task) is None:
        return None
    found = mlflow.search_runs(
        experiment_names=[task],
        filter_string=(
            f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and tags.`{MODEL_SHA256_TAG}` = '{model_sha256}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return found[0].info.run_id if found else None


@contextlib.contextmanager
def training_run(task: str, experiment: str, model_sha256: str) -> Iterator[Any]:
    """The run that trained this model file, active for logging, its status and end time kept.

    Adding results later must not stretch the run's duration to the time they were added. Where
    the store does not have the run (the model came from `dvc pull`, the store is new), a new run
    with the same tags takes the results, tagged as such.
    """
    run_id = training_run_id(task, experiment, model_sha256)
    if run_id is None:
        mlflow.set_experiment(task)
        tags = {
            EXPERIMENT_TAG: experiment,
            MODEL_SHA256_TAG: model_sha256,
            "dlzoo.training_run": "not in this store",
        }
        with mlflow.start_run(run_name=experiment, tags=tags) as run:
            yield run
        return
    client = mlflow.MlflowClient()
    before = client.get_run(run_id).info
    try:
        with mlflow.start_run(run_id=run_id) as run:
            yield run
    finally:
        client.set_terminated(run_id, status=before.status, end_time=before.end_time)


def scalar_metrics(prefix: str, scores: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics dict, flattened for MLflow (per-class F1 included)."""
    flat = {f"{prefix}_{key}": value for key, value in scores.items() if isinstance(value, int | float)}
    for name, values in scores.get("per_class", {}).items():
        flat[f"{prefix}_f1_{name}"] = values["f1-score"]
    return flat


def _connect() -> None:
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(value)


class EpochMetrics:
    """Per-epoch metrics of the active run, sent in batches.

    One store transaction per flush rather than one per epoch: logging moons_mlp's 200 epochs
    one by one took 5 s of a 37 s stage on SQLite. A flush every FLUSH_SECONDS keeps a long
    training's curves live in the UI; a training that raises loses at most that much of them.
    """

    FLUSH_SECONDS = 10.0

    def __init__(self) -> None:
        self._pending: list[Metric] = []
        self._flushed = time.monotonic()

    def add(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, step) for key, value in values.items()]
        if time.monotonic() - self._flushed >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=self._pending)
        self._pending = []
        self._flushed = time.monotonic()


def log_history(history: list[dict[str, Any]]) -> None:
    """For models trained outside Keras (the NumPy MLP): the same per-epoch metrics."""
    metrics = EpochMetrics()
    for row in history:
        values = {key: value for key, value in row.items() if key not in ("epoch", "phase")}
        metrics.add(int(row["epoch"]), values)
    metrics.flush()
