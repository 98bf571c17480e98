"""What the stages ask of an architecture family.

A family is a package under dlzoo.models holding a `FAMILY` object; the registry in
dlzoo.models maps names to them. The stages own the order (train: environment -> adapt ->
build -> fit -> save; export: load -> to_onnx; evaluate runs the ONNX file and needs no family)
and call these hooks, so no stage asks which family it holds. Capabilities are plain
attributes: `reconstructs` (trained to give back its input), `distributable` (trains under a
tf.distribute strategy), `pretrained` (may start from downloaded weights). A Keras family
usually writes only its builder; `KerasFamily` (dlzoo.models.keras_family) supplies the rest.
The NumPy MLP (dlzoo.models.scratch_mlp) implements the same hooks without Keras, and nothing
here imports TensorFlow: a stage loads it only through a Keras family.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dlzoo.config.experiments import TrainingConfig, TrainSettings
from dlzoo.data.splits import Split
from dlzoo.inputs import InputSpec


@dataclass(frozen=True)
class Assets:
    """What a build may need besides its config and the input spec."""

    classes: int  # output classes of the data set (0: not a classification)
    rng: np.random.Generator  # seeded with train.seed; shared with fit by families that draw from NumPy
    weights_file: Path | None = None  # pretrained weights, for families that declare `pretrained`


@dataclass(frozen=True)
class Environment:
    """Where a training runs, as the family set it up (seeds, precision, devices, strategy)."""

    strategy: Any = None  # the tf.distribute strategy (Keras families), None for one process
    chief: bool = True  # only the chief (worker 0) writes outputs and logs to MLflow
    device: str = "CPU"  # for the MLflow run: the GPUs used, or CPU

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    def scope(self) -> Any:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class FitOptions:
    seed: int
    rng: np.random.Generator  # the same generator the build drew from
    max_epochs: int | None = None  # per phase (the demo profile's cap)
    track: bool = True  # log each epoch to the active MLflow run (the chief only)
    verbose: int = 2  # Keras' fit verbosity (the --verbose flag of `dlzoo train`; no output depends on it)
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

    def environment(self, settings: TrainSettings) -> Environment: ...
    def adapt(
        self, config: Any, settings: TrainSettings, environment: Environment, demo: bool
    ) -> tuple[Any, str | None]: ...
    def pretrained_weights(self, pretrained_dir: Path | None) -> Path | None: ...
    def variant(self, config: Any, weights_file: Path | None) -> str | None:
        """A name for what trains if it is not the recipe itself (no weights: "random weights"),
        or None; raises DlzooError where the experiment refuses to train that way."""
        ...

    def build(self, config: Any, spec: InputSpec, assets: Assets) -> Any: ...
    def fit(
        self,
        model: Any,
        training: TrainingConfig,
        splits: dict[str, Split],
        spec: InputSpec,
        options: FitOptions,
    ) -> Fitted: ...
    def save(self, model: Any, directory: Path) -> Path: ...
    def load(self, directory: Path) -> Any: ...
    def parameter_count(self, model: Any) -> int: ...
    def to_onnx(self, model: Any, spec: InputSpec, opset: int, x: np.ndarray) -> Converted: ...
