"""The train stage for one experiment: data in, a trained model, its history and an MLflow run out.

Outputs, written atomically, the same bytes for the same weights:
- `<out>/model.keras` (or `model.npz` for the NumPy MLP) and `<out>/summary.json` (epochs,
  parameter count; no timings and no run id: those belong to the MLflow run);
- the per-epoch history as CSV for `dvc plots`.
The test split is not read here: the evaluate stage scores the exported model on it, once.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from dlzoo import models, track
from dlzoo.config import Params
from dlzoo.config.base import replace
from dlzoo.config.experiments import ExperimentConfig
from dlzoo.data.splits import Split, load_info, load_split
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets, Environment, Family, FitOptions
from dlzoo.records import SUMMARY_FILE, DataInfo, TrainSummary
from dlzoo.store import atomic_directory

TRAINING_SPLITS = ("train", "val")
KERAS_VERBOSITY = 2  # one line per epoch; `dlzoo train --verbose N` changes it (no output depends on it)


@dataclass(frozen=True)
class Files:
    """What the stage reads and writes."""

    data_dir: Path  # processed data
    out_dir: Path  # the model directory to write
    history_file: Path  # per-epoch CSV to write
    pretrained_dir: Path | None  # downloaded weights (experiments with `pretrained`)


def run(name: str, params: Params, files: Files, verbose: int = KERAS_VERBOSITY) -> TrainSummary | None:
    """The summary the stage wrote, or None on a worker other than the chief (it writes nothing)."""
    job, adjustment = _prepare(name, params, files)
    if not job.environment.chief and job.family.distributable:
        # Another worker of a multi-worker run: it computes its share; the chief writes and logs.
        with tempfile.TemporaryDirectory() as scratch:
            _train(job, Path(scratch), verbose)
        return None
    tags = track.environment_tags(job.info, job.environment.device) | {track.EXPERIMENT_TAG: name}
    run_name = track.run_name(name)
    if job.variant:  # never under the recipe's bare name: "cats_dogs_transfer (random weights)"
        print(f"{name}: trains the {job.variant} variant")
        run_name = f"{run_name} ({job.variant})"
        tags[track.VARIANT_TAG] = job.variant
    if adjustment:
        print(f"{name}: {adjustment}")
        tags["dlzoo.adjustment"] = adjustment  # a device or demo-profile change of the config
    with (
        track.start_run(job.experiment.task, run_name, _run_params(job), tags),
        atomic_directory(files.out_dir) as staging,
    ):
        track.log_environment()
        track.log_datasets(files.data_dir, job.info)
        started = time.perf_counter()
        history, size, saved = _train(job, staging, verbose)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        mlflow.set_tag(track.MODEL_SHA256_TAG, hashlib.sha256(saved.read_bytes()).hexdigest())
        summary = _summary(job, history, size, saved.name)
        summary.write(staging / SUMMARY_FILE)
        _write_history(history, files.history_file)
        mlflow.log_artifact(str(files.history_file), artifact_path="history")
    return summary


def _prepare(name: str, params: Params, files: Files) -> tuple[Job, str | None]:
    """Data, seeds, precision, strategy and the family's adjustments (a note, if any)."""
    experiment = params.experiment(name)
    info = load_info(files.data_dir)
    splits = {split: load_split(files.data_dir, split) for split in TRAINING_SPLITS}
    demo = info.profile == "demo"
    cap = experiment.training.demo_max_epochs if demo else None
    family = models.family(experiment.family)
    environment = family.environment(params.train)
    model_config, adjustment = family.adapt(experiment.model, params.train, environment, demo)
    experiment = replace(experiment, model=model_config)
    weights = family.pretrained_weights(files.pretrained_dir) if experiment.pretrained != "none" else None
    variant = family.variant(experiment.model, weights)
    job = Job(name, experiment, family, info, splits, params, cap, weights, variant, environment)
    return job, adjustment


def _summary(job: Job, history: list, size: int, model_file: str) -> TrainSummary:
    return TrainSummary(
        experiment=job.experiment_name,
        task=job.experiment.task,
        family=job.experiment.family,
        profile=job.info.profile,
        stand_in=job.info.stand_in,
        epochs=len(history),
        parameters=size,
        model_file=model_file,
        training_variant=job.variant,
    )


def _run_params(job: Job) -> dict[str, Any]:
    """What the MLflow run records as params: the experiment, the train settings, the data."""
    info = job.info
    return {
        **track.flatten(job.experiment),
        **track.flatten(job.params.train),
        "data.profile": info.profile,
        "max_epochs_per_phase": job.max_epochs or "none",
        "replicas": job.environment.replicas,
        **{f"data.{split}_count": summary.count for split, summary in info.splits.items()},
    }


@dataclass(frozen=True)
class Job:
    """One training run: what every step of the stage reads."""

    experiment_name: str
    experiment: ExperimentConfig
    family: Family
    info: DataInfo
    splits: dict[str, Split]
    params: Params
    max_epochs: int | None  # per phase: the demo profile's cap
    weights_file: Path | None  # the pretrained weights, if the experiment names them and they exist
    variant: str | None  # what trains if not the recipe itself (family.variant)
    environment: Environment


def _train(job: Job, staging: Path, verbose: int) -> tuple[list[dict[str, Any]], int, Path]:
    """Build, fit and save through the family's hooks; only the chief logs the model."""
    family, experiment, settings, chief = job.family, job.experiment, job.params.train, job.environment.chief
    spec = InputSpec.from_info(job.info)
    rng = np.random.default_rng(settings.seed)  # for families that draw from NumPy (build, then fit)
    if family.pretrained and chief:
        mlflow.set_tag("pretrained.weights", "imagenet" if job.weights_file else "random")
    with job.environment.scope():
        assets = Assets(len(job.info.classes or []), rng, job.weights_file)
        model = family.build(experiment.model, spec, assets)
    options = FitOptions(
        seed=settings.seed,
        rng=rng,
        max_epochs=job.max_epochs,
        track=chief,
        verbose=verbose,
        jit_compile=settings.jit_compile,
        cudnn_rnn=settings.cudnn_rnn,
        strategy=job.environment.strategy,
    )
    fitted = family.fit(model, experiment.training, job.splits, spec, options)
    saved = family.save(fitted.model, staging)
    if chief:  # the file DVC tracks; the served ONNX model is logged as an MLflow model (track stage)
        mlflow.log_artifact(str(saved), artifact_path="model")
    return fitted.history, family.parameter_count(fitted.model), saved


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in history for key in row))
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(temporary, path)
