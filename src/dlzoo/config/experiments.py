"""Experiment settings: one block per experiment, with its family's model and its training.

Adding an experiment is one block in params.yaml. The built-in families' model config classes
live here (FAMILY_CONFIGS), so that reading params.yaml loads no Keras; a new family may define
its config class in its own module, and `dlzoo.models.register` adds it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from dlzoo.config.base import Recorded, bounded

Activation = Literal["relu", "tanh", "sigmoid", "linear"]
OutputActivation = Literal["sigmoid", "softmax", "linear"]


@dataclass(frozen=True)
class MlpConfig(Recorded):
    hidden_units: tuple[int, ...]
    activation: Activation
    dropout: float = bounded(ge=0, lt=1)
    l1: float = bounded(ge=0)
    l2: float = bounded(ge=0)
    batch_norm: bool
    output_units: int = bounded(ge=1)
    output_activation: OutputActivation


@dataclass(frozen=True)
class CnnConfig(Recorded):
    conv_filters: tuple[int, ...]
    pool_after: tuple[bool, ...]
    kernel_size: int = bounded(ge=1)
    pool_size: int = bounded(ge=1)
    activation: Activation
    dense_units: tuple[int, ...]
    dropout: float = bounded(ge=0, lt=1)
    output_units: int = bounded(ge=1)
    output_activation: OutputActivation
    # Augmentation while training (identity at inference, so nothing of it is exported):
    random_flip: Literal["none", "horizontal"]
    random_translation: float = bounded(ge=0, lt=0.5)  # fraction of the height and width

    def problems(self) -> dict[str, str]:
        if len(self.pool_after) != len(self.conv_filters):
            return {"pool_after": f"needs one entry per conv layer ({len(self.conv_filters)})"}
        return {}


@dataclass(frozen=True)
class RnnConfig(Recorded):
    cell: Literal["simple_rnn", "lstm", "gru"]
    units: int = bounded(ge=1)
    activation: Activation
    dropout: float = bounded(ge=0, lt=1)
    recurrent_dropout: float = bounded(ge=0, lt=1)
    embedding_dim: int = bounded(ge=0)  # 0: the inputs are already feature vectors
    mask_padding: bool  # skip padding ids (0) in the recurrence instead of reading them
    dense_units: tuple[int, ...]
    dense_activation: Activation
    output_units: int = bounded(ge=1)
    output_activation: OutputActivation


@dataclass(frozen=True)
class TransferConfig(Recorded):
    fine_tunes: ClassVar[bool] = True  # accepts training.fine_tune: a second, unfrozen phase
    starts_from: ClassVar[tuple[str, ...]] = ("mobilenet_v2",)  # accepted `pretrained` weights
    needs_pretrained: ClassVar[bool] = True  # the recipe freezes the base: random weights need a name

    image_size: int = bounded(ge=32)
    demo_image_size: int = bounded(ge=32)  # the demo profile's smoke run
    dropout: float = bounded(ge=0, lt=1)
    output_units: int = bounded(ge=1)
    output_activation: OutputActivation
    # The demo profile is offline and has no ImageNet weights. random: train the random-weights
    # variant of the same recipe (its MLflow run is named so); fail: refuse to train.
    demo_weights: Literal["random", "fail"]


@dataclass(frozen=True)
class AutoencoderConfig(Recorded):
    encoder_units: tuple[int, ...]
    decoder_units: tuple[int, ...]
    activation: Activation
    output_activation: OutputActivation

    def problems(self) -> dict[str, str]:
        if not self.encoder_units:
            return {"encoder_units": "needs at least one layer (the last is the code size)"}
        return {}


@dataclass(frozen=True)
class TransformerConfig(Recorded):
    embed_dim: int = bounded(ge=1)
    num_heads: int = bounded(ge=1)
    ff_dim: int = bounded(ge=1)
    block_dropout: float = bounded(ge=0, lt=1)  # on the attention and feed-forward outputs
    dropout: float = bounded(ge=0, lt=1)  # before the classifier
    output_units: int = bounded(ge=1)
    output_activation: OutputActivation


@dataclass(frozen=True)
class ScratchMlpConfig(Recorded):
    hidden_units: tuple[int, ...]
    activation: Literal["relu", "tanh", "sigmoid"]


FAMILY_CONFIGS: dict[str, type] = {
    "mlp": MlpConfig,
    "cnn": CnnConfig,
    "rnn": RnnConfig,
    "transfer": TransferConfig,
    "autoencoder": AutoencoderConfig,
    "transformer": TransformerConfig,
    "scratch_mlp": ScratchMlpConfig,
}


@dataclass(frozen=True)
class EarlyStoppingConfig(Recorded):
    monitor: str
    patience: int = bounded(ge=0)
    restore_best_weights: bool


@dataclass(frozen=True)
class ReduceLrConfig(Recorded):
    monitor: str
    factor: float = bounded(gt=0, lt=1)
    patience: int = bounded(ge=0)
    min_lr: float = bounded(ge=0)


@dataclass(frozen=True)
class ExponentialDecayConfig(Recorded):
    decay_steps: int = bounded(ge=1)
    decay_rate: float = bounded(gt=0, le=1)
    staircase: bool


@dataclass(frozen=True)
class FineTuneConfig(Recorded):
    """Phase 2 of transfer learning: unfreeze the base from a layer on, recompile, continue."""

    from_layer: int = bounded(ge=0)
    learning_rate: float = bounded(gt=0)
    epochs: int = bounded(ge=1)


@dataclass(frozen=True)
class TrainingConfig(Recorded):
    optimizer: Literal["adam", "sgd", "rmsprop"]
    learning_rate: float = bounded(gt=0)
    loss: Literal["binary_crossentropy", "sparse_categorical_crossentropy", "mse"]
    metrics: tuple[Literal["accuracy", "mae"], ...]
    epochs: int = bounded(ge=1)
    demo_max_epochs: int = bounded(ge=1)  # cap per phase on the demo profile: a smoke run
    batch_size: int = bounded(ge=1)
    early_stopping: EarlyStoppingConfig | None
    reduce_lr: ReduceLrConfig | None
    lr_schedule: ExponentialDecayConfig | None
    fine_tune: FineTuneConfig | None

    def problems(self) -> dict[str, str]:
        # ReduceLROnPlateau sets the optimizer's rate, which a schedule owns: they cannot mix.
        if self.reduce_lr is not None and self.lr_schedule is not None:
            return {"reduce_lr": "cannot be combined with lr_schedule; set one of them to null"}
        return {}


@dataclass(frozen=True)
class ExperimentConfig(Recorded):
    task: str  # the MLflow experiment that groups the runs to compare
    data: str  # the processed data set, a path under data/processed
    family: Literal[tuple(FAMILY_CONFIGS)]
    pretrained: str  # downloaded weights to start from (a raw data set under data/raw), or none
    model: Any  # the family's config class, picked by field_types
    training: TrainingConfig

    @classmethod
    def field_types(cls, raw: dict, path: str) -> dict[str, type]:
        family = raw.get("family")
        return {"model": FAMILY_CONFIGS[family]} if family in FAMILY_CONFIGS else {}

    def problems(self) -> dict[str, str]:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.task):
            return {"task": f"{self.task!r} must be lower-case letters, digits and dashes"}
        if self.training.fine_tune is not None and not getattr(type(self.model), "fine_tunes", False):
            return {"training.fine_tune": f"the {self.family} family has no fine-tuning phase; use null"}
        if getattr(type(self.model), "needs_pretrained", False) and self.pretrained == "none":
            return {
                "pretrained": f"the {self.family} family trains on top of pretrained weights; name them "
                "(mobilenet_v2), or train a baseline from random weights with another family (cnn)"
            }
        accepted = ("none", *getattr(type(self.model), "starts_from", ()))
        if self.pretrained not in accepted:
            return {
                "pretrained": f"{self.pretrained!r}: the {self.family} family accepts {', '.join(accepted)}"
            }
        return {}


@dataclass(frozen=True)
class ExportSettings(Recorded):
    opset: int = bounded(ge=13, le=18)  # tf2onnx 1.17 with TF 2.21 converts 13-18, not 19+
    tolerance: float = bounded(gt=0)  # max |ONNX Runtime - trained model| on validation samples
    parity_samples: int = bounded(ge=1)


Int8Rule = Literal["dynamic", "static", "none"]


@dataclass(frozen=True)
class OptimiseSettings(Recorded):
    """The optimise stage: ONNX Runtime variants of each exported model, kept only if they score
    within the tolerance of the FP32 model on the validation split."""

    graph_level: Literal["basic", "extended"]  # "all" adds layout-specific (NCHWc) rewrites: not portable
    max_accuracy_drop: float = bounded(ge=0, le=1)  # classifiers: validation accuracy may drop this much
    max_loss_increase: float = bounded(ge=0)  # regression MSE, reconstruction BCE: relative increase allowed
    calibration_samples: int = bounded(ge=1)  # static INT8: training samples that set activation ranges
    int8: dict[str, Int8Rule]  # family -> dynamic (MatMul, Gather, LSTM weights) | static (QDQ) | none
    transformer_fusion: tuple[str, ...]  # families fused by ONNX Runtime's transformer optimiser first


@dataclass(frozen=True)
class ServingSettings(Recorded):
    """How the model repository is served; config.pbtxt carries these to Triton and `dlzoo serve`."""

    max_batch_size: int = bounded(ge=1)  # samples per request and per merged batch
    max_queue_delay_ms: float = bounded(ge=0)  # how long the dynamic batcher waits to merge requests
    max_queue_size: int = bounded(ge=1)  # requests waiting per model; more are refused at once
    instances: int = bounded(ge=1)  # model instances on the CPU (Triton's instance_group count)


@dataclass(frozen=True)
class TrainSettings(Recorded):
    seed: int = bounded(ge=0)
    deterministic: bool
    mixed_precision: bool  # float16 compute with float32 weights and outputs (a GPU speed-up)
    jit_compile: bool  # XLA-compile the train and predict steps
    cudnn_rnn: bool  # LSTM/GRU may use cuDNN kernels on a GPU (when their settings allow)
    distribute: Literal["none", "mirrored", "multi_worker"]  # tf.distribute strategy

    def problems(self) -> dict[str, str]:
        if self.jit_compile and self.deterministic:
            # Keras 3.15 silently compiles without XLA once op determinism is on.
            return {
                "jit_compile": "Keras turns XLA off under op determinism; set deterministic: false to use it"
            }
        return {}
