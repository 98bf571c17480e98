"""The evaluate stage: test metrics of the served ONNX file, to metrics/<experiment>.json, and plots.

It runs the exported model with ONNX Runtime, as `dlzoo serve` and Triton do, so the numbers are
those of what is served; it loads no TensorFlow and no MLflow and reads no params (the export's
metadata says what the model is). The track stage adds the results to the training's MLflow run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlzoo import onnx_model, problems
from dlzoo.data.splits import load_info, load_split
from dlzoo.data.text import Vocabulary
from dlzoo.evaluate import plots, scoring
from dlzoo.records import (
    METADATA_FILE,
    MODEL_FILE,
    VARIANTS_FILE,
    DataInfo,
    ExportMetadata,
    Headline,
    Metrics,
    TextInput,
    Variants,
    VariantScores,
)
from dlzoo.store import atomic_directory

SPLITS = ("test", "test_full")
SAMPLES_SHOWN = 16


@dataclass(frozen=True)
class Files:
    """What the stage reads and writes."""

    export_dir: Path  # from the export stage: model.onnx and metadata.json
    data_dir: Path  # processed data
    history_file: Path  # per-epoch CSV from the train stage
    metrics_file: Path  # metrics/<experiment>.json to write
    plots_dir: Path  # PNG plots (and the predictions CSV for dvc plots) to write
    variants_dir: Path | None = None  # from the optimise stage: variants.json and the kept variants


@dataclass(frozen=True)
class Evaluation:
    """A trained model, the problem it solves and its data; plots go to `out_dir`."""

    name: str
    session: Any  # onnxruntime.InferenceSession
    problem: str
    info: DataInfo
    data_dir: Path
    out_dir: Path

    def predict(self, x: np.ndarray) -> np.ndarray:
        return onnx_model.predict(self.session, x)

    def classes_of(self, x: np.ndarray) -> np.ndarray:
        return problems.predicted_classes(self.predict(x))

    def title(self, text: str) -> str:
        return f"{self.name}: {text}"


def run(name: str, files: Files) -> Metrics:
    info = load_info(files.data_dir)
    metadata = ExportMetadata.read(files.export_dir / METADATA_FILE)
    session = onnx_model.session(files.export_dir / MODEL_FILE)
    problem = metadata.problem
    with atomic_directory(files.plots_dir) as staging:
        evaluation = Evaluation(name, session, problem, info, files.data_dir, staging)
        scores = {
            split: _score(evaluation, split, *load_split(files.data_dir, split))
            for split in SPLITS
            if split in info.splits
        }
        history = _read_history(files.history_file)
        plots.training_curves(history, staging / "training_curves.png", evaluation.title("training"))
        _example_plot(evaluation, *load_split(files.data_dir, "test"))
        headline = scoring.headline(problem, scores)
        metrics = Metrics(
            variants=variant_scores(evaluation, files.variants_dir, headline) if files.variants_dir else None,
            experiment=name,
            task=metadata.task,
            problem=problem,
            profile=info.profile,
            headline=Headline(**headline),
            training_variant=metadata.training_variant,
            **scores,
        )
        files.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics.write(files.metrics_file)
    return metrics


def variant_scores(
    evaluation: Evaluation, variants_dir: Path, headline: dict[str, Any]
) -> dict[str, VariantScores]:
    """The optimise stage's decisions, with each kept variant's headline metric on the headline
    split beside the FP32 one (the gate read only the validation split)."""
    x, y = load_split(evaluation.data_dir, headline["split"])
    scale = getattr(evaluation.info.input, "scale", None)
    found = {}
    for decision in Variants.read(variants_dir / VARIANTS_FILE).variants:
        scores = {
            "version": decision.version,
            "kept": decision.kept,
            "reason": decision.reason,
            "validation_change": decision.gate.change if decision.gate else None,
        }
        if decision.kept:
            outputs = onnx_model.predict(onnx_model.session(variants_dir / decision.kind / MODEL_FILE), x)
            value = scoring.headline_value(evaluation.problem, outputs, x, y, scale)
            scores.update(test=value, test_change=value - headline["value"])
        found[decision.kind] = VariantScores(**scores)
    return found


def _score(evaluation: Evaluation, split: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    outputs = evaluation.predict(x)
    if evaluation.problem in problems.CLASSIFICATION:
        classes = evaluation.info.classes
        scores = scoring.classification_metrics(outputs, y, classes)
        predicted = problems.predicted_classes(outputs)
        out_dir = evaluation.out_dir
        scoring.write_predictions_csv(out_dir / f"{split}_predictions.csv", y, predicted, classes)
        title = evaluation.title(f"{split} confusion matrix")
        plots.confusion_matrix(scores["confusion_matrix"], classes, out_dir / f"{split}_confusion.png", title)
        return scores
    if evaluation.problem == "regression":
        return scoring.regression_metrics(outputs, y)
    errors = scoring.reconstruction_errors(outputs, x, evaluation.info.input.scale)
    return scoring.reconstruction_metrics(errors)


def _example_plot(evaluation: Evaluation, x: np.ndarray, y: np.ndarray) -> None:
    """One picture of what the model does on test samples, chosen by its problem and inputs."""
    if x.ndim == 2 and x.shape[1] == 2:  # moons, blobs
        _decision_boundary(evaluation, x, y)
    elif evaluation.problem == "regression":
        _actual_vs_predicted(evaluation, x, y)
    elif evaluation.problem == "reconstruction":
        _reconstructions(evaluation, x)
    elif isinstance(evaluation.info.input, TextInput):
        _text_predictions(evaluation, x, y)
    elif x.ndim >= 3:
        _image_predictions(evaluation, x, y)


def _decision_boundary(evaluation: Evaluation, x: np.ndarray, y: np.ndarray) -> None:
    path = evaluation.out_dir / "decision_boundary.png"
    plots.decision_boundary(evaluation.classes_of, x, y, path, evaluation.title("decision boundary"))


def _actual_vs_predicted(evaluation: Evaluation, x: np.ndarray, y: np.ndarray) -> None:
    path = evaluation.out_dir / "actual_vs_predicted.png"
    title = evaluation.title("test series, actual vs predicted")
    plots.actual_vs_predicted(y, evaluation.predict(x)[:, 0], path, title)


def _reconstructions(evaluation: Evaluation, x: np.ndarray) -> None:
    originals = x[:10].astype(np.float32) * evaluation.info.input.scale
    path = evaluation.out_dir / "reconstructions.png"
    title = evaluation.title("test digits and their reconstructions")
    plots.reconstructions(originals, evaluation.predict(x[:10]), path, title)


def _text_predictions(evaluation: Evaluation, x: np.ndarray, y: np.ndarray) -> None:
    vocabulary = Vocabulary.load(evaluation.data_dir / evaluation.info.input.vocabulary)
    texts = [vocabulary.decode(ids) for ids in x[:6]]
    scores = problems.probabilities(evaluation.predict(x[:6]))[:, 1]
    path = evaluation.out_dir / "sample_predictions.png"
    title = evaluation.title("test reviews (as the model sees them)")
    plots.text_predictions(texts, y[:6], scores, evaluation.info.classes, path, title)


def _image_predictions(evaluation: Evaluation, x: np.ndarray, y: np.ndarray) -> None:
    shown = slice(0, SAMPLES_SHOWN)
    path = evaluation.out_dir / "sample_predictions.png"
    title = evaluation.title("test images, predicted (true)")
    plots.image_predictions(
        x[shown], y[shown], evaluation.classes_of(x[shown]), evaluation.info.classes, path, title
    )


def _read_history(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))
