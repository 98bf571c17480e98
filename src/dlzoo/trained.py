"""A trained model as the train stage saved it (a Keras file, or the NumPy MLP's arrays): load, predict.

The evaluate and export stages both start from it, so neither stage imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

import dlzoo.models  # noqa: F401  (registers the custom layers that saved models refer to)
from dlzoo.scratch.mlp import NumpyMLP


def load_trained(model_dir: Path) -> Any:
    if (model_dir / "model.npz").is_file():
        return NumpyMLP.load(model_dir / "model.npz")
    return keras.models.load_model(model_dir / "model.keras")


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    if isinstance(model, NumpyMLP):
        return model.predict_proba(x.astype(np.float64)).astype(np.float32)
    dtype = np.int32 if np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8 else np.float32
    return model.predict(x.astype(dtype), batch_size=256, verbose=0)
