"""The train stage into a real (temporary) MLflow store: what a run records, and how it fails."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

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
    data = demo_data / "processed" / params.experiments[name].data
    summary = stage.run(
        name,
        params,
        data,
        tmp_path / "models" / name,
        tmp_path / "history" / f"{name}.csv",
        demo_data / "raw" / "mobilenet_v2",
    )
    assert summary is not None  # one process: it is the chief
    return summary


def test_a_keras_run_records_params_metric_history_model_and_tags(project_root, demo_data, tmp_path, store):
    params = params_with_epochs(project_root, "blobs_mlp", 4)
    summary = run_stage(demo_data, tmp_path, params, "blobs_mlp")
    client = MlflowClient(store)
    run = client.get_run(summary.mlflow_run_id)

    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "blobs"
    assert run.data.params["family"] == "mlp"
    assert run.data.params["training.batch_size"] == "32"
    assert run.data.params["model.hidden_units"] == "[32, 16]"
    assert run.data.params["data.profile"] == "demo"
    for metric in ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [point.step for point in history] == [1, 2, 3, 4], metric
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary.test["accuracy"])
    tags = run.data.tags
    assert len(tags["git.commit"]) in (40, len("unknown"))
    assert tags["data.profile"] == "demo" and tags["data.dataset"] == "blobs"
    assert tags["tensorflow.version"].startswith("2.21") and tags["keras.version"].startswith("3.")
    assert tags["device"] == "CPU"

    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.source_run_id == run.info.run_id
    model_info = mlflow.models.get_model_info(f"models:/{logged.model_id}")
    assert model_info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 2)
    loaded = mlflow.tensorflow.load_model(f"models:/{logged.model_id}")
    x_test = np.load(demo_data / "processed" / "blobs" / "test.npz")["x"][:5]
    np.testing.assert_allclose(loaded.predict(x_test, verbose=0).sum(axis=1), 1.0, rtol=1e-5)

    assert (tmp_path / "models" / "blobs_mlp" / "model.keras").is_file()
    saved = TrainSummary.read(tmp_path / "models" / "blobs_mlp" / SUMMARY_FILE)
    assert saved == summary
    assert saved.epochs == 4 and saved.mlflow_run_id == run.info.run_id
    rows = (tmp_path / "history" / "blobs_mlp.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,phase,") and len(rows) == 5


def test_the_numpy_mlp_is_tracked_like_the_others(project_root, demo_data, tmp_path, store):
    params = params_with_epochs(project_root, "scratch_moons", 300)
    summary = run_stage(demo_data, tmp_path, params, "scratch_moons")
    client = MlflowClient(store)
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 300
    assert summary.test["accuracy"] >= 0.97
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
