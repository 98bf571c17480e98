"""The train stage into a real (temporary) MLflow store: what a run records, and how it fails."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from dlzoo import track
from dlzoo.config import load_params
from dlzoo.errors import DlzooError
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
    # One naming scheme: train_* and val_* per epoch; no Keras names beside them.
    for metric in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [point.step for point in history] == [1, 2, 3, 4], metric
    assert set(run.data.metrics) == {
        "train_loss",
        "val_loss",
        "train_accuracy",
        "val_accuracy",
        "learning_rate",
        "train_seconds",
    }
    assert run.data.metrics["train_seconds"] > 0
    # The experiment opens on its training runs in MLflow 3's UI, artefacts under the project root.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()
    # The three splits are the run's dataset inputs, identified by their files' SHA-256.
    info = json.loads((demo_data / "processed" / "blobs" / "info.json").read_text())
    inputs = {
        {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]: item
        for item in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "testing"}
    for context, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
        dataset, tags = inputs[context].dataset, {tag.key: tag.value for tag in inputs[context].tags}
        file_sha256 = hashlib.sha256(
            (demo_data / "processed" / "blobs" / f"{split}.npz").read_bytes()
        ).hexdigest()
        assert tags[track.SHA256_TAG] == file_sha256 == info["splits"][split]["sha256"]
        assert dataset.name == "blobs" and dataset.digest == file_sha256[:16]
        assert json.loads(dataset.profile)["x_shape"] == info["splits"][split]["x_shape"]
        assert json.loads(dataset.profile)["profile"] == "demo"
    found = client.search_runs(
        [run.info.experiment_id], "dataset.name = 'blobs' AND dataset.context = 'training'"
    )
    assert [item.info.run_id for item in found] == [run.info.run_id]
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
    assert len(val_accuracy) == 300 and len(client.get_metric_history(run.info.run_id, "train_loss")) == 300
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


def test_a_penalised_model_logs_its_loss_alone_and_the_penalty_apart(
    project_root, demo_data, tmp_path, store
):
    """mnist_l2: Keras' loss adds the L2 penalty; train_loss/val_loss must compare across runs."""
    params = params_with_epochs(project_root, "mnist_l2", 2)
    summary = run_stage(demo_data, tmp_path, params, "mnist_l2")
    client = MlflowClient(store)
    run = training_run(tmp_path, summary, store)
    rows = list(csv.DictReader((tmp_path / "history" / "mnist_l2.csv").open()))
    for split, prefix in (("train", ""), ("val", "val_")):
        alone = [point.value for point in client.get_metric_history(run.info.run_id, f"{split}_loss")]
        penalty = [point.value for point in client.get_metric_history(run.info.run_id, f"{split}_penalty")]
        keras_loss = [float(row[f"{prefix}loss"]) for row in rows]
        assert alone == pytest.approx([float(row[f"{prefix}data_loss"]) for row in rows])
        assert all(value > 0 for value in penalty), penalty
        assert [a + b for a, b in zip(alone, penalty, strict=True)] == pytest.approx(keras_loss)


def test_a_training_stopped_by_sigterm_ends_killed_and_leaves_no_staging_directory(
    project_root, demo_data, tmp_path, store
):
    """What a CI time-out or a preempted runner does: SIGTERM to `dlzoo train` in the middle of fit."""
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["experiments"]["mnist_baseline"]["training"].update(epochs=500, demo_max_epochs=500)
    raw["experiments"]["mnist_baseline"]["training"]["early_stopping"] = None
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "models" / "mnist_baseline"
    command = [sys.executable, "-m", "dlzoo.cli", "--params", str(params_file), "train", "mnist_baseline"]
    command += [
        "--data",
        str(demo_data / "processed" / "mnist"),
        "--pretrained",
        str(demo_data / "raw" / "none"),
    ]
    command += ["--out", str(out), "--history", str(tmp_path / "history.csv"), "--verbose", "2"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in process.stdout:  # Keras prints one line per epoch: the second epoch is under way
            if line.startswith("Epoch 2/"):
                break
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "dlzoo train: error" not in stderr and "stopped by SIGTERM" in stderr
    (run,) = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("mnist-regularization").experiment_id]
    )
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert not out.exists()
    assert [path.name for path in out.parent.iterdir()] == []  # no `.mnist_baseline.tmp-*` left


def test_the_demo_transfer_experiment_refuses_random_weights_when_params_say_fail(
    project_root, demo_data, tmp_path, store
):
    params = load_params(project_root / "params.yaml")
    chosen = params.experiments["cats_dogs_transfer"]
    refusing = dataclasses.replace(chosen, model=dataclasses.replace(chosen.model, demo_weights="fail"))
    params = dataclasses.replace(params, experiments={**params.experiments, "cats_dogs_transfer": refusing})
    with pytest.raises(
        DlzooError, match=r"no ImageNet weights: the demo profile is offline .*model\.demo_weights: random"
    ):
        run_stage(demo_data, tmp_path, params, "cats_dogs_transfer")
    assert not (tmp_path / "models").exists()
    assert (
        MlflowClient(store).search_runs(
            experiment_ids=[e.experiment_id for e in MlflowClient(store).search_experiments()]
        )
        == []
    )
