"""The pipeline's stages against a team's tracking server: `mlflow server` on PostgreSQL, artefacts in S3.

PostgreSQL (a fresh cluster), moto's S3 server and the MLflow server run as subprocesses on free
127.0.0.1 ports (tests/services.py). The train, export, evaluate and track CLIs run in further
subprocesses with MLFLOW_TRACKING_URI pointing at the server, as `dvc repro` would run them for a
team. The run is read back through the server, and its artefacts are found in the S3 bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
import yaml
from mlflow.tracking import MlflowClient

from dlzoo import track
from dlzoo.records import SUMMARY_FILE, ExportMetadata, TrainSummary
from tests import services

pytestmark = [pytest.mark.integration, pytest.mark.services]

EXPERIMENT = "blobs_mlp"
EPOCHS = 3
BUCKET = "mlflow"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("team-stores")
    with (
        services.s3_server(root) as s3,
        services.postgres_server(root / "postgres", "mlflow") as database,
    ):
        s3.create_bucket(BUCKET)
        with services.mlflow_server(root, database, f"s3://{BUCKET}/artifacts", s3) as uri:
            yield {"uri": uri, "s3": s3, "database": database, "root": root}


def demo_params(project_root: Path, path: Path) -> Path:
    """params.yaml with only the experiment, cut to a few epochs (the track stage reads them all)."""
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["experiments"] = {EXPERIMENT: raw["experiments"][EXPERIMENT]}
    raw["experiments"][EXPERIMENT]["training"].update(epochs=EPOCHS, demo_max_epochs=EPOCHS)
    path.write_text(yaml.safe_dump(raw))
    return path


def stage_cli(arguments: list[str], params: Path, work: Path, server: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **server["s3"].environment(), "MLFLOW_TRACKING_URI": server["uri"]}
    command = [sys.executable, "-m", "dlzoo.cli", "--params", str(params), *arguments]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def train_cli(params: Path, demo_data: Path, work: Path, server: dict) -> subprocess.CompletedProcess:
    arguments = ["train", EXPERIMENT, "--data", str(demo_data / "processed" / "blobs")]
    # the experiment's `pretrained: none`, as dvc.yaml passes it
    arguments += ["--pretrained", str(demo_data / "raw" / "none")]
    arguments += ["--out", str(work / "models" / EXPERIMENT), "--history", str(work / "history.csv")]
    return stage_cli(arguments, params, work, server)


def test_every_stage_logs_through_the_server_and_the_artefacts_land_in_s3(
    project_root, demo_data, tmp_path, server, monkeypatch
):
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", server["s3"].endpoint)  # this process reads back too
    for key, value in services.S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    work = tmp_path / "work"
    work.mkdir()
    params = demo_params(project_root, tmp_path / "params.yaml")
    trained = train_cli(params, demo_data, work, server)
    assert trained.returncode == 0, trained.stderr
    assert f"{EXPERIMENT}: {EPOCHS} epochs" in trained.stdout
    summary = TrainSummary.read(work / "models" / EXPERIMENT / SUMMARY_FILE)
    assert summary.epochs == EPOCHS

    client = MlflowClient(tracking_uri=server["uri"])
    experiment = client.get_experiment_by_name("blobs")
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs([experiment.experiment_id])
    model_file = work / "models" / EXPERIMENT / summary.model_file
    assert run.data.tags[track.EXPERIMENT_TAG] == EXPERIMENT
    assert run.data.tags[track.MODEL_SHA256_TAG] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["model.hidden_units"] == "[32, 16]"
    assert run.data.params["training.demo_max_epochs"] == str(EPOCHS)
    for metric in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate"):
        steps = [point.step for point in client.get_metric_history(run.info.run_id, metric)]
        assert steps == list(range(1, EPOCHS + 1)), metric
    assert {item.dataset.name for item in run.inputs.dataset_inputs} == {"blobs"}
    assert len(run.inputs.dataset_inputs) == 3
    assert run.data.tags["tensorflow.cuda_build"] == str(tf.test.is_built_with_cuda()).lower()

    # export, evaluate and track, through the same server: the results join the training's run.
    onnx_dir, metrics_file = work / "onnx" / EXPERIMENT, work / "metrics" / f"{EXPERIMENT}.json"
    data = str(demo_data / "processed" / "blobs")
    steps = [
        [
            "export",
            EXPERIMENT,
            "--model",
            str(work / "models" / EXPERIMENT),
            "--data",
            data,
            "--out",
            str(onnx_dir),
        ],
        [
            "evaluate",
            EXPERIMENT,
            "--export",
            str(onnx_dir),
            "--data",
            data,
            "--history",
            str(work / "history.csv"),
            "--metrics",
            str(metrics_file),
            "--plots",
            str(work / "plots" / EXPERIMENT),
        ],
        [
            "track",
            "--metrics",
            str(work / "metrics"),
            "--exports",
            str(work / "onnx"),
            "--plots",
            str(work / "plots"),
        ],
    ]
    for arguments in steps:
        done = stage_cli(arguments, params, work, server)
        assert done.returncode == 0, f"{arguments[0]}: {done.stderr}"
    assert f"{EXPERIMENT}: logged" in done.stdout
    after = client.get_run(run.info.run_id)
    assert (after.info.status, after.info.end_time) == ("FINISHED", run.info.end_time)  # not reopened
    evaluated = json.loads(metrics_file.read_text())
    assert after.data.metrics["test_accuracy"] == evaluated["test"]["accuracy"]
    metadata = ExportMetadata.read(onnx_dir / "metadata.json")
    assert after.data.metrics["onnx_parity_max_abs_diff"] == metadata.parity.max_abs_diff
    (version,) = client.search_model_versions(f"name = 'dlzoo-{EXPERIMENT}'")
    assert version.run_id == run.info.run_id

    # Artefacts read back through the server: the same bytes as the files the stages wrote.
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "download")))
    assert (downloaded / "model" / summary.model_file).read_bytes() == model_file.read_bytes()
    assert (downloaded / "history" / "history.csv").read_bytes() == (work / "history.csv").read_bytes()
    assert json.loads((downloaded / "evaluation" / "metrics.json").read_text()) == evaluated
    frozen = (downloaded / "environment" / "requirements-frozen.txt").read_text().splitlines()
    assert f"tensorflow=={tf.__version__}" in frozen
    # The registered ONNX model (MLflow 3 keeps logged models apart from the run's artefacts).
    source = client.get_model_version_download_uri(f"dlzoo-{EXPERIMENT}", version.version)
    registered = Path(
        mlflow.artifacts.download_artifacts(
            source, dst_path=str(tmp_path / "registered"), tracking_uri=server["uri"]
        )
    )
    served = onnxruntime.InferenceSession(str(registered / "model.onnx"))
    x = np.load(demo_data / "processed" / "blobs" / "test.npz")["x"][:4].astype(np.float32)
    expected = onnxruntime.InferenceSession(str(onnx_dir / "model.onnx")).run(None, {"inputs": x})[0]
    np.testing.assert_array_equal(served.run(None, {"inputs": x})[0], expected)

    # ... and they sit in the S3 bucket, under the run's id; nothing was written locally.
    keys = server["s3"].keys(BUCKET)
    for name in (f"model/{summary.model_file}", "history/history.csv", "evaluation/metrics.json"):
        assert any(key.endswith(f"{run.info.run_id}/artifacts/{name}") for key in keys), name
    assert not (work / "mlruns").exists() and not (work / "mlartifacts").exists()
    # The backend store is the PostgreSQL database: the run is a row there.
    import sqlalchemy

    with sqlalchemy.create_engine(server["database"]).connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("select status from runs where run_uuid = :id"), {"id": run.info.run_id}
        )
        assert rows.scalar_one() == "FINISHED"


def test_the_train_cli_fails_fast_when_the_tracking_server_accepts_but_never_answers(
    project_root, demo_data, tmp_path
):
    """A hung server (connections accepted, no reply), not a refused port: the health check times out."""
    work = tmp_path / "work"
    work.mkdir()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or replies
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = train_cli(
            demo_params(project_root, tmp_path / "params.yaml"),
            demo_data,
            work,
            {"uri": uri, "s3": services.S3("http://127.0.0.1:9")},
        )
        seconds = time.monotonic() - started
    assert result.returncode == 2
    assert f"dlzoo train: error: MLflow tracking server {uri} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    # The health check gives up after 5 s; MLflow's own client would retry for minutes. The rest
    # is the CLI's start-up (TensorFlow's import), which took 30.7 s once on a loaded CI machine.
    assert seconds < 90, f"took {seconds:.1f} s"
    assert not (work / "models").exists() and not (work / "history.csv").exists()
