"""PNG plots of an experiment: matplotlib, headless, one function per kind of picture."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only

import matplotlib.pyplot as plt
import numpy as np

from dlzoo import problems


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def training_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss and the first other metric, train vs validation; fine-tuning's start is marked."""
    epochs = [int(row["epoch"]) for row in history]
    metric = next((key for key in ("accuracy", "mae") if key in history[0]), None)
    panels = ["loss", metric] if metric else ["loss"]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    fine_tune = next((int(row["epoch"]) for row in history if row.get("phase") == "fine_tune"), None)
    for axis, name in zip(axes[0], panels, strict=True):
        axis.plot(epochs, [float(row[name]) for row in history], label=f"train {name}")
        if f"val_{name}" in history[0]:
            axis.plot(epochs, [float(row[f"val_{name}"]) for row in history], label=f"validation {name}")
        if fine_tune is not None:
            axis.axvline(fine_tune - 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    return _save(figure, path)


def confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    for (row, column), value in np.ndenumerate(counts):
        color = "white" if value > counts.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axis)
    axis.set_title(title)
    return _save(figure, path)


def decision_boundary(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, path: Path, title: str
) -> Path:
    """Predicted class over a grid around the 2-D data, with the test points on top."""
    low, high = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    grid_x, grid_y = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    grid = np.c_[grid_x.ravel(), grid_y.ravel()].astype(np.float32)
    classes = predict(grid).reshape(grid_x.shape)
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.contourf(
        grid_x, grid_y, classes, alpha=0.3, cmap="viridis", levels=np.arange(classes.max() + 2) - 0.5
    )
    axis.scatter(x[:, 0], x[:, 1], c=y, cmap="viridis", edgecolors="black", linewidths=0.4, s=18)
    axis.set_title(title)
    return _save(figure, path)


def actual_vs_predicted(actual: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> Path:
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot(actual, label="actual", linewidth=1.2)
    axis.plot(predicted, label="predicted", linewidth=1.2)
    axis.set_xlabel("test step (time order)")
    axis.legend()
    axis.grid(alpha=0.3)
    axis.set_title(title)
    return _save(figure, path)


def reconstructions(originals: np.ndarray, rebuilt: np.ndarray, path: Path, title: str) -> Path:
    count = len(originals)
    figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.2))
    side = int(np.sqrt(rebuilt.shape[1]))
    for column in range(count):
        axes[0, column].imshow(originals[column].reshape(side, side), cmap="gray")
        axes[1, column].imshow(rebuilt[column].reshape(side, side), cmap="gray")
        for row in (0, 1):
            axes[row, column].axis("off")
    axes[0, 0].set_title("original", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstructed", fontsize=8, loc="left")
    figure.suptitle(title)
    return _save(figure, path)


def image_predictions(
    images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, classes: list[str], path: Path, title: str
) -> Path:
    count = len(images)
    columns = min(count, 8)
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.2 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index]
        axis.imshow(image, cmap=None if image.ndim == 3 else "gray")
        right = labels[index] == predicted[index]
        axis.set_title(
            f"{classes[predicted[index]]}\n(true {classes[labels[index]]})",
            fontsize=7,
            color="green" if right else "red",
        )
    figure.suptitle(title)
    return _save(figure, path)


def text_predictions(
    texts: list[str], labels: np.ndarray, scores: np.ndarray, classes: list[str], path: Path, title: str
) -> Path:
    figure, axis = plt.subplots(figsize=(10, 0.9 * len(texts) + 0.6))
    axis.axis("off")
    y = 1.0
    predicted = problems.predicted_classes(scores[:, np.newaxis])  # scores: the positive class's
    for text, label, score, predicted_class in zip(texts, labels, scores, predicted, strict=True):
        header = f"predicted {classes[predicted_class]} ({score:.2f}), true {classes[label]}"
        axis.text(
            0,
            y,
            header,
            fontsize=9,
            weight="bold",
            color="green" if predicted_class == label else "red",
            va="top",
            transform=axis.transAxes,
        )
        body = textwrap.shorten(text, 330, placeholder=" ...")
        axis.text(
            0,
            y - 0.045,
            textwrap.fill(body, 120),
            fontsize=7.5,
            va="top",
            family="monospace",
            transform=axis.transAxes,
        )
        y -= 1.0 / len(texts)
    axis.set_title(title)
    return _save(figure, path)
