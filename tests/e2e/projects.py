"""Scratch DVC projects for the end-to-end tests: this repository's dvc.yaml and code, a params.yaml
of the test's choosing, a fresh git repository, and the real `dvc` and `dlzoo` commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlzoo.cli import TRACE_ENV

# Small stand-ins: these projects check that every stage works and what it reads, not accuracy.
TINY_DATA = {
    ("data", "demo", "cifar10_train_per_class"): 30,
    ("data", "demo", "cifar10_test_per_class"): 10,
    ("data", "demo", "imdb_reviews_per_label"): 40,
    ("data", "cats_dogs", "train_per_class"): 10,
    ("data", "cats_dogs", "val_per_class"): 5,
    ("data", "cats_dogs", "test_per_class"): 5,
    ("data", "imdb", "max_length"): 40,
}


def run(command: list[str], cwd: Path) -> str:
    """Runs a command of the project's .venv; fails the test with its output if it fails."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def tiny_params(project_root: Path, kept: dict[str, int]) -> dict:
    """params.yaml with only the `kept` experiments ({name: demo epochs}) and tiny demo data."""
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["experiments"] = {name: params["experiments"][name] for name in kept}
    for name, epochs in kept.items():
        params["experiments"][name]["training"]["demo_max_epochs"] = epochs
        if "demo_image_size" in params["experiments"][name]["model"]:
            params["experiments"][name]["model"]["demo_image_size"] = 32
        if "fine_tune" in params["experiments"][name]["training"]:
            # One phase: a second compile of MobileNetV2 would double its stage;
            # tests/unit/test_models.py trains both phases of transfer learning.
            params["experiments"][name]["training"]["fine_tune"] = None
    for keys, value in TINY_DATA.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return params


def new_project(project_root: Path, root: Path, params: dict) -> Path:
    """A git + DVC project at `root` with this repository's pipeline and code, and `params`."""
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(project_root / name, root / name)
    shutil.copytree(project_root / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    return root


def repro(root: Path) -> str:
    """`dvc repro` of the whole pipeline, every command tracing what it reads (DLZOO_TRACE_DIR)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TRACE_ENV, str(root / "traces"))
        patch.setenv("KERAS_HOME", str(root / "keras-home"))  # no cached ImageNet weights: the demo's case
        return run(["dvc", "repro"], root)
