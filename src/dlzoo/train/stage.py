"""The train stage for one experiment: data in, a trained model, its history and an MLflow run out.

Outputs, written atomically:
- `<out>/model.keras` (or `model.npz` for the NumPy MLP) and `<out>/summary.json`
  (test metrics, epochs, parameter count, seconds, the MLflow run id);
- the per-epoch history as CSV for `dvc plots`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from dlzoo import models, runtime, track
from dlzoo.config import Params
from dlzoo.config.experiments import ExperimentConfig
from dlzoo.data.splits import Split, load_info, load_split
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets, Family, FitOptions
from dlzoo.records import SUMMARY_FILE, DataInfo, TrainSummary
from dlzoo.store import atomic_directory
from dlzoo.train import loop

EVALUATED_SPLITS = ("test", "test_full")  # test_full: every test sample of a subset (cats vs dogs)


def run(
    name: str, params: Params, data_dir: Path, out_dir: Path, history_file: Path, pretrained_dir: Path | None
) -> TrainSummary | None:
    """The summary the stage wrote, or None on a worker other than the chief (it writes nothing)."""
    job, adjustment = _prepare(name, params, data_dir, pretrained_dir)
    experiment, info = job.experiment, job.info
    if not runtime.is_chief(job.strategy) and job.family.distributable:
        # Another worker of a multi-worker run: it computes its share; the chief writes and logs.
        with tempfile.TemporaryDirectory() as scratch:
            _train(job, Path(scratch), chief=False)
        return None
    tags = track.environment_tags(info)
    if adjustment:
        print(f"{name}: {adjustment}")
        tags["dlzoo.device_adjustment"] = adjustment
    with (
        track.start_run(experiment.task, name, _run_params(job), tags) as active,
        atomic_directory(out_dir) as staging,
    ):
        track.log_environment()
        started = time.perf_counter()
        history, scores, size = _train(job, staging, chief=True)
        seconds = time.perf_counter() - started
        mlflow.log_metrics(
            {
                f"{split}_{metric}": value
                for split, values in scores.items()
                for metric, value in values.items()
            }
        )
        mlflow.log_metric("train_seconds", seconds)
        summary = _summary(job, history, scores, size, seconds, active.info.run_id)
        summary.write(staging / SUMMARY_FILE)
        _write_history(history, history_file)
        mlflow.log_artifact(str(history_file), artifact_path="history")
    return summary


def _prepare(
    name: str, params: Params, data_dir: Path, pretrained_dir: Path | None
) -> tuple[Job, str | None]:
    """Data, seeds, precision, strategy and the family's device adjustment (its note, if any)."""
    experiment = params.experiment(name)
    info = load_info(data_dir)
    splits = {split: load_split(data_dir, split) for split in info.splits}
    cap = experiment.training.demo_max_epochs if info.profile == "demo" else None
    loop.set_seeds(params.train.seed, params.train.deterministic)
    runtime.configure_precision(params.train.mixed_precision)
    strategy = runtime.strategy_for(params.train.distribute)
    family = models.family(experiment.family)
    model_config, adjustment = family.adapt(experiment.model, params.train, bool(runtime.gpu_names()))
    experiment = dataclasses.replace(experiment, model=model_config)
    return Job(name, experiment, family, info, splits, params, cap, pretrained_dir, strategy), adjustment


def _summary(job: Job, history: list, scores: dict, size: int, seconds: float, run_id: str) -> TrainSummary:
    return TrainSummary(
        experiment=job.experiment_name,
        task=job.experiment.task,
        family=job.experiment.family,
        profile=job.info.profile,
        stand_in=job.info.stand_in,
        epochs=len(history),
        parameters=size,
        train_seconds=round(seconds, 2),
        mlflow_run_id=run_id,
        **scores,
    )


def _run_params(job: Job) -> dict[str, Any]:
    """What the MLflow run records as params: the experiment, the train settings, the data."""
    info = job.info
    return {
        **track.flatten(job.experiment),
        **track.flatten(job.params.train),
        "data.profile": info.profile,
        "max_epochs_per_phase": job.max_epochs or "none",
        "replicas": job.strategy.num_replicas_in_sync,
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
    pretrained_dir: Path | None
    strategy: Any  # tf.distribute.Strategy


def _train(job: Job, staging: Path, *, chief: bool) -> tuple[list[dict[str, Any]], dict[str, dict], int]:
    """Build, fit, score and save through the family's hooks; only the chief logs the model."""
    family, experiment, settings = job.family, job.experiment, job.params.train
    spec = InputSpec.from_info(job.info)
    rng = np.random.default_rng(settings.seed)  # for families that draw from NumPy (build, then fit)
    weights = family.pretrained_weights(experiment.model, job.pretrained_dir)
    if family.pretrained and chief:
        mlflow.set_tag("pretrained.weights", "imagenet" if weights else "random")
    with job.strategy.scope():
        model = family.build(experiment.model, spec, Assets(len(job.info.classes or []), rng, weights))
    options = FitOptions(
        seed=settings.seed,
        rng=rng,
        max_epochs=job.max_epochs,
        track=chief,
        verbose=settings.verbose,
        jit_compile=settings.jit_compile,
        cudnn_rnn=settings.cudnn_rnn,
        strategy=job.strategy,
    )
    fitted = family.fit(model, experiment.training, job.splits, spec, options)
    batch_size = experiment.training.batch_size
    scores = {
        split: family.score(fitted.model, job.splits[split], spec, batch_size)
        for split in EVALUATED_SPLITS
        if split in job.splits
    }
    saved = family.save(fitted.model, staging)
    if chief:
        example = job.splits["test"][0][:2].astype(np.int32 if spec.dtype == "int32" else np.float32)
        family.log_model(fitted.model, saved, example)
    return fitted.history, scores, family.parameter_count(fitted.model)


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in history for key in row))
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(temporary, path)
