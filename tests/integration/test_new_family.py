"""Adding a family is one module, one `register` line and one params block: nothing else changes.

The test writes a throwaway family (a 1-D CNN over IMDB token ids) into a temporary directory,
registers it, adds an experiment for it to a copy of params.yaml, and runs the real train,
export, evaluate and track stages on the demo data, with no source file of dlzoo touched.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

import dlzoo.evaluate.stage
import dlzoo.export.stage
import dlzoo.optimise.stage
import dlzoo.track.stage
import dlzoo.train.stage
from dlzoo import models, track
from dlzoo.config import load_params
from dlzoo.config.experiments import FAMILY_CONFIGS
from dlzoo.records import SUMMARY_FILE, ExportMetadata, Metrics, TrainSummary

pytestmark = pytest.mark.integration

FAMILY_MODULE = '''
"""A 1-D CNN over token ids: embedding, one convolution, global max pooling."""

from dataclasses import dataclass

import keras
from keras import layers

from dlzoo.models.common import model_input, output_layer
from dlzoo.models.keras_family import KerasFamily


@dataclass(frozen=True)
class Conv1dConfig:
    embedding_dim: int
    filters: int
    kernel_size: int
    output_units: int
    output_activation: str


def build(config, spec):
    inputs = model_input(spec)
    x = layers.Embedding(spec.vocab_size, config.embedding_dim)(inputs)
    x = layers.Conv1D(config.filters, config.kernel_size, activation="relu")(x)
    x = layers.GlobalMaxPooling1D()(x)
    outputs = output_layer(config.output_units, config.output_activation)(x)
    return keras.Model(inputs, outputs, name="conv1d")


FAMILY = KerasFamily("conv1d", Conv1dConfig, build)
'''

EXPERIMENT = {
    "task": "imdb-sentiment",
    "data": "imdb/vocab_10000",
    "family": "conv1d",
    "pretrained": "none",
    "model": {
        "embedding_dim": 8,
        "filters": 8,
        "kernel_size": 3,
        "output_units": 1,
        "output_activation": "sigmoid",
    },
    "training": {
        "optimizer": "adam",
        "learning_rate": 0.01,
        "loss": "binary_crossentropy",
        "metrics": ["accuracy"],
        "epochs": 2,
        "demo_max_epochs": 2,
        "batch_size": 32,
        "early_stopping": None,
        "reduce_lr": None,
        "lr_schedule": None,
        "fine_tune": None,
    },
}


@pytest.fixture
def conv1d_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "conv1d_family.py").write_text(FAMILY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("conv1d_family")
    yield models.register(module.FAMILY)  # the one line that adds a family
    models.FAMILIES.pop("conv1d")
    FAMILY_CONFIGS.pop("conv1d")
    sys.modules.pop("conv1d_family")


def test_a_family_in_its_own_module_trains_exports_evaluates_and_is_tracked(
    project_root, demo_data, tmp_path, store, conv1d_family
):
    name = "imdb_conv1d"
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["experiments"] = {name: EXPERIMENT}
    raw["optimise"]["int8"]["conv1d"] = "dynamic"  # its INT8 rule: embedding and dense weights
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(params_file)
    data = demo_data / "processed" / EXPERIMENT["data"]
    model_dir, history = tmp_path / "models" / name, tmp_path / "history.csv"
    export_dir, metrics_dir, plots_dir = tmp_path / "onnx", tmp_path / "metrics", tmp_path / "plots"

    train_files = dlzoo.train.stage.Files(data, model_dir, history, pretrained_dir=None)
    summary = dlzoo.train.stage.run(name, params, train_files, verbose=0)
    metadata = dlzoo.export.stage.run(name, params, model_dir, data, export_dir / name)
    variants_dir = tmp_path / "variants"
    dlzoo.optimise.stage.run(name, params, export_dir / name, data, variants_dir / name)
    files = dlzoo.evaluate.stage.Files(
        export_dir / name, data, history, metrics_dir / f"{name}.json", plots_dir / name, variants_dir / name
    )
    metrics = dlzoo.evaluate.stage.run(name, files)
    assert set(metrics.variants) == {"optimised", "int8"}
    client = MlflowClient(store)
    trained = client.get_run(track.training_run_id(summary.task, name, metadata.source_sha256)).info
    outcomes = dlzoo.track.stage.run([name], metrics_dir, export_dir, plots_dir, variants_dir)

    assert summary == TrainSummary.read(model_dir / SUMMARY_FILE)
    assert summary.family == "conv1d" and summary.epochs == 2
    assert metadata == ExportMetadata.read(export_dir / name / "metadata.json")
    assert metadata.family == "conv1d" and metadata.inputs[0].datatype == "INT32"
    assert metadata.parity.max_abs_diff <= metadata.parity.tolerance
    assert metadata.source_sha256 == hashlib.sha256((model_dir / summary.model_file).read_bytes()).hexdigest()
    assert (export_dir / name / "model.onnx").is_file()
    assert metrics.problem == "binary" and 0.0 <= metrics.headline.value <= 1.0
    assert Metrics.read(metrics_dir / f"{name}.json") == metrics
    assert (plots_dir / name / "test_confusion.png").is_file()
    assert outcomes == {name: "logged"}
    run = client.get_run(track.training_run_id(summary.task, name, metadata.source_sha256))
    assert run.data.params["family"] == "conv1d" and run.info.status == "FINISHED"
    # Results are added by id: the run keeps the training's end time (its duration in the UI).
    assert (run.info.start_time, run.info.end_time) == (trained.start_time, trained.end_time)
    assert {item.path for item in client.list_artifacts(run.info.run_id, "evaluation")} >= {
        "evaluation/metrics.json",
        "evaluation/test_confusion.png",
    }
    assert run.data.metrics["test_accuracy"] == metrics.test.accuracy
    assert run.data.metrics["onnx_parity_max_abs_diff"] == metadata.parity.max_abs_diff
    # The optimise stage's decisions and deltas, and each served file's latency, beside them.
    for kind, scores in metrics.variants.items():
        assert run.data.metrics[f"variant_{kind}_kept"] == float(scores.kept)
        if scores.kept:
            assert run.data.metrics[f"variant_{kind}_test_change"] == scores.test_change
            assert run.data.metrics[f"variant_{kind}_latency_ms_p50_batch32"] > 0
    assert run.data.metrics["variant_fp32_latency_ms_p99_batch1"] > 0
    assert run.data.tags["dlzoo.cpu_flags"]
    assert "optimise/variants.json" in {
        item.path for item in client.list_artifacts(run.info.run_id, "optimise")
    }
    # A second track run finds its results in the run: no new model version is registered.
    assert dlzoo.track.stage.run([name], metrics_dir, export_dir, plots_dir) == {name: "unchanged"}
    (version,) = client.search_model_versions(f"name = 'dlzoo-{name}'")
    assert version.run_id == run.info.run_id


def test_track_records_a_tagged_run_when_the_training_run_is_not_in_the_store(
    project_root, demo_data, tmp_path, store, monkeypatch
):
    """After `dvc pull` elsewhere: outputs without their MLflow run. Results still land, matched by tags."""
    name = "blobs_mlp"
    params = load_params(project_root / "params.yaml")
    data = demo_data / "processed" / "blobs"
    model_dir, history = tmp_path / "models" / name, tmp_path / "history.csv"
    export_dir, metrics_dir, plots_dir = tmp_path / "onnx", tmp_path / "metrics", tmp_path / "plots"
    dlzoo.train.stage.run(name, params, dlzoo.train.stage.Files(data, model_dir, history, None), verbose=0)
    metadata = dlzoo.export.stage.run(name, params, model_dir, data, export_dir / name)
    files = dlzoo.evaluate.stage.Files(
        export_dir / name, data, history, metrics_dir / f"{name}.json", plots_dir / name
    )
    metrics = dlzoo.evaluate.stage.run(name, files)

    other = f"sqlite:///{tmp_path / 'other.db'}"  # another machine's (empty) store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert dlzoo.track.stage.run([name], metrics_dir, export_dir, plots_dir) == {name: "logged"}
    client = MlflowClient(other)
    run = client.get_run(track.training_run_id("blobs", name, metadata.source_sha256))
    assert run.data.tags[track.MISSING_RUN_TAG] == "not in this store" and run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == metrics.test.accuracy
    (version,) = client.search_model_versions(f"name = 'dlzoo-{name}'")
    assert version.run_id == run.info.run_id
    assert dlzoo.track.stage.run([name], metrics_dir, export_dir, plots_dir) == {name: "unchanged"}
