"""The real DVC pipeline on the demo profile, in a scratch git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ci.rerun_table import set_param  # the same edit the README's rerun table makes

pytestmark = pytest.mark.e2e


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(project_root / name, root / name)
    shutil.copytree(project_root / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    return root


DATA_STAGES = ["download", "no_weights", "generate", "preprocess"]


def test_repro_builds_every_data_set_offline_then_does_nothing(project: Path):
    output = run(["dvc", "repro", *DATA_STAGES], project)
    assert "Running stage 'preprocess@imdb'" in output
    for name in ("moons", "blobs", "sine", "mnist", "cifar10", "cats_dogs", "imdb"):
        assert (project / "data" / "processed" / name / "info.json").is_file(), name
    for name in ("mnist", "cifar10", "imdb", "mobilenet_v2", "none"):
        assert (project / "data" / "raw" / name / "source.json").is_file(), name
    lock = (project / "dvc.lock").read_text()

    again = run(["dvc", "repro", *DATA_STAGES], project)
    assert "Running stage" not in again
    assert "Data and pipelines are up to date." in again
    assert (project / "dvc.lock").read_text() == lock
    assert (
        run(["dvc", "status", *DATA_STAGES], project).strip().endswith("Data and pipelines are up to date.")
    )


def stages_run(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Running stage")]


def test_changing_one_data_block_reruns_only_its_stage(project: Path):
    run(["dvc", "repro", *DATA_STAGES], project)
    set_param("data", "moons", "noise", value=0.2)(project)
    assert stages_run(run(["dvc", "repro", *DATA_STAGES], project)) == ["Running stage 'generate@moons':"]


def test_train_stages_log_to_the_root_store_and_rerun_only_what_changed(project: Path):
    targets = ["train@moons_mlp", "train@blobs_mlp"]
    for name in ("moons_mlp", "blobs_mlp"):  # a few epochs: what reruns is the point, not accuracy
        set_param("experiments", name, "training", "demo_max_epochs", value=5)(project)
    first = run(["dvc", "repro", *targets], project)
    assert {f"Running stage '{target}':" for target in targets} <= set(stages_run(first))
    assert (project / "models" / "moons_mlp" / "model.keras").is_file()
    assert (project / "plots" / "history" / "blobs_mlp.csv").is_file()
    assert (project / "mlflow.db").is_file()  # the default store: an absolute SQLite URI at the root

    set_param("experiments", "moons_mlp", "training", "epochs", value=3)(project)
    assert stages_run(run(["dvc", "repro", *targets], project)) == ["Running stage 'train@moons_mlp':"]


@pytest.mark.slow
def test_the_whole_demo_pipeline_runs_and_every_experiment_is_tracked(project: Path):
    import hashlib

    from mlflow.tracking import MlflowClient

    from dlzoo import track
    from dlzoo.records import SUMMARY_FILE, TrainSummary

    run(["dvc", "repro"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for name in params["experiments"]:
        summary = TrainSummary.read(project / "models" / name / SUMMARY_FILE)
        assert summary.experiment == name and summary.profile == "demo"
        digest = hashlib.sha256((project / "models" / name / summary.model_file).read_bytes()).hexdigest()
        experiment = client.get_experiment_by_name(summary.task)
        tags = f"tags.`{track.EXPERIMENT_TAG}` = '{name}' and tags.`{track.MODEL_SHA256_TAG}` = '{digest}'"
        (trained,) = client.search_runs([experiment.experiment_id], tags)  # one run per model file
        assert trained.info.status == "FINISHED", name
        assert any(metric.startswith("test_") for metric in trained.data.metrics), name  # the track stage
        assert client.search_model_versions(f"name = 'dlzoo-{name}'"), name
    assert "Running stage" not in run(["dvc", "repro"], project)
