"""Test metrics for a trained experiment, by the problem it solves.

- classification: accuracy, log loss, per-class precision/recall/F1, confusion matrix; binary
  problems also ROC AUC. The loss here is the data loss alone: Keras' reported loss of an L1/L2
  model includes the penalty, which makes regularised models look worse than they are.
- regression: MSE and MAE.
- reconstruction (autoencoder): binary cross-entropy per sample, its mean and distribution,
  which is what anomaly scores are made of.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as sk

from dlzoo.problems import CLASSIFICATION, predicted_classes, probabilities

Arrays = dict[str, np.ndarray]
_EPSILON = 1e-7


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: unlike the normal approximation it stays inside
    [0, 1] and keeps its coverage near 0 and 1 (an accuracy of 1.0 on 200 samples is not [1, 1])."""
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def classification_metrics(outputs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    probs = np.clip(probabilities(outputs).astype(np.float64), _EPSILON, 1.0)
    probs /= probs.sum(axis=1, keepdims=True)
    predicted = predicted_classes(outputs)
    indices = list(range(len(classes)))
    report = sk.classification_report(
        labels, predicted, labels=indices, target_names=classes, output_dict=True, zero_division=0
    )
    correct = int(np.sum(predicted == labels))
    result = {
        "accuracy": correct / len(labels),
        "accuracy_ci95": list(wilson_interval(correct, len(labels))),
        "loss": float(sk.log_loss(labels, probs, labels=indices)),
        "per_class": {
            name: {key: float(report[name][key]) for key in ("precision", "recall", "f1-score")}
            for name in classes
        },
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "confusion_matrix": sk.confusion_matrix(labels, predicted, labels=indices).tolist(),
        "samples": len(labels),
    }
    if len(classes) == 2:
        result["roc_auc"] = float(sk.roc_auc_score(labels, probs[:, 1]))
    return result


def regression_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    predicted = outputs.reshape(len(targets), -1)[:, 0]
    return {
        "mse": float(sk.mean_squared_error(targets, predicted)),
        "mae": float(sk.mean_absolute_error(targets, predicted)),
        "samples": len(targets),
    }


def reconstruction_errors(reconstructions: np.ndarray, originals: np.ndarray, scale: float) -> np.ndarray:
    """Binary cross-entropy of each sample's reconstruction (its anomaly score)."""
    target = originals.reshape(len(originals), -1).astype(np.float64) * scale
    predicted = np.clip(reconstructions.astype(np.float64), _EPSILON, 1 - _EPSILON)
    return -np.mean(target * np.log(predicted) + (1 - target) * np.log(1 - predicted), axis=1)


def reconstruction_metrics(errors: np.ndarray) -> dict[str, Any]:
    counts, edges = np.histogram(errors, bins=20)
    return {
        "loss": float(errors.mean()),
        "error_percentiles": {f"p{q}": float(np.percentile(errors, q)) for q in (50, 90, 99)},
        "error_max": float(errors.max()),
        "error_histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]},
        "samples": len(errors),
    }


HEADLINE_METRICS = {
    "binary": "accuracy",
    "multiclass": "accuracy",
    "regression": "mse",
    "reconstruction": "loss",
}


def headline_value(
    problem: str, outputs: np.ndarray, x: np.ndarray, y: np.ndarray, scale: float | None
) -> float:
    """The headline metric alone (HEADLINE_METRICS) of outputs for inputs `x` and labels `y`: what
    the optimise stage gates on and evaluate reports for each variant."""
    if problem in CLASSIFICATION:
        return float(np.mean(predicted_classes(outputs) == y))
    if problem == "regression":
        return regression_metrics(outputs, y)["mse"]
    return float(reconstruction_errors(outputs, x, scale).mean())


def headline(problem: str, scores_by_split: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The one number a table shows for this problem, on the largest test set the data keep
    (`test_full` where there is one: all 2,000 CIFAR-10 test cats and dogs, not the course's 100)."""
    split = "test_full" if "test_full" in scores_by_split else "test"
    scores = scores_by_split[split]
    metric = HEADLINE_METRICS[problem]
    result = {"metric": metric, "value": scores[metric], "split": split, "samples": scores["samples"]}
    if "accuracy_ci95" in scores:
        result["ci95_low"], result["ci95_high"] = scores["accuracy_ci95"]
    return result


def write_predictions_csv(path: Path, labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> None:
    """actual,predicted rows: the input of DVC's confusion-matrix template."""
    lines = [
        "actual,predicted",
        *(f"{classes[a]},{classes[p]}" for a, p in zip(labels, predicted, strict=True)),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
