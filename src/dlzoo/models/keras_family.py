"""The Keras side of the families: `KerasFamily` supplies every hook but the builder.

Importing this module loads TensorFlow; only the train and export stages of Keras families do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dlzoo import runtime
from dlzoo.config.experiments import TrainSettings
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Converted, Environment, FitOptions, Fitted
from dlzoo.store import normalise_keras_archive
from dlzoo.train import distributed, loop
from dlzoo.train.shared import FitSettings

KERAS_FILE = "model.keras"


@dataclass(frozen=True)
class KerasFamily:
    """A Functional-API family: `builder(config, spec)` returns an uncompiled keras.Model."""

    name: str
    config: type
    builder: Callable[..., keras.Model]
    reconstructs: bool = False
    distributable: bool = True
    pretrained: bool = False
    unfreeze: Callable[[keras.Model, int], None] | None = None  # phase 2 (fine_tune)

    def environment(self, settings: TrainSettings) -> Environment:
        loop.set_seeds(settings.seed, settings.deterministic)
        runtime.configure_precision(settings.mixed_precision)
        strategy = runtime.strategy_for(settings.distribute)
        return Environment(strategy, runtime.is_chief(strategy), ", ".join(runtime.gpu_names()) or "CPU")

    def adapt(self, config: Any, settings: TrainSettings, environment: Environment, demo: bool):
        return config, None

    def pretrained_weights(self, pretrained_dir: Path | None) -> Path | None:
        return None

    def variant(self, config: Any, weights_file: Path | None) -> str | None:
        return None

    def build(self, config: Any, spec: InputSpec, assets: Any) -> keras.Model:
        return self.builder(config, spec)

    def fit(self, model, training_config, splits, spec, options: FitOptions) -> Fitted:
        runtime.set_cudnn(model, options.cudnn_rnn)
        settings = FitSettings(
            seed=options.seed,
            max_epochs=options.max_epochs,
            reconstruct=self.reconstructs,
            callbacks=[EpochLogger()] if options.track else [],
            verbose=options.verbose,
            jit_compile=options.jit_compile,
            strategy=options.strategy,
            unfreeze=self.unfreeze,
        )
        history = loop.train(model, training_config, splits, spec, settings)
        if distributed.is_multi_worker(options.strategy):  # save outside the strategy
            model = distributed.plain_copy(model, training_config)
        return Fitted(model, history)

    def save(self, model: keras.Model, directory: Path) -> Path:
        model.save(directory / KERAS_FILE)
        normalise_keras_archive(directory / KERAS_FILE)  # no save time inside: same weights, same bytes
        return directory / KERAS_FILE

    def load(self, directory: Path) -> keras.Model:
        return keras.models.load_model(directory / KERAS_FILE)

    def parameter_count(self, model: keras.Model) -> int:
        return model.count_params()

    def to_onnx(self, model: keras.Model, spec: InputSpec, opset: int, x: np.ndarray) -> Converted:
        from dlzoo.export import conversion  # tf2onnx: only the export stage loads it

        proto = conversion.keras_to_onnx(model, spec, opset)
        reference = conversion.exportable(model)  # float32, no cuDNN: what the ONNX graph computes
        expected = reference.predict(x, batch_size=256, verbose=0)
        if reference is model:
            return Converted(proto, expected)
        trained = model.predict(x, batch_size=256, verbose=0)
        note = (
            "the trained model (float16 compute or cuDNN) vs its float32 clone: max |diff| "
            f"{float(np.abs(trained - expected).max()):.2e}"
        )
        return Converted(proto, expected, note)


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics (and learning rate) to the active MLflow run, in batches."""

    def __init__(self) -> None:
        from dlzoo import track  # the train stage's module: export loads this file, not MLflow

        super().__init__()
        self._metrics = track.EpochMetrics()

    def on_epoch_end(self, epoch, logs=None):
        if logs:
            self._metrics.add(epoch + 1, logs)

    def on_train_end(self, logs=None):
        self._metrics.flush()
