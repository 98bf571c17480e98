"""The whole demo pipeline through real DVC, at the demo profile's own sizes (slow: `make test-all`).

The default suite runs the same stages on smaller data (test_tiny_pipeline.py: one experiment per
family, every data set, what reruns, byte reproducibility) and the team's workflow
(test_team_workflow.py); `make run` in GitHub's CI runs this profile end to end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.e2e.projects import run

pytestmark = pytest.mark.e2e


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
