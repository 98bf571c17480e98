"""`dlzoo train` against a real `mlflow server` (SQLite backend, proxied local artefact directory).

The server runs in a subprocess on a free 127.0.0.1 port; the train CLI runs in another, with
MLFLOW_TRACKING_URI pointing at the server, as `dvc repro` would run it for a team. The run is read
back through the server's REST API, and the artefacts are found on the server's disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import tensorflow as tf
import yaml
from mlflow.tracking import MlflowClient

from dlzoo import track
from dlzoo.records import SUMMARY_FILE, TrainSummary
from tests.network import free_port

pytestmark = pytest.mark.integration

EXPERIMENT = "blobs_mlp"
EPOCHS = 3


def wait_for_health(process: subprocess.Popen, uri: str, log: Path, timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise AssertionError(f"mlflow server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"mlflow server did not answer /health in {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (its workers too), SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(artifacts),
    ]
    # Job execution (huey consumers for GenAI jobs, 7 more processes) plays no part in tracking.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        seconds = wait_for_health(process, uri, log)
        print(f"mlflow server answered /health after {seconds:.1f} s")
        yield {"uri": uri, "artifacts": artifacts, "root": root, "log": log}
    finally:
        stop(process)


def demo_params(project_root: Path, path: Path) -> Path:
    """params.yaml with the experiment cut to a few epochs (what `dvc exp run -S` would do)."""
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["experiments"][EXPERIMENT]["training"].update(epochs=EPOCHS, demo_max_epochs=EPOCHS)
    path.write_text(yaml.safe_dump(raw))
    return path


def train_cli(params: Path, demo_data: Path, work: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "dlzoo.cli", "--params", str(params), "train", EXPERIMENT]
    command += [
        "--data",
        str(demo_data / "processed" / "blobs"),
        "--pretrained",
        str(demo_data / "raw" / "none"),  # the experiment's `pretrained: none`, as dvc.yaml passes it
    ]
    command += ["--out", str(work / "models" / EXPERIMENT), "--history", str(work / "history.csv")]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def test_a_train_stage_logs_through_the_server_and_its_artifacts_land_on_the_server(
    project_root, demo_data, tmp_path, server
):
    work = tmp_path / "work"
    work.mkdir()
    trained = train_cli(demo_params(project_root, tmp_path / "params.yaml"), demo_data, work, server["uri"])
    assert trained.returncode == 0, trained.stderr
    assert f"{EXPERIMENT}: {EPOCHS} epochs" in trained.stdout
    summary = TrainSummary.read(work / "models" / EXPERIMENT / SUMMARY_FILE)
    assert summary.epochs == EPOCHS

    client = MlflowClient(tracking_uri=server["uri"])
    experiment = client.get_experiment_by_name("blobs")
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    (run,) = client.search_runs([experiment.experiment_id])
    model_file = work / "models" / EXPERIMENT / summary.model_file
    assert run.data.tags[track.EXPERIMENT_TAG] == EXPERIMENT
    assert run.data.tags[track.MODEL_SHA256_TAG] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")

    assert run.data.params["family"] == "mlp"
    assert run.data.params["model.hidden_units"] == "[32, 16]"
    assert run.data.params["training.demo_max_epochs"] == str(EPOCHS)
    assert run.data.params["data.profile"] == "demo"
    for metric in ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"):
        steps = [point.step for point in client.get_metric_history(run.info.run_id, metric)]
        assert steps == list(range(1, EPOCHS + 1)), metric
    assert run.data.metrics["train_seconds"] > 0
    assert run.data.tags["data.dataset"] == "blobs"
    assert run.data.tags["tensorflow.cuda_build"] == str(tf.test.is_built_with_cuda()).lower()
    assert "CPU:0" in run.data.tags["devices"]

    # Run artefacts: the environment record and the history, uploaded through the server.
    environment = {
        item.path: item.file_size for item in client.list_artifacts(run.info.run_id, "environment")
    }
    assert set(environment) == {
        "environment/devices.json",
        "environment/requirements-frozen.txt",
        "environment/tensorflow-build.json",
    }
    assert all(size > 0 for size in environment.values())
    assert [item.path for item in client.list_artifacts(run.info.run_id, "history")] == [
        "history/history.csv"
    ]
    downloaded = Path(client.download_artifacts(run.info.run_id, "environment", str(tmp_path / "download")))
    frozen = (downloaded / "requirements-frozen.txt").read_text().splitlines()
    assert f"tensorflow=={tf.__version__}" in frozen
    assert any(line.startswith("mlflow==3.") for line in frozen)
    devices = json.loads((downloaded / "devices.json").read_text())
    assert "CPU" in [device["device_type"] for device in devices["devices"]]
    assert "is_cuda_build" in json.loads((downloaded / "tensorflow-build.json").read_text())

    # The saved model file is an artifact of the run, also uploaded through the server.
    (logged,) = client.list_artifacts(run.info.run_id, "model")
    assert logged.path == f"model/{summary.model_file}" and logged.file_size == model_file.stat().st_size

    # ... and every one of those files physically sits in the server's artefact directory.
    stored = server["artifacts"]
    on_disk = [path.relative_to(stored) for path in stored.rglob("*") if path.is_file()]
    for name, size in environment.items():
        (found,) = [
            path for path in on_disk if path.as_posix().endswith(f"{run.info.run_id}/artifacts/{name}")
        ]
        assert (stored / found).stat().st_size == size
        assert (stored / found).read_bytes() == (downloaded / Path(name).name).read_bytes()
    (stored_model,) = [
        path for path in on_disk if path.as_posix().endswith(f"{run.info.run_id}/artifacts/{logged.path}")
    ]
    assert (stored / stored_model).read_bytes() == model_file.read_bytes()
    # The client wrote nothing locally: no ./mlruns or ./mlartifacts next to the train stage.
    assert not (work / "mlruns").exists() and not (work / "mlartifacts").exists()


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
        result = train_cli(demo_params(project_root, tmp_path / "params.yaml"), demo_data, work, uri)
        seconds = time.monotonic() - started
    assert result.returncode == 2
    assert f"dlzoo train: error: MLflow tracking server {uri} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < 30, f"took {seconds:.1f} s"
    assert not (work / "models").exists() and not (work / "history.csv").exists()
