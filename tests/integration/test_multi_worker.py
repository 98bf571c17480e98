"""tf.distribute across processes: two workers on 127.0.0.1 train together and agree exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlzoo.errors import DlzooError
from dlzoo.records import SUMMARY_FILE, TrainSummary
from tests.network import free_port

pytestmark = pytest.mark.integration


def run_two_workers(command_for, environment: dict, cwd: Path) -> list[str]:
    """Starts worker 0 and 1 of one cluster on 127.0.0.1 (`command_for(index)`); their outputs."""
    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        workers.append(
            subprocess.Popen(
                command_for(index),
                env={**os.environ, **environment, "TF_CONFIG": json.dumps(tf_config)},
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    return outputs


def test_two_workers_finish_with_the_same_weights(project_root: Path, tmp_path: Path):
    run_two_workers(
        lambda index: [sys.executable, "-m", "tests.integration.multi_worker_job", str(index), str(tmp_path)],
        {"PYTHONPATH": str(project_root)},
        project_root,
    )
    first, second = (np.load(tmp_path / f"weights-{index}.npz") for index in range(2))
    assert len(first.files) == len(second.files) > 0
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
    histories = [json.loads((tmp_path / f"history-{index}.json").read_text()) for index in range(2)]
    assert histories[0] == histories[1] and len(histories[0]) == 3
    assert histories[0][-1]["loss"] < histories[0][0]["loss"]  # it learned, on both


def test_multi_worker_needs_tf_config_and_refuses_what_its_loop_lacks(monkeypatch):
    import dataclasses

    from dlzoo import runtime
    from dlzoo.config.experiments import EarlyStoppingConfig
    from dlzoo.train import distributed
    from tests.unit.test_models import plain_training

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DlzooError, match="TF_CONFIG is not set"):
        runtime.strategy_for("multi_worker")
    config = dataclasses.replace(
        plain_training("mse"), early_stopping=EarlyStoppingConfig("val_loss", 2, True)
    )
    with pytest.raises(DlzooError, match="no early_stopping; set them to null"):
        distributed.check_supported(config)


def test_the_train_stage_runs_multi_worker_and_only_the_chief_writes_and_logs(
    project_root, demo_data, tmp_path
):
    """`dlzoo train` on two workers, as the README shows: worker 0 writes the outputs and the run."""
    import hashlib

    import yaml
    from mlflow.tracking import MlflowClient

    from dlzoo import track

    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["train"]["distribute"] = "multi_worker"
    params["experiments"]["blobs_mlp"]["training"]["demo_max_epochs"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def command_for(index: int) -> list[str]:
        out = tmp_path / f"worker-{index}"
        return [
            *(sys.executable, "-m", "dlzoo.cli", "--params", str(tmp_path / "params.yaml"), "train"),
            *("blobs_mlp", "--data", str(demo_data / "processed" / "blobs")),
            *("--out", str(out / "model"), "--history", str(out / "history.csv")),
        ]

    outputs = run_two_workers(command_for, {"MLFLOW_TRACKING_URI": store}, tmp_path)
    assert "blobs_mlp: 3 epochs" in outputs[0]
    assert "this worker's share is done" in outputs[1]
    summary = TrainSummary.read(tmp_path / "worker-0" / "model" / SUMMARY_FILE)
    assert summary.epochs == 3
    assert (tmp_path / "worker-0" / "model" / "model.keras").is_file()
    assert not (tmp_path / "worker-1").exists()  # the other worker leaves nothing behind
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("blobs")
    (run,) = client.search_runs([experiment.experiment_id])  # one run, the chief's
    assert run.data.params["distribute"] == "multi_worker" and run.info.status == "FINISHED"
    model = (tmp_path / "worker-0" / "model" / "model.keras").read_bytes()
    assert run.data.tags[track.MODEL_SHA256_TAG] == hashlib.sha256(model).hexdigest()
