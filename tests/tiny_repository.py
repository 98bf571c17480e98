"""A model repository of tiny models, one (or more) per family, made by the pipeline's own code.

Each model is built by its family's `build` hook for a processed demo data set (the demo_data
fixture), saved by its `save` hook, converted and parity-checked by the export stage's
`export_model`, and laid out by the repository stage's `publish`: the same metadata.json,
config.pbtxt, labels and vocabulary the pipeline writes. The weights are untrained: serving
tests compare the server's answers with ONNX Runtime run directly on the same file, which needs
the right graph, not good accuracy.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from dlzoo import models, repository
from dlzoo.config.experiments import ExportSettings, RnnConfig, ServingSettings
from dlzoo.data.splits import load_info
from dlzoo.export.stage import Trained, export_model
from dlzoo.inputs import InputSpec
from dlzoo.models.family import Assets, Family
from dlzoo.records import DataInfo, ExportMetadata, TrainSummary
from tests.unit.test_models import SMOKE

MAX_BATCH_SIZE = 16
EXPORT = ExportSettings(opset=17, tolerance=1e-4, parity_samples=16)
SERVING = ServingSettings(
    max_batch_size=MAX_BATCH_SIZE, max_queue_delay_ms=0.0, max_queue_size=64, instances=1
)
REVIEWS = [
    "a wonderful film with great acting and a moving story",
    "a terrible film with bad acting and a boring story",
    "the plot was slow but the music and the cast were good",
    "worst movie of the year i walked out after an hour",
]
SINE_RNN = RnnConfig("simple_rnn", 4, "tanh", 0.0, 0.0, 0, False, (), "relu", 1, "linear")


def _config(family: str, **changes):
    return dataclasses.replace(SMOKE[family][0], **changes)


# model name: (family, processed demo data set, model config); the name says what the model is.
MODELS = {
    "mlp_vector": ("mlp", "blobs", _config("mlp", output_units=4)),
    "cnn_image": ("cnn", "cifar10", _config("cnn", output_units=10)),
    "rnn_text": ("rnn", "imdb/vocab_10000", _config("rnn")),
    "rnn_sequence": ("rnn", "sine", SINE_RNN),
    "transfer_image": ("transfer", "cats_dogs", _config("transfer")),
    "autoencoder_digits": ("autoencoder", "mnist", _config("autoencoder")),
    "transformer_text": ("transformer", "imdb/vocab_20000", _config("transformer")),
    "scratch_vector": ("scratch_mlp", "moons", _config("scratch_mlp")),
}


def _trained(name: str, family: Family, config, info: DataInfo, model_dir: Path) -> Trained:
    """An untrained model saved as the train stage saves it, with the summary it would write (no epochs)."""
    return saved(name, family, built(family, config, info), info, model_dir)


def built(family: Family, config, info: DataInfo):
    assets = Assets(classes=len(info.classes or []), rng=np.random.default_rng(1))
    return family.build(config, InputSpec.from_info(info), assets)


def saved(name: str, family: Family, model, info: DataInfo, model_dir: Path) -> Trained:
    """A model saved by its family's hook, with the summary the train stage would write (no epochs)."""
    model_dir.mkdir(parents=True)
    saved = family.save(model, model_dir)
    summary = TrainSummary(
        experiment=name,
        task=f"tiny-{family.name}",
        family=family.name,
        profile=info.profile,
        stand_in=info.stand_in,
        epochs=0,
        parameters=family.parameter_count(model),
        model_file=saved.name,
    )
    return Trained(family, model, summary, hashlib.sha256(saved.read_bytes()).hexdigest())


def build(root: Path, demo_data: Path) -> Path:
    """Exports every model of MODELS under `root` and returns the model repository in it."""
    for name, (family_name, data, config) in MODELS.items():
        data_dir = demo_data / "processed" / data
        trained = _trained(
            name, models.family(family_name), config, load_info(data_dir), root / "models" / name
        )
        exported = export_model(trained, data_dir, EXPORT)
        export_dir = root / "onnx" / name
        repository.write_export(export_dir, exported.onnx_bytes, exported.metadata, exported.files)
        repository.publish(export_dir, None, root / "repository" / name, SERVING)
    return root / "repository"


def valid_batch(
    metadata: ExportMetadata, count: int, rng: np.random.Generator
) -> tuple[str, list, np.ndarray]:
    """A model-ready batch for a model: (datatype, shape, values)."""
    tensor = metadata.inputs[0]
    shape = [count, *tensor.shape[1:]]
    if tensor.datatype == "INT32":
        values = rng.integers(0, metadata.preprocessing.vocab_size, size=shape).astype(np.int32)
    elif metadata.preprocessing.type == "image":
        values = rng.integers(0, 256, size=shape).astype(np.float32)
    else:
        values = rng.normal(size=shape).astype(np.float32)
    return tensor.datatype, shape, values
