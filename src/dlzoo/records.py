"""The files stages hand each other, one typed definition each.

    preprocess/generate -> info.json      DataInfo (CorpusInfo for the IMDB directory above its variants)
    train               -> summary.json   TrainSummary
    export              -> metadata.json  ExportMetadata (also the served model's metadata)
    optimise            -> variants.json  Variants (and an ExportMetadata per kept variant)
    evaluate            -> metrics/*.json Metrics

Writers build a record, so a missing or misspelt field fails where it is made; readers get a
clear error naming the file and what is wrong in it, instead of a KeyError three stages later.
Tests build and read these files through the same classes. Records are pydantic models: they
validate nested JSON, keep `null` apart from "absent" (`exclude_unset`), and need no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlzoo.errors import DlzooError
from dlzoo.store import load_json, save_json

Problem = Literal["binary", "multiclass", "regression", "reconstruction"]
DataProblem = Literal["binary", "multiclass", "regression"]  # what the labels pose
Profile = Literal["demo", "full"]
Number = int | float
SOURCE_FILE = "source.json"  # data/raw/<set>/: where every raw byte came from
SUMMARY_FILE = "summary.json"  # in a model directory, beside the model
# A history column (and compiled Keras metric) of models with a weight penalty: the loss alone,
# comparable across runs; Keras' `loss` adds the L1/L2 penalty.
DATA_LOSS = "data_loss"
# An export directory (and each repository version): the ONNX file and its ExportMetadata.
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


class RecordError(DlzooError):
    """A stage's input file is missing or does not match its record."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    @classmethod
    def read(cls, path: Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise RecordError(f"{path} is missing: run the stage that writes it first (dvc repro)")
        try:
            return cls.model_validate(load_json(path))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or '(top)'}: {item['msg']}" for item in error.errors()
            )
            raise RecordError(
                f"{path} is not a valid {cls.__name__} ({problems}); it was written by another "
                "version of dlzoo or edited by hand: rerun the stage that writes it (dvc repro)"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; optional fields that were never set stay absent rather than null."""
        return self.model_dump(mode="json", exclude_unset=True)

    def write(self, path: Path) -> None:
        save_json(Path(path), self.to_json())


# ---- info.json: a processed data set --------------------------------------------------------


class SplitSummary(Record):
    count: int
    x_shape: list[int]
    x_dtype: str
    x_range: list[Number] | None  # None for an empty split
    y_shape: list[int]
    y_dtype: str
    sha256: str  # of the split's .npz file: the dataset's identity in MLflow
    class_counts: dict[str, int] | None = None  # classification only


class ImageInput(Record):
    """Pixels are stored raw (uint8); the model multiplies by `scale` itself."""

    note: str
    offset: float
    scale: float


class TokenIds(Record):
    """How reviews became padded token ids; the server encodes raw text the same way."""

    vocab_size: int
    max_length: int
    padding: Literal["pre", "post"]
    truncating: Literal["pre", "post"]
    pad_id: int
    start_id: int
    oov_id: int


class TextInput(TokenIds):
    vocabulary: str  # relative to info.json


class DataInfo(Record):
    """A directory of `<split>.npz` files and what a consumer needs without loading them."""

    dataset: str
    profile: Profile
    stand_in: bool  # demo stand-in data, not the canonical set
    problem: DataProblem
    classes: list[str] | None
    source: dict[str, Any]  # provenance: origins and SHA-256 of the raw files, or the generator
    splits: dict[str, SplitSummary]
    input: ImageInput | TextInput | None = None
    noise_floor_mse: float | None = None  # the sine wave's noise variance: the best MSE possible


class TokensPerReview(Record):
    mean: float
    median: float
    truncated_fraction: float


class CorpusInfo(Record):
    """The IMDB directory: the shared vocabulary and one DataInfo directory per vocabulary size."""

    dataset: str
    profile: Profile
    stand_in: bool
    problem: DataProblem
    source: dict[str, Any]
    vocabulary_words: int
    variants: list[str]
    train_tokens_per_review: TokensPerReview


# ---- summary.json: a trained model ----------------------------------------------------------


class TrainSummary(Record):
    experiment: str
    task: str
    family: str
    profile: Profile
    stand_in: bool
    epochs: int
    parameters: int
    model_file: str  # beside this summary: model.keras, or model.npz for the NumPy MLP
    training_variant: str | None = None  # what trained if not the recipe itself: "random weights"


# ---- metrics/<experiment>.json --------------------------------------------------------------


class ClassScores(Record):
    precision: float
    recall: float
    f1_score: float = Field(alias="f1-score")


class ClassificationScores(Record):
    accuracy: float
    accuracy_ci95: list[float]  # Wilson score interval of the accuracy on these samples
    loss: float  # log loss of the data alone (no L1/L2 penalty)
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    samples: int
    roc_auc: float | None = None  # binary only


class RegressionScores(Record):
    mse: float
    mae: float
    samples: int


class Histogram(Record):
    counts: list[int]
    edges: list[float]


class ReconstructionScores(Record):
    loss: float  # mean per-sample binary cross-entropy
    error_percentiles: dict[str, float]
    error_max: float
    error_histogram: Histogram
    samples: int


Scores = ClassificationScores | RegressionScores | ReconstructionScores


class Headline(Record):
    """The one number a table shows, with what it was measured on: a reader of `dvc metrics diff`
    needs the sample count and the interval to tell a change from noise."""

    metric: str
    value: float
    split: str  # test, or test_full where the data keep a larger test set
    samples: int
    ci95_low: float | None = None  # classification: Wilson 95% interval of the accuracy
    ci95_high: float | None = None


class VariantScores(Record):
    """A variant of the served model beside the FP32 one: the gate's decision on the validation
    split and, for a kept variant, the headline metric on the headline split."""

    version: str
    kept: bool
    reason: str
    validation_change: float | None  # variant - FP32, on the validation split (None: not run)
    test: float | None = None  # the headline metric on the headline split (kept variants)
    test_change: float | None = None  # test - the FP32 headline


class Metrics(Record):
    experiment: str
    task: str
    problem: Problem
    profile: Profile
    test: Scores
    headline: Headline
    test_full: Scores | None = None
    training_variant: str | None = None  # from the export's metadata: "random weights", if so
    variants: dict[str, VariantScores] | None = None  # the optimise stage's variants, by kind


# ---- metadata.json: an exported (and served) model ------------------------------------------


class TensorInfo(Record):
    name: str
    datatype: str  # Open Inference Protocol name: FP32, INT32, ...
    shape: list[int]  # -1: any size


class Parity(Record):
    samples: int
    max_abs_diff: float
    tolerance: float
    classes_agree: bool  # always true for a model that is not a classifier


class TensorPreprocessing(Record):
    type: Literal["tensor"]


class ImagePreprocessing(Record):
    type: Literal["image"]
    shape: list[int]
    raw_dtype: Literal["UINT8"]
    note: str


class TextPreprocessing(TokenIds):
    type: Literal["text"]
    tokenizer: str
    vocabulary: str  # relative to metadata.json


Preprocessing = TensorPreprocessing | ImagePreprocessing | TextPreprocessing
VariantKind = Literal["fp32", "optimised", "int8"]


class ExportMetadata(Record):
    name: str
    version: str
    task: str
    family: str
    problem: Problem
    profile: Profile
    stand_in: bool
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: list[str] | None
    preprocessing: Preprocessing = Field(discriminator="type")
    onnx_sha256: str
    onnx_bytes: int
    opset: int
    parity: Parity | None  # ONNX Runtime vs the trained model; None for a variant (see `variant`)
    onnxruntime_version: str
    parameters: int
    source_sha256: str  # the trained model file converted: finds its MLflow run (tags)
    training_variant: str | None = None  # from the training summary: "random weights", if so
    variant: VariantKind = "fp32"  # which file of the model this is: the export, or an optimise variant
    variant_method: str | None = None  # how a variant was made from the FP32 file


# ---- models/variants/<experiment>/variants.json: the optimise stage --------------------------

VARIANTS_FILE = "variants.json"


class Gate(Record):
    """A variant's headline metric on the validation split against the FP32 model's."""

    metric: str  # accuracy (higher is better), mse or loss (lower is better)
    samples: int
    fp32: float
    value: float
    change: float  # value - fp32
    allowed: str  # the rule, in words, with the configured tolerance
    passed: bool


class VariantDecision(Record):
    kind: Literal["optimised", "int8"]
    version: str  # its version in the model repository
    method: str
    kept: bool
    reason: str  # why it was kept or rejected, or that there was nothing to quantise
    gate: Gate | None  # None: not scored (nothing to quantise)
    operators: dict[str, int]  # operators of the variant's graph that the FP32 graph lacks, counted
    onnx_sha256: str | None = None  # kept variants only: rejected ones are not written
    onnx_bytes: int | None = None


class Variants(Record):
    experiment: str
    family: str
    settings: dict[str, Any]  # the optimise block as it applied to this experiment (its family's rule)
    fp32_sha256: str  # the exported file the variants were made from
    onnxruntime_version: str  # an offline-optimised graph is tied to the ONNX Runtime that wrote it
    fusions: dict[str, int] | None  # the transformer optimiser's fused operators (families that run it)
    variants: list[VariantDecision]
