"""Processed data sets on disk: one `.npz` per split (`x`, `y`) plus an `info.json`.

The info file describes what a consumer needs without loading arrays: shapes, dtypes, value
ranges, class names and per-class counts, the profile and the SHA-256 of the raw inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlzoo.records import DataInfo
from dlzoo.store import load_npz, save_npz, sha256_of

INFO_FILE = "info.json"
Split = tuple[np.ndarray, np.ndarray]


def write_splits(out_dir: Path, splits: dict[str, Split], info: dict[str, Any]) -> DataInfo:
    """Writes `<split>.npz` for each split and an info.json that describes them all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = info.get("classes")
    described = {}
    for name, (x, y) in splits.items():
        if len(x) != len(y):
            raise ValueError(f"split {name}: {len(x)} inputs but {len(y)} targets")
        save_npz(out_dir / f"{name}.npz", x=x, y=y)
        described[name] = describe_split(x, y, classes) | {"sha256": sha256_of(out_dir / f"{name}.npz")}
    full_info = DataInfo.model_validate({**info, "splits": described})
    full_info.write(out_dir / INFO_FILE)
    return full_info


def describe_split(x: np.ndarray, y: np.ndarray, classes: list[str] | None) -> dict[str, Any]:
    summary = {
        "count": len(x),
        "x_shape": list(x.shape),
        "x_dtype": str(x.dtype),
        "x_range": [_number(x.min()), _number(x.max())] if x.size else None,
        "y_shape": list(y.shape),
        "y_dtype": str(y.dtype),
    }
    if classes is not None:
        counts = np.bincount(y, minlength=len(classes))
        summary["class_counts"] = {name: int(n) for name, n in zip(classes, counts, strict=True)}
    return summary


def load_split(data_dir: Path, split: str) -> Split:
    arrays = load_npz(Path(data_dir) / f"{split}.npz")
    return arrays["x"], arrays["y"]


def load_info(data_dir: Path) -> DataInfo:
    return DataInfo.read(Path(data_dir) / INFO_FILE)


def tail_split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[Split, Split]:
    """Holds out the last `fraction` as validation, as Keras' `validation_split` does."""
    held_out = round(len(x) * fraction)
    cut = len(x) - held_out
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _number(value: np.generic) -> float | int:
    return value.item()
