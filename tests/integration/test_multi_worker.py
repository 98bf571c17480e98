"""tf.distribute across processes: two workers on 127.0.0.1 train together and agree exactly.

One pair of worker processes (multi_worker_job) trains an experiment per loss kind, callback and
phase through the custom loop; the tests compare the workers with each other, with the same loop
in one process and with `fit`'s records. Every dataset ends in a partial global batch.
"""

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
from tests.integration.multi_worker_job import EXPERIMENTS, training
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


@pytest.fixture(scope="module")
def trained(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every experiment of multi_worker_job trained by two workers, and its one-process references."""
    out = tmp_path_factory.mktemp("multi-worker")
    run_two_workers(
        lambda index: [sys.executable, "-m", "tests.integration.multi_worker_job", str(index), str(out)],
        {"PYTHONPATH": str(project_root)},
        project_root,
    )
    return out


def result(trained: Path, experiment: str, run: str) -> tuple[list[np.ndarray], list[dict]]:
    """A run's final weights (in the model's order) and history."""
    final = np.load(trained / experiment / f"{run}-final.npz")
    history = json.loads((trained / experiment / f"{run}.json").read_text())
    return [final[name] for name in final.files], history


def numbers(row: dict) -> dict[str, float]:
    return {name: value for name, value in row.items() if name != "phase"}


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_both_workers_end_with_the_same_weights_and_history(trained: Path, experiment: str):
    (first, history), (second, other) = (result(trained, experiment, f"worker-{i}") for i in range(2))
    assert len(first) == len(second) > 0
    for mine, theirs in zip(first, second, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert history == other
    assert history[-1]["loss"] < history[0]["loss"]  # it learned


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_two_workers_train_as_the_same_loop_in_one_process(trained: Path, experiment: str):
    """Sharded global batches, the last one partial (a worker's shard even empty), give the same
    model as whole batches in one process: the loss is averaged over the step's global count."""
    weights, history = result(trained, experiment, "worker-0")
    expected_weights, expected = result(trained, experiment, "one-process")
    assert [(row["epoch"], row["phase"]) for row in history] == [(r["epoch"], r["phase"]) for r in expected]
    for row, reference in zip(history, expected, strict=True):
        assert numbers(row) == pytest.approx(numbers(reference), rel=1e-3, abs=1e-6), row["epoch"]
    for mine, theirs in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_the_loop_records_what_fit_records(trained: Path, experiment: str):
    """The same history columns, in the same order (MLflow and the CSV read them); the first epoch
    agrees in value too (later ones see other batches: `fit` draws its epochs' shuffles unevenly)."""
    _, history = result(trained, experiment, "worker-0")
    _, fitted = result(trained, experiment, "fit")
    assert [list(row) for row in history] == [list(row) for row in fitted[: len(history)]]
    assert history[0]["phase"] == fitted[0]["phase"]
    assert numbers(history[0]) == pytest.approx(numbers(fitted[0]), rel=1e-4)


def test_the_callbacks_and_phases_steer_the_loop(trained: Path):
    _, sparse = result(trained, "sparse", "worker-0")
    assert len(sparse) < EXPERIMENTS["sparse"].training.epochs  # stopped early
    rates = [row["learning_rate"] for row in sparse]
    assert rates[0] == pytest.approx(0.1) and rates[-1] < rates[0]  # reduced on the plateau
    _, decayed = result(trained, "regression", "worker-0")
    assert decayed[-1]["learning_rate"] < decayed[0]["learning_rate"]  # the schedule

    _, phases = result(trained, "fine_tune", "worker-0")
    assert [(row["epoch"], row["phase"], row["learning_rate"]) for row in phases] == [
        (1, "train", pytest.approx(0.02)),
        (2, "fine_tune", pytest.approx(0.005)),  # the epoch count goes on, at the new rate
    ]
    initial, final = (
        np.load(trained / "fine_tune" / f"worker-0-{stage}.npz") for stage in ("initial", "final")
    )
    moved = {name.split("/")[-2] for name in initial.files if not np.array_equal(initial[name], final[name])}
    # Phase 1 trains the head; phase 2 also the base from layer 3 on, but not its batch normalisation.
    assert moved == {"tuned", "head"}


def test_multi_worker_needs_tf_config_and_refuses_mixed_precision_and_xla(monkeypatch):
    import keras

    from dlzoo import runtime
    from dlzoo.train import distributed
    from dlzoo.train.shared import FitSettings

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DlzooError, match="TF_CONFIG is not set"):
        runtime.strategy_for("multi_worker")
    config = training("mse")
    plain = FitSettings(seed=0)
    distributed.check_supported(config, plain)  # the plain recipe
    with pytest.raises(DlzooError, match=r"set train\.jit_compile to false"):
        distributed.check_supported(config, FitSettings(seed=0, jit_compile=True))
    runtime.configure_precision(True)
    try:
        with pytest.raises(DlzooError, match="does not support mixed_precision"):
            distributed.check_supported(config, plain)
    finally:
        runtime.configure_precision(False)
    assert keras.mixed_precision.global_policy().name == "float32"


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
