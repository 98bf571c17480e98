"""The NumPy MLP (dlzoo.models.scratch) as a family: the same hooks as the Keras families, without Keras.

It trains with its own mini-batch gradient descent on float64 arrays, saves its weights as
`model.npz`, predicts probabilities, and converts to ONNX by writing the graph by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from dlzoo import track
from dlzoo.config.experiments import ScratchMlpConfig, TrainingConfig, TrainSettings
from dlzoo.data.splits import Split
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets, Converted, FitOptions, Fitted
from dlzoo.models.scratch.numpy_mlp import NumpyMLP, Schedule
from dlzoo.models.scratch.numpy_mlp import fit as fit_numpy

NPZ_FILE = "model.npz"


@dataclass(frozen=True)
class ScratchFamily:
    name: str = "scratch_mlp"
    config: type = ScratchMlpConfig
    reconstructs: bool = False
    distributable: bool = False  # one process trains it; other workers have nothing to do
    pretrained: bool = False

    def adapt(self, config: ScratchMlpConfig, settings: TrainSettings, on_gpu: bool):
        return config, None

    def pretrained_weights(self, config: ScratchMlpConfig, pretrained_dir: Path | None) -> Path | None:
        return None

    def build(self, config: ScratchMlpConfig, spec: InputSpec, assets: Assets) -> NumpyMLP:
        outputs = 1 if assets.classes == 2 else assets.classes  # one sigmoid unit for two classes
        return NumpyMLP.initialise(
            [spec.shape[0], *config.hidden_units, outputs], config.activation, assets.rng
        )

    def fit(
        self, model: NumpyMLP, training_config: TrainingConfig, splits, spec, options: FitOptions
    ) -> Fitted:
        cap = options.max_epochs or training_config.epochs
        schedule = Schedule(
            min(training_config.epochs, cap), training_config.batch_size, training_config.learning_rate
        )
        rows = fit_numpy(model, _as_float(splits["train"]), _as_float(splits["val"]), schedule, options.rng)
        history = [{"epoch": index + 1, "phase": "train", **row} for index, row in enumerate(rows)]
        if options.track:
            track.log_history(history)
        return Fitted(model, history)

    def score(self, model: NumpyMLP, split: Split, spec: InputSpec, batch_size: int) -> dict[str, float]:
        x, y = _as_float(split)
        return {"loss": model.loss(x, y), "accuracy": model.accuracy(x, y)}

    def save(self, model: NumpyMLP, directory: Path) -> Path:
        model.save(directory / NPZ_FILE)
        return directory / NPZ_FILE

    def load(self, directory: Path) -> NumpyMLP:
        return NumpyMLP.load(directory / NPZ_FILE)

    def log_model(self, model: NumpyMLP, saved: Path, example: np.ndarray) -> None:
        mlflow.log_artifact(str(saved), artifact_path="model")

    def parameter_count(self, model: NumpyMLP) -> int:
        return sum(w.size + b.size for w, b in zip(model.weights, model.biases, strict=True))

    def predict(self, model: NumpyMLP, x: np.ndarray) -> np.ndarray:
        return model.predict_proba(x.astype(np.float64)).astype(np.float32)

    def to_onnx(self, model: NumpyMLP, spec: InputSpec, opset: int, x: np.ndarray) -> Converted:
        # ONNX, and the tensor names every export uses: only the export stage loads them.
        from dlzoo.export.conversion import INPUT_NAME, OUTPUT_NAME
        from dlzoo.models.scratch import onnx_graph

        proto = onnx_graph.to_onnx(model, opset, INPUT_NAME, OUTPUT_NAME)
        return Converted(proto, model.predict_proba(x.astype(np.float64)))


def _as_float(split: Split) -> Split:
    x, y = split
    return x.astype(np.float64), y


FAMILY = ScratchFamily()
