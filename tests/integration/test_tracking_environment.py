"""track.log_environment() in a real MLflow run on a temporary SQLite store, read back from the store."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import keras
import mlflow
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from dlzoo import track

pytestmark = pytest.mark.integration


def test_a_run_records_requirements_tensorflow_build_devices_and_platform(store, tmp_path):
    # As in the train stage (environment_tags), TensorFlow has found its devices before the run:
    # a first discovery (CUDA initialisation on a GPU machine) is not log_environment's cost.
    tf.config.list_physical_devices()
    with track.start_run("environment-test", "env", {"seed": 1}, {}) as active:
        started = time.perf_counter()
        returned = track.log_environment()
        seconds = time.perf_counter() - started
    assert seconds < 1.0, f"log_environment took {seconds:.2f} s"

    client = MlflowClient(store)
    run = client.get_run(active.info.run_id)
    assert run.info.status == "FINISHED"
    listed = sorted(item.path for item in client.list_artifacts(run.info.run_id, "environment"))
    assert listed == [
        "environment/devices.json",
        "environment/requirements-frozen.txt",
        "environment/tensorflow-build.json",
    ]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl")))
    assert str(local).startswith(str(tmp_path / "dl"))

    frozen = (local / "environment" / "requirements-frozen.txt").read_text().splitlines()
    assert f"tensorflow=={tf.__version__}" in frozen
    assert f"mlflow=={mlflow.__version__}" in frozen
    assert f"keras=={keras.__version__}" in frozen
    assert frozen == sorted(frozen, key=str.lower) and len(frozen) == len(set(frozen)) > 50
    assert all(line.count("==") == 1 for line in frozen)
    assert frozen == returned["requirements"]

    build = json.loads((local / "environment" / "tensorflow-build.json").read_text())
    assert isinstance(build["is_cuda_build"], bool)
    assert build["is_cuda_build"] == tf.test.is_built_with_cuda()
    assert build["tensorflow_version"] == tf.__version__
    if build["is_cuda_build"]:
        assert build["cuda_version"] and build["cudnn_version"]
    assert build == json.loads(json.dumps(returned["tensorflow_build"]))

    recorded = json.loads((local / "environment" / "devices.json").read_text())
    kinds = [device["device_type"] for device in recorded["devices"]]
    assert "CPU" in kinds
    gpus = [device for device in recorded["devices"] if device["device_type"] == "GPU"]
    assert len(gpus) == len(tf.config.list_physical_devices("GPU"))
    assert all(gpu["device_name"] for gpu in gpus)
    assert recorded["platform"]["machine"] == platform.machine()
    assert recorded["platform"]["system"] == platform.system()
    assert recorded["platform"]["cpu_count"] == os.cpu_count()
    assert 1 <= recorded["platform"]["usable_cpu_count"] <= os.cpu_count()

    tags = run.data.tags
    assert tags["tensorflow.cuda_build"] == str(build["is_cuda_build"]).lower()
    assert tags["tensorflow.cuda_version"] == str(build.get("cuda_version", "none"))
    assert tags["devices"].split(", ")[0] == "CPU:0"
    assert len(tags["devices"].split(", ")) == len(recorded["devices"])
    assert tags["platform.machine"] == platform.machine()
    assert tags["platform.os"].startswith(platform.system())
    assert tags["platform.cpu_count"] == str(recorded["platform"]["usable_cpu_count"])


def test_frozen_requirements_match_the_installed_versions():
    frozen = dict(line.split("==") for line in track.frozen_requirements())
    for name in ("tensorflow", "mlflow", "keras", "numpy", "onnxruntime"):
        assert frozen[name] == importlib.metadata.version(name), name
