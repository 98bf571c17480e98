"""A model repository of tiny models, one (or more) per family, exported the way the pipeline does.

The weights are untrained: serving tests compare the server's answers with ONNX Runtime run
directly on the same file, which needs the right graph, not good accuracy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dlzoo import export, repository
from dlzoo.config.experiments import RnnConfig
from dlzoo.data.text import Vocabulary
from dlzoo.models import builder
from dlzoo.models.inputs import InputSpec
from dlzoo.scratch.mlp import NumpyMLP
from dlzoo.stages.export import preprocessing_metadata
from tests.unit.test_models import SEQUENCE, TEXT, TINY

MAX_BATCH_SIZE = 16
TEXT_SETTINGS = {
    "vocabulary": repository.VOCABULARY_FILE,
    "vocab_size": TEXT.vocab_size,
    "max_length": TEXT.shape[0],
    "padding": "pre",
    "truncating": "pre",
    "pad_id": 0,
    "start_id": 1,
    "oov_id": 2,
}
REVIEWS = [
    "a wonderful film with great acting and a moving story",
    "a terrible film with bad acting and a boring story",
    "the plot was slow but the music and the cast were good",
    "worst movie of the year i walked out after an hour",
]
SINE_RNN = RnnConfig("simple_rnn", 4, "tanh", 0.0, 0.0, 0, False, (), "relu", 1, "linear")

# model name: (family, kind, labels); the name says what the model is.
MODELS = {
    "mlp_vector": ("mlp", "multiclass", ["a", "b", "c"]),
    "cnn_image": ("cnn", "multiclass", ["c0", "c1", "c2"]),
    "rnn_text": ("rnn", "binary", ["negative", "positive"]),
    "rnn_sequence": ("rnn", "regression", None),
    "transfer_image": ("transfer", "multiclass", ["cat", "dog"]),
    "autoencoder_digits": ("autoencoder", "reconstruction", None),
    "transformer_text": ("transformer", "binary", ["negative", "positive"]),
    "scratch_vector": ("scratch_mlp", "multiclass", ["class0", "class1"]),
}


def _model_and_spec(name: str, family: str):
    if family == "scratch_mlp":
        return NumpyMLP.initialise([2, 8, 2], "tanh", np.random.default_rng(1)), InputSpec((2,), "float32")
    if name == "rnn_sequence":
        return builder("rnn")(SINE_RNN, SEQUENCE), SEQUENCE
    config, spec = TINY[family]
    return builder(family)(config, spec), spec


def build(root: Path) -> Path:
    """Writes every model of MODELS under `root`; returns `root`."""
    vocabulary = Vocabulary.build(REVIEWS, TEXT.vocab_size - 3)
    for name, (family, kind, labels) in MODELS.items():
        model, spec = _model_and_spec(name, family)
        if isinstance(model, NumpyMLP):
            proto, outputs = export.numpy_mlp_to_onnx(model), [2]
        else:
            proto, outputs = export.keras_to_onnx(model, spec), list(model.output_shape[1:])
        payload = proto.SerializeToString()
        text = spec.vocab_size is not None
        info = {"input": TEXT_SETTINGS} if text else {}
        metadata = {
            "name": name,
            "version": repository.VERSION,
            "task": f"tiny-{family}",
            "family": family,
            "kind": kind,
            "inputs": [repository.tensor(export.INPUT_NAME, spec.dtype, list(spec.shape))],
            "outputs": [repository.tensor(export.OUTPUT_NAME, "float32", outputs)],
            "labels": labels,
            "preprocessing": preprocessing_metadata(info, spec),
            "max_batch_size": MAX_BATCH_SIZE,
            "onnx_sha256": hashlib.sha256(payload).hexdigest(),
        }
        extra = {}
        if text:
            vocabulary.save(root / "vocabulary.tmp.json")
            extra[repository.VOCABULARY_FILE] = (root / "vocabulary.tmp.json").read_bytes()
        repository.write_entry(root / name, name, payload, metadata, extra)
    (root / "vocabulary.tmp.json").unlink()
    return root


def valid_batch(metadata: dict, count: int, rng: np.random.Generator) -> tuple[str, list, np.ndarray]:
    """A model-ready batch for a model: (datatype, shape, values)."""
    tensor = metadata["inputs"][0]
    shape = [count, *tensor["shape"][1:]]
    if tensor["datatype"] == "INT32":
        values = rng.integers(0, metadata["preprocessing"]["vocab_size"], size=shape).astype(np.int32)
    elif metadata["preprocessing"]["type"] == "image":
        values = rng.integers(0, 256, size=shape).astype(np.float32)
    else:
        values = rng.normal(size=shape).astype(np.float32)
    return tensor["datatype"], shape, values
