"""The evaluate stage: test metrics to metrics/<experiment>.json and the MLflow run, plus plots."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from dlzoo import models, problems, track
from dlzoo.config import Params
from dlzoo.data.splits import load_info, load_split
from dlzoo.data.text import Vocabulary
from dlzoo.evaluate import plots, scoring
from dlzoo.models.family import Family
from dlzoo.store import atomic_directory, load_json, save_json

SPLITS = ("test", "test_full")


@dataclass(frozen=True)
class Loaded:
    """A trained model with its family: `predict` answers as the family predicts."""

    family: Family
    model: Any

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.family.predict(self.model, x)


SAMPLES_SHOWN = 16


def run(
    name: str,
    params: Params,
    model_dir: Path,
    data_dir: Path,
    history_file: Path,
    metrics_file: Path,
    plots_dir: Path,
) -> dict[str, Any]:
    experiment = params.experiment(name)
    info, summary = load_info(data_dir), load_json(model_dir / "summary.json")
    family = models.family(experiment.family)
    kind = problems.task_kind(info, family.reconstructs)
    model = Loaded(family, family.load(model_dir))
    results: dict[str, Any] = {
        "experiment": name,
        "task": experiment.task,
        "kind": kind,
        "profile": info["profile"],
    }
    with atomic_directory(plots_dir) as staging:
        for split in SPLITS:
            if split in info["splits"]:
                x, y = load_split(data_dir, split)
                results[split] = _score(kind, model, x, y, info, staging, split, name)
        history = _read_history(history_file)
        plots.training_curves(history, staging / "training_curves.png", f"{name}: training")
        _example_plots(kind, model, data_dir, info, staging, name)
        key, value = scoring.headline(kind, results["test"])
        results["headline"] = {"metric": key, "value": value}
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        save_json(metrics_file, results)
        _log_to_run(summary["mlflow_run_id"], results, staging)
    return results


def _score(kind, model: Loaded, x, y, info, out_dir, split, name) -> dict[str, Any]:
    outputs = model.predict(x)
    if kind in ("binary", "multiclass"):
        scores = scoring.classification_metrics(outputs, y, info["classes"])
        predicted = problems.probabilities(outputs).argmax(axis=1)
        scoring.write_predictions_csv(out_dir / f"{split}_predictions.csv", y, predicted, info["classes"])
        title = f"{name}: {split} confusion matrix"
        plots.confusion_matrix(
            scores["confusion_matrix"], info["classes"], out_dir / f"{split}_confusion.png", title
        )
        return scores
    if kind == "regression":
        return scoring.regression_metrics(outputs, y)
    errors = scoring.reconstruction_errors(outputs, x, info["input"]["scale"])
    return scoring.reconstruction_metrics(errors)


def _example_plots(kind, model: Loaded, data_dir, info, out_dir, name) -> None:
    x, y = load_split(data_dir, "test")
    shown = slice(0, SAMPLES_SHOWN)
    if x.ndim == 2 and x.shape[1] == 2:  # moons, blobs: the decision boundary
        plots.decision_boundary(
            lambda grid: problems.probabilities(model.predict(grid)).argmax(axis=1),
            x,
            y,
            out_dir / "decision_boundary.png",
            f"{name}: decision boundary",
        )
    elif kind == "regression":
        plots.actual_vs_predicted(
            y,
            model.predict(x)[:, 0],
            out_dir / "actual_vs_predicted.png",
            f"{name}: test series, actual vs predicted",
        )
    elif kind == "reconstruction":
        originals = x[:10].astype(np.float32) * info["input"]["scale"]
        plots.reconstructions(
            originals,
            model.predict(x[:10]),
            out_dir / "reconstructions.png",
            f"{name}: test digits and their reconstructions",
        )
    elif "vocabulary" in info.get("input", {}):
        vocabulary = Vocabulary.load(data_dir / info["input"]["vocabulary"])
        texts = [vocabulary.decode(ids) for ids in x[:6]]
        scores = problems.probabilities(model.predict(x[:6]))[:, 1]
        plots.text_predictions(
            texts,
            y[:6],
            scores,
            info["classes"],
            out_dir / "sample_predictions.png",
            f"{name}: test reviews (as the model sees them)",
        )
    elif x.ndim >= 3:
        predicted = problems.probabilities(model.predict(x[shown])).argmax(axis=1)
        plots.image_predictions(
            x[shown],
            y[shown],
            predicted,
            info["classes"],
            out_dir / "sample_predictions.png",
            f"{name}: test images, predicted (true)",
        )


def _read_history(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _log_to_run(run_id: str, results: dict[str, Any], plots_dir: Path) -> None:
    with track.resume_run(run_id):
        for split in SPLITS:
            if split in results:
                mlflow.log_metrics(scoring.scalar_metrics(f"eval_{split}", results[split]))
        mlflow.log_dict(results, "evaluation/metrics.json")
        mlflow.log_artifacts(str(plots_dir), artifact_path="evaluation")
