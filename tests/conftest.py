"""Shared fixtures: the project root and the demo data made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs every data stage of the demo profile through the CLI, into a temporary directory."""
    from dlzoo.cli import main

    root = tmp_path_factory.mktemp("demo-data")
    params = ["--params", str(PROJECT / "params.yaml")]
    with pytest.MonkeyPatch.context() as patch:
        # An empty Keras home: the demo must not depend on what this machine has cached.
        patch.setenv("KERAS_HOME", str(root / "keras-home"))
        for dataset in ("mnist", "cifar10", "imdb", "mobilenet_v2", "none"):  # none: `pretrained: none`
            assert main([*params, "download", dataset, "--out", str(root / "raw" / dataset)]) == 0
        for dataset in ("moons", "blobs", "sine"):
            assert main([*params, "generate", dataset, "--out", str(root / "processed" / dataset)]) == 0
        for dataset, raw in (
            ("mnist", "mnist"),
            ("cifar10", "cifar10"),
            ("cats_dogs", "cifar10"),
            ("imdb", "imdb"),
        ):
            out = str(root / "processed" / dataset)
            assert main([*params, "preprocess", dataset, "--raw", str(root / "raw" / raw), "--out", out]) == 0
    return root


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """A model repository with one tiny exported model per family (see tests/tiny_repository.py)."""
    from tests import tiny_repository

    return tiny_repository.build(tmp_path_factory.mktemp("exported"), demo_data)
