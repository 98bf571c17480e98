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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import requests
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, RunStatus

from dlzoo.errors import DlzooError, Terminated
from dlzoo.records import DATA_LOSS, DataInfo

TRACKING_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_TAG = "dlzoo.experiment"
MODEL_SHA256_TAG = "dlzoo.model_sha256"
MISSING_RUN_TAG = "dlzoo.training_run"  # on a run made for results whose training run is elsewhere
SHA256_TAG = "dlzoo.sha256"  # a dataset input's full SHA-256 (MLflow's digest holds 36 characters)
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
# MLflow 3's UI opens an experiment of this kind on its training runs, not on GenAI traces.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
UI_QUERY = "workflowType=machine_learning"  # the UI-wide switch to the model-training view
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
    """An MLflow run in experiment `task`; ends FINISHED, FAILED if the block raises, KILLED if stopped.

    Stopped means Ctrl-C (KeyboardInterrupt) or SIGTERM (the CLI turns it into `Terminated`).
    """
    _connect()
    experiment_id = ensure_experiment(task)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        try:
            mlflow.log_params({key: _param_value(value) for key, value in params.items()})
            yield run
        except (KeyboardInterrupt, Terminated):
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise


VARIANT_TAG = "dlzoo.variant"  # what trained if not the experiment's recipe (e.g. "random weights")


def run_name(experiment: str) -> str:
    """`blobs_mlp`, or `blobs_mlp@<dvc experiment>` inside `dvc exp run`: sweep points apart in the UI."""
    dvc_experiment = os.environ.get("DVC_EXP_NAME")
    return f"{experiment}@{dvc_experiment}" if dvc_experiment else experiment


def ensure_experiment(task: str) -> str:
    """The experiment's id, creating it with a fixed artefact location and the UI's kind tag.

    MLflow resolves its default artefact root (`./mlruns`) against the working directory when an
    experiment is created; created from a `dvc exp run --queue` copy, it would point into a
    directory DVC deletes. With the local SQLite store the location is the project root's
    `mlruns`; a tracking server chooses its own (its `--artifacts-destination`).
    """
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(task)
    if found is not None:
        return found.experiment_id
    served = tracking_uri().startswith(("http://", "https://"))
    location = None if served else (project_root() / "mlruns").as_uri()
    try:
        return client.create_experiment(task, artifact_location=location, tags=EXPERIMENT_TAGS)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel stage
        found = client.get_experiment_by_name(task)
        if found is None:
            raise
        return found.experiment_id


def ui_urls(base: str) -> dict[str, str]:
    """{experiment: URL} of the MLflow UI, each on the experiment's runs in the model-training view.

    MLflow 3's UI opens an experiment on its GenAI traces unless the UI-wide switch (kept in the
    browser) says otherwise; the URL parameter selects the training view whatever the browser
    holds, but only on an experiment's own page, so there is one URL per experiment.
    """
    _connect()
    base = base.rstrip("/")
    urls = {"(all experiments)": f"{base}/#/experiments?{UI_QUERY}"}
    for experiment in sorted(mlflow.MlflowClient().search_experiments(), key=lambda item: item.name):
        if experiment.name != "Default":
            urls[experiment.name] = f"{base}/#/experiments/{experiment.experiment_id}/runs?{UI_QUERY}"
    return urls


def log_datasets(data_dir: Path, info: DataInfo) -> None:
    """The processed splits as the active run's dataset inputs: the Dataset column, `dataset.*` search.

    Nothing is read but info.json: it holds each split's shape and the SHA-256 of its file. MLflow
    caps a digest at 36 characters; the full hash is the input's `dlzoo.sha256` tag.
    """
    datasets, contexts, tags = [], [], []
    # Training first: the runs table's Dataset column shows the first input.
    order = {split: index for index, split in enumerate(SPLIT_CONTEXTS)}
    for split, summary in sorted(info.splits.items(), key=lambda item: order.get(item[0], len(order))):
        datasets.append(SplitDataset(Path(data_dir) / f"{split}.npz", info, split))
        contexts.append(SPLIT_CONTEXTS.get(split, split))
        tags.append({SHA256_TAG: summary.sha256, "dlzoo.split": split, "data.profile": info.profile})
    mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=tags)


class SplitDataset(MetaDataset):
    """A split of a processed data set, described by its info.json entry, without its arrays."""

    DIGEST_CHARACTERS = 16  # of the file's SHA-256; MLflow stores at most 36

    def __init__(self, path: Path, info: DataInfo, split: str) -> None:
        summary = info.splits[split]
        self._profile = {
            "profile": info.profile,
            "stand_in": info.stand_in,
            "split": split,
            "count": summary.count,
            "x_shape": summary.x_shape,
            "x_dtype": summary.x_dtype,
            "y_shape": summary.y_shape,
            "sha256": summary.sha256,
        }
        with warnings.catch_warnings():  # MLflow 3.17 registers its local-file source twice, and says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path))
        super().__init__(source=source, name=info.dataset, digest=summary.sha256[: self.DIGEST_CHARACTERS])

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"profile": json.dumps(self._profile)}


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


def results_run_id(task: str, experiment: str, model_sha256: str) -> str:
    """Where a model's later results go: the run that trained it, found by its tags, never reopened.

    Results are added by run id (MlflowClient), so the run's status and end time stay the
    training's. Where the store does not have that run (the model came from `dvc pull`, the store
    is new), a new run with the same two tags takes them, tagged `dlzoo.training_run`.
    """
    run_id = training_run_id(task, experiment, model_sha256)
    if run_id is not None:
        return run_id
    tags = {EXPERIMENT_TAG: experiment, MODEL_SHA256_TAG: model_sha256, MISSING_RUN_TAG: "not in this store"}
    client = mlflow.MlflowClient()
    created = client.create_run(ensure_experiment(task), tags=tags, run_name=experiment)
    client.set_terminated(created.info.run_id, status="FINISHED")
    return created.info.run_id


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


def epoch_names(logs: dict[str, float]) -> dict[str, float]:
    """Keras' epoch logs under one scheme: `train_*` and `val_*` (the test split is evaluate's, `test_*`).

    For a model with an L1/L2 penalty, `*_loss` is the loss alone (the compiled `data_loss`
    metric), comparable with every other run's, and `*_penalty` what Keras' loss added to it.
    """
    named = {}
    for key, value in logs.items():
        if key == "learning_rate":
            named[key] = value
        else:
            split, metric = ("val", key.removeprefix("val_")) if key.startswith("val_") else ("train", key)
            named[f"{split}_{metric}"] = value
    for split in ("train", "val"):
        alone = named.pop(f"{split}_{DATA_LOSS}", None)
        if alone is not None:
            named[f"{split}_penalty"] = named[f"{split}_loss"] - alone
            named[f"{split}_loss"] = alone
    return named


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
        self._pending += [Metric(key, float(value), now, step) for key, value in epoch_names(values).items()]
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
