"""Shared fixtures: the project root and the demo data made once per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

PROJECT = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT


def built_once(
    factory: pytest.TempPathFactory, worker_id: str, name: str, build: Callable[[Path], Path]
) -> Path:
    """What `build` makes in a fresh directory, once per test run and shared by every xdist worker
    (pytest-xdist's documented lock-file pattern); tests only read it."""
    if worker_id == "master":  # not under xdist
        return build(factory.mktemp(name))
    directory = factory.getbasetemp().parent / name
    done = directory.with_name(f"{name}.built")  # holds what `build` returned, once it has finished
    with FileLock(f"{directory}.lock"):
        if not done.is_file():
            shutil.rmtree(directory, ignore_errors=True)  # a worker that failed half-way
            directory.mkdir()
            done.write_text(str(build(directory)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Every data stage of the demo profile, run through the CLI into a temporary directory."""
    return built_once(tmp_path_factory, worker_id, "demo-data", _run_data_stages)


def _run_data_stages(root: Path) -> Path:
    from dlzoo.cli import main

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
def tiny_repository(tmp_path_factory: pytest.TempPathFactory, worker_id: str, demo_data: Path) -> Path:
    """A model repository with one tiny exported model per family (see tests/tiny_repository.py)."""
    from tests import tiny_repository

    return built_once(
        tmp_path_factory, worker_id, "exported", lambda root: tiny_repository.build(root, demo_data)
    )
