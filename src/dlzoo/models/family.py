"""What the stages ask of an architecture family, and the Keras defaults most families use.

A family is one module under dlzoo.models holding a `FAMILY` object; the registry in
dlzoo.models maps names to them. The stages own the order (train: adapt -> build -> fit ->
score -> save; evaluate: load -> predict; export: to_onnx) and call these hooks, so no stage
asks which family it holds. Capabilities are declared as plain attributes: `reconstructs`
(trained to give back its input), `distributable` (trains under a tf.distribute strategy),
`pretrained` (starts from downloaded weights). A Keras family usually writes only its builder;
`KerasFamily` supplies the rest. The NumPy MLP (dlzoo.models.scratch_mlp) implements the same
hooks without Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from dlzoo import runtime, track
from dlzoo.config.experiments import TrainingConfig, TrainSettings
from dlzoo.data.splits import Split
from dlzoo.inputs import InputSpec
from dlzoo.train import distributed, loop
from dlzoo.train.shared import FitSettings

KERAS_FILE = "model.keras"


@dataclass(frozen=True)
class Assets:
    """What a build may need besides its config and the input spec."""

    classes: int  # output classes of the data set (0: not a classification)
    rng: np.random.Generator  # seeded with train.seed; shared with fit by families that draw from NumPy
    weights_file: Path | None = None  # pretrained weights, for families that declare `pretrained`


@dataclass(frozen=True)
class FitOptions:
    seed: int
    rng: np.random.Generator  # the same generator the build drew from
    max_epochs: int | None = None  # per phase (the demo profile's cap)
    track: bool = True  # log each epoch to the active MLflow run (the chief only)
    verbose: int = 2
    jit_compile: bool = False
    cudnn_rnn: bool = True
    strategy: Any = None  # the tf.distribute strategy the model was built under


@dataclass(frozen=True)
class Fitted:
    model: Any  # what to score and save (multi-worker training hands back a plain copy)
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class Converted:
    proto: Any  # onnx.ModelProto
    expected: np.ndarray  # what the ONNX graph must reproduce on the parity samples
    note: str | None = None


class Family(Protocol):
    name: str
    config: type  # the dataclass of an experiment's `model:` block
    reconstructs: bool
    distributable: bool
    pretrained: bool

    def adapt(self, config: Any, settings: TrainSettings, on_gpu: bool) -> tuple[Any, str | None]: ...
    def pretrained_weights(self, config: Any, pretrained_dir: Path | None) -> Path | None: ...
    def build(self, config: Any, spec: InputSpec, assets: Assets) -> Any: ...
    def fit(
        self,
        model: Any,
        training: TrainingConfig,
        splits: dict[str, Split],
        spec: InputSpec,
        options: FitOptions,
    ) -> Fitted: ...
    def score(self, model: Any, split: Split, spec: InputSpec, batch_size: int) -> dict[str, float]: ...
    def save(self, model: Any, directory: Path) -> Path: ...
    def load(self, directory: Path) -> Any: ...
    def log_model(self, model: Any, saved: Path, example: np.ndarray) -> None: ...
    def parameter_count(self, model: Any) -> int: ...
    def predict(self, model: Any, x: np.ndarray) -> np.ndarray: ...
    def to_onnx(self, model: Any, spec: InputSpec, opset: int, x: np.ndarray) -> Converted: ...


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

    def adapt(self, config: Any, settings: TrainSettings, on_gpu: bool) -> tuple[Any, str | None]:
        return config, None

    def pretrained_weights(self, config: Any, pretrained_dir: Path | None) -> Path | None:
        return None

    def build(self, config: Any, spec: InputSpec, assets: Assets) -> keras.Model:
        return self.builder(config, spec)

    def fit(self, model, training_config, splits, spec, options: FitOptions) -> Fitted:
        runtime.set_cudnn(model, options.cudnn_rnn)
        settings = FitSettings(
            seed=options.seed,
            max_epochs=options.max_epochs,
            reconstruct=self.reconstructs,
            callbacks=[track.EpochLogger()] if options.track else [],
            verbose=options.verbose,
            jit_compile=options.jit_compile,
            strategy=options.strategy,
            unfreeze=self.unfreeze,
        )
        history = loop.train(model, training_config, splits, spec, settings)
        if distributed.is_multi_worker(options.strategy):  # score and save outside the strategy
            model = distributed.plain_copy(model, training_config)
        return Fitted(model, history)

    def score(self, model: keras.Model, split: Split, spec: InputSpec, batch_size: int) -> dict[str, float]:
        return loop.evaluate(model, split, spec, batch_size, reconstruct=self.reconstructs)

    def save(self, model: keras.Model, directory: Path) -> Path:
        model.save(directory / KERAS_FILE)
        return directory / KERAS_FILE

    def load(self, directory: Path) -> keras.Model:
        return keras.models.load_model(directory / KERAS_FILE)

    def log_model(self, model: keras.Model, saved: Path, example: np.ndarray) -> None:
        track.log_keras_model(model, example)

    def parameter_count(self, model: keras.Model) -> int:
        return model.count_params()

    def predict(self, model: keras.Model, x: np.ndarray) -> np.ndarray:
        dtype = np.int32 if np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8 else np.float32
        return model.predict(x.astype(dtype), batch_size=256, verbose=0)

    def to_onnx(self, model: keras.Model, spec: InputSpec, opset: int, x: np.ndarray) -> Converted:
        from dlzoo.export import conversion  # tf2onnx and ONNX Runtime: only the export stage loads them

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
