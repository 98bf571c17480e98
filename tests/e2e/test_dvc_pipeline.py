"""The real DVC pipeline on the demo profile, in a scratch git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DLZOO_DATA_MIRROR", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(repo / name, root / name)
    shutil.copytree(repo / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    return root


def test_repro_builds_every_data_set_offline_then_does_nothing(project: Path):
    output = run(["dvc", "repro"], project)
    assert "Running stage 'preprocess@imdb'" in output
    for name in ("moons", "blobs", "sine", "mnist", "cifar10", "cats_dogs", "imdb"):
        assert (project / "data" / "processed" / name / "info.json").is_file(), name
    lock = (project / "dvc.lock").read_text()

    again = run(["dvc", "repro"], project)
    assert "Running stage" not in again
    assert "Data and pipelines are up to date." in again
    assert (project / "dvc.lock").read_text() == lock
    assert run(["dvc", "status"], project).strip().endswith("Data and pipelines are up to date.")


def test_changing_one_block_reruns_only_its_stage(project: Path):
    run(["dvc", "repro"], project)
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["data"]["moons"]["noise"] = 0.2
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(["dvc", "repro"], project)
    assert [line for line in output.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'generate@moons':"
    ]
