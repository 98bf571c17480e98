"""The train stage into a real (temporary) MLflow store: what a run records, and how it fails."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dlzoo import track
from dlzoo.config import load_params
from dlzoo.records import SUMMARY_FILE, TrainSummary
from dlzoo.track import TrackingError
from dlzoo.train import stage

pytestmark = pytest.mark.integration


def params_with_epochs(project_root: Path, name: str, epochs: int):
    params = load_params(project_root / "params.yaml")
    chosen = params.experiments[name]
    training = dataclasses.replace(chosen.training, epochs=epochs, demo_max_epochs=epochs)
    experiments = {**params.experiments, name: dataclasses.replace(chosen, training=training)}
    return dataclasses.replace(params, experiments=experiments)


def run_stage(demo_data: Path, tmp_path: Path, params, name: str) -> TrainSummary:
    """The stage as dvc.yaml runs it: the experiment's data and the weights it names (`pretrained`)."""
    experiment = params.experiments[name]
    files = stage.Files(
        data_dir=demo_data / "processed" / experiment.data,
        out_dir=tmp_path / "models" / name,
        history_file=tmp_path / "history" / f"{name}.csv",
        pretrained_dir=demo_data / "raw" / experiment.pretrained,
    )
    summary = stage.run(name, params, files, verbose=0)
    assert summary is not None  # one process: it is the chief
    return summary


def model_sha256(tmp_path: Path, summary: TrainSummary) -> str:
    return hashlib.sha256(
        (tmp_path / "models" / summary.experiment / summary.model_file).read_bytes()
    ).hexdigest()


def training_run(tmp_path: Path, summary: TrainSummary, store: str):
    """The run as later stages find it: by the experiment name and the SHA-256 of the model file."""
    run_id = track.training_run_id(summary.task, summary.experiment, model_sha256(tmp_path, summary))
    assert run_id is not None, "no run tagged with this experiment and model file"
    return MlflowClient(store).get_run(run_id)


def test_a_keras_run_records_params_metric_history_model_and_tags(project_root, demo_data, tmp_path, store):
    params = params_with_epochs(project_root, "blobs_mlp", 4)
    summary = run_stage(demo_data, tmp_path, params, "blobs_mlp")
    client = MlflowClient(store)
    run = training_run(tmp_path, summary, store)

    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "blobs"
    assert run.data.params["family"] == "mlp"
    assert run.data.params["pretrained"] == "none"
    assert run.data.params["training.batch_size"] == "32"
    assert run.data.params["model.hidden_units"] == "[32, 16]"
    assert run.data.params["data.profile"] == "demo"
    for metric in ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [point.step for point in history] == [1, 2, 3, 4], metric
    assert run.data.metrics["train_seconds"] > 0
    # The train stage does not read the test split: the test metrics come later (evaluate, track).
    assert not [name for name in run.data.metrics if name.startswith("test_")]
    tags = run.data.tags
    assert tags[track.EXPERIMENT_TAG] == "blobs_mlp"
    assert tags[track.MODEL_SHA256_TAG] == model_sha256(tmp_path, summary)
    assert len(tags["git.commit"]) in (40, len("unknown"))
    assert tags["data.profile"] == "demo" and tags["data.dataset"] == "blobs"
    assert tags["tensorflow.version"].startswith("2.21") and tags["keras.version"].startswith("3.")
    assert tags["device"] == "CPU"

    # The saved model file is an artifact of the run, the same bytes as DVC's out, and it loads.
    model_file = tmp_path / "models" / "blobs_mlp" / "model.keras"
    assert [item.path for item in client.list_artifacts(run.info.run_id, "model")] == ["model/model.keras"]
    logged = Path(client.download_artifacts(run.info.run_id, "model/model.keras", str(tmp_path / "dl")))
    assert logged.read_bytes() == model_file.read_bytes()
    loaded = keras.models.load_model(logged)
    x_test = np.load(demo_data / "processed" / "blobs" / "test.npz")["x"][:5]
    np.testing.assert_allclose(loaded.predict(x_test, verbose=0).sum(axis=1), 1.0, rtol=1e-5)

    saved = TrainSummary.read(tmp_path / "models" / "blobs_mlp" / SUMMARY_FILE)
    assert saved == summary
    assert saved.epochs == 4 and saved.model_file == "model.keras"
    rows = (tmp_path / "history" / "blobs_mlp.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,phase,") and len(rows) == 5
    assert [item.path for item in client.list_artifacts(run.info.run_id, "history")] == [
        "history/blobs_mlp.csv"
    ]


def test_the_numpy_mlp_is_tracked_like_the_others(project_root, demo_data, tmp_path, store):
    params = params_with_epochs(project_root, "scratch_moons", 300)
    summary = run_stage(demo_data, tmp_path, params, "scratch_moons")
    client = MlflowClient(store)
    run = training_run(tmp_path, summary, store)
    assert run.info.status == "FINISHED"
    val_accuracy = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert len(val_accuracy) == 300
    assert max(val_accuracy, key=lambda point: point.step).value >= 0.97
    assert summary.model_file == "model.npz"
    assert [item.path for item in client.list_artifacts(run.info.run_id, "model")] == ["model/model.npz"]


def test_a_crashing_run_is_marked_failed_and_writes_no_output(project_root, demo_data, tmp_path, store):
    params = params_with_epochs(project_root, "imdb_transformer", 1)
    wrong = dataclasses.replace(params.experiments["imdb_transformer"], data="moons")
    params = dataclasses.replace(params, experiments={**params.experiments, "imdb_transformer": wrong})
    with pytest.raises(ValueError, match="the transformer family needs padded token ids"):
        run_stage(demo_data, tmp_path, params, "imdb_transformer")
    (run,) = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("imdb-sentiment").experiment_id]
    )
    assert run.info.status == "FAILED"
    assert not (tmp_path / "models" / "imdb_transformer").exists()


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(
    project_root, demo_data, tmp_path, monkeypatch
):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        uri = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} is unreachable"):
            run_stage(demo_data, tmp_path, params_with_epochs(project_root, "moons_mlp", 1), "moons_mlp")
    assert time.monotonic() - started < 15
    assert not (tmp_path / "models" / "moons_mlp").exists()
