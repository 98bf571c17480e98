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
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from dlzoo import distributed, runtime, tracking, training
from dlzoo.config import Params
from dlzoo.config.experiments import ExperimentConfig
from dlzoo.data.download import SOURCE_FILE
from dlzoo.data.splits import load_info, load_split
from dlzoo.data.store import atomic_directory, load_json, save_json
from dlzoo.models import builder
from dlzoo.models.inputs import InputSpec
from dlzoo.scratch.mlp import NumpyMLP
from dlzoo.scratch.mlp import fit as fit_numpy

EVALUATED_SPLITS = ("test", "test_full")  # test_full: every test sample of a subset (cats vs dogs)


def run(
    name: str, params: Params, data_dir: Path, out_dir: Path, history_file: Path, pretrained_dir: Path | None
) -> dict[str, Any]:
    experiment = params.experiment(name)
    info = load_info(data_dir)
    splits = {split: load_split(data_dir, split) for split in info["splits"]}
    cap = experiment.training.demo_max_epochs if info["profile"] == "demo" else None
    training.set_seeds(params.train.seed, params.train.deterministic)
    runtime.configure_precision(params.train.mixed_precision)
    strategy = runtime.strategy_for(params.train.distribute)
    experiment, adjustment = _for_device(experiment, params)
    if not runtime.is_chief(strategy) and experiment.family != "scratch_mlp":
        # Another worker of a multi-worker run: it computes its share; the chief writes and logs.
        with tempfile.TemporaryDirectory() as scratch:
            _train_keras(
                experiment, info, splits, params, cap, pretrained_dir, Path(scratch), strategy, chief=False
            )
        return {"experiment": name, "worker": True}
    run_params = {
        **tracking.flatten(experiment),
        **tracking.flatten(params.train),
        "data.profile": info["profile"],
        "max_epochs_per_phase": cap or "none",
        "replicas": strategy.num_replicas_in_sync,
        **{f"data.{split}_count": summary["count"] for split, summary in info["splits"].items()},
    }
    tags = tracking.environment_tags(info)
    if adjustment:
        print(f"{name}: {adjustment}")
        tags["dlzoo.device_adjustment"] = adjustment
    with (
        tracking.start_run(experiment.task, name, run_params, tags) as active,
        atomic_directory(out_dir) as staging,
    ):
        tracking.log_environment()
        started = time.perf_counter()
        if experiment.family == "scratch_mlp":
            history, scores, size = _train_numpy(experiment, splits, params.train.seed, cap, staging)
        else:
            history, scores, size = _train_keras(
                experiment,
                info,
                splits,
                params,
                cap,
                pretrained_dir,
                staging,
                strategy,
                chief=True,
            )
        seconds = time.perf_counter() - started
        mlflow.log_metrics(
            {
                f"{split}_{metric}": value
                for split, scores_of in scores.items()
                for metric, value in scores_of.items()
            }
        )
        mlflow.log_metric("train_seconds", seconds)
        summary = {
            "experiment": name,
            "task": experiment.task,
            "family": experiment.family,
            "profile": info["profile"],
            "stand_in": info["stand_in"],
            "epochs": len(history),
            "parameters": size,
            "train_seconds": round(seconds, 2),
            "mlflow_run_id": active.info.run_id,
            **{split: values for split, values in scores.items()},
        }
        save_json(staging / "summary.json", summary)
        _write_history(history, history_file)
        mlflow.log_artifact(str(history_file), artifact_path="history")
    return summary


def _for_device(experiment: ExperimentConfig, params: Params) -> tuple[ExperimentConfig, str | None]:
    if experiment.family != "rnn":
        return experiment, None
    model, adjustment = runtime.for_device(experiment.model, params.train, on_gpu=bool(runtime.gpu_names()))
    return dataclasses.replace(experiment, model=model), adjustment


def _train_keras(experiment, info, splits, params, cap, pretrained_dir, staging, strategy, *, chief):
    spec = InputSpec.from_info(info)
    extra = {}
    if experiment.family == "transfer":
        extra["weights_file"] = pretrained_weights(pretrained_dir, experiment)
        if chief:
            mlflow.set_tag("pretrained.weights", "imagenet" if extra["weights_file"] else "random")
    with strategy.scope():
        model = builder(experiment.family)(experiment.model, spec, **extra)
    runtime.set_cudnn(model, params.train.cudnn_rnn)
    reconstruct = experiment.family == "autoencoder"
    history = training.train(
        model,
        experiment.training,
        splits,
        spec,
        seed=params.train.seed,
        max_epochs=cap,
        reconstruct=reconstruct,
        extra_callbacks=[tracking.EpochLogger()] if chief else [],
        verbose=params.train.verbose,
        jit_compile=params.train.jit_compile,
        strategy=strategy,
    )
    if params.train.distribute == "multi_worker":  # evaluate and save outside the strategy
        model = distributed.plain_copy(model, experiment.training)
    batch_size = experiment.training.batch_size
    scores = {
        split: training.evaluate(model, splits[split], spec, batch_size, reconstruct=reconstruct)
        for split in EVALUATED_SPLITS
        if split in splits
    }
    model.save(staging / "model.keras")
    example = splits["test"][0][:2].astype(np.int32 if spec.dtype == "int32" else np.float32)
    if chief:
        tracking.log_keras_model(model, example)
    return history, scores, model.count_params()


def pretrained_weights(pretrained_dir: Path | None, experiment: ExperimentConfig) -> Path | None:
    """The ImageNet weights file from the download stage, or None for random initial weights."""
    if experiment.model.weights != "imagenet" or pretrained_dir is None:
        return None
    source = load_json(pretrained_dir / SOURCE_FILE)
    if source.get("weights") != "imagenet":
        print(f"note: {source['description']}")
        return None
    (file_name,) = source["files"]
    return pretrained_dir / file_name


def _train_numpy(experiment, splits, seed, cap, staging):
    rng = np.random.default_rng(seed)
    x_train, y_train = splits["train"]
    classes = int(y_train.max()) + 1
    sizes = [x_train.shape[1], *experiment.model.hidden_units, 1 if classes == 2 else classes]
    model = NumpyMLP.initialise(sizes, experiment.model.activation, rng)
    as_float = {split: (x.astype(np.float64), y) for split, (x, y) in splits.items()}
    config = experiment.training
    history = fit_numpy(
        model,
        as_float["train"],
        as_float["val"],
        epochs=min(config.epochs, cap or config.epochs),
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        rng=rng,
    )
    history = [{"epoch": index + 1, "phase": "train", **row} for index, row in enumerate(history)]
    tracking.log_history(history)
    scores = {"test": {"loss": model.loss(*as_float["test"]), "accuracy": model.accuracy(*as_float["test"])}}
    model.save(staging / "model.npz")
    mlflow.log_artifact(str(staging / "model.npz"), artifact_path="model")
    return history, scores, sum(w.size + b.size for w, b in zip(model.weights, model.biases, strict=True))


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in history for key in row))
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(temporary, path)
