"""The NumPy MLP as a family: the same hooks as the Keras families, without Keras.

It trains with its own mini-batch gradient descent on float64 arrays, saves its weights as
`model.npz`, predicts probabilities, and converts to ONNX by writing the graph by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlzoo.config.experiments import ScratchMlpConfig, TrainingConfig, TrainSettings
from dlzoo.data.splits import Split
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets, Converted, Environment, FitOptions, Fitted
from dlzoo.models.scratch_mlp import onnx_graph
from dlzoo.models.scratch_mlp.numpy_mlp import NumpyMLP, Schedule
from dlzoo.models.scratch_mlp.numpy_mlp import fit as fit_numpy

NPZ_FILE = "model.npz"


@dataclass(frozen=True)
class ScratchFamily:
    name: str = "scratch_mlp"
    config: type = ScratchMlpConfig
    reconstructs: bool = False
    distributable: bool = False  # one process trains it; other workers have nothing to do
    pretrained: bool = False

    def environment(self, settings: TrainSettings) -> Environment:
        return Environment()  # one NumPy process; its generator is seeded with train.seed

    def adapt(self, config: ScratchMlpConfig, settings: TrainSettings, environment: Environment, demo: bool):
        return config, None

    def pretrained_weights(self, pretrained_dir: Path | None) -> Path | None:
        return None

    def variant(self, config: ScratchMlpConfig, weights_file: Path | None) -> str | None:
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
            from dlzoo import track  # the train stage's module (export does not track)

            track.log_history(history)
        return Fitted(model, history)

    def save(self, model: NumpyMLP, directory: Path) -> Path:
        model.save(directory / NPZ_FILE)
        return directory / NPZ_FILE

    def load(self, directory: Path) -> NumpyMLP:
        return NumpyMLP.load(directory / NPZ_FILE)

    def parameter_count(self, model: NumpyMLP) -> int:
        return sum(w.size + b.size for w, b in zip(model.weights, model.biases, strict=True))

    def to_onnx(self, model: NumpyMLP, spec: InputSpec, opset: int, x: np.ndarray) -> Converted:
        from dlzoo.onnx_model import INPUT_NAME, OUTPUT_NAME  # the export stage's module

        proto = onnx_graph.to_onnx(model, opset, INPUT_NAME, OUTPUT_NAME)
        return Converted(proto, model.predict_proba(x.astype(np.float64)))


def _as_float(split: Split) -> Split:
    x, y = split
    return x.astype(np.float64), y


FAMILY = ScratchFamily()
