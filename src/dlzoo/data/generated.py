"""The generate stage: the course's synthetic data sets, identical in both profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import make_blobs, make_moons
from sklearn.model_selection import train_test_split

from dlzoo.config.data import BlobsConfig, DataConfig, MoonsConfig, SineConfig
from dlzoo.data.splits import Split, tail_split, write_splits
from dlzoo.records import DataInfo
from dlzoo.store import atomic_directory

GENERATED = ("moons", "blobs", "sine")


def write(dataset: str, config: DataConfig, out_dir: Path) -> DataInfo:
    """Writes a generated data set's splits and info.json into `out_dir`, all or nothing."""
    splits, info = generate(dataset, config)
    with atomic_directory(out_dir) as staging:
        return write_splits(staging, splits, info)


def generate(dataset: str, config: DataConfig) -> tuple[dict[str, Split], dict[str, Any]]:
    """Returns the train/val/test splits and the info fields of a generated data set."""
    makers = {"moons": _moons, "blobs": _blobs, "sine": _sine}
    if dataset not in makers:
        raise ValueError(f"unknown generated data set {dataset!r}; valid: {', '.join(GENERATED)}")
    splits, info = makers[dataset](getattr(config, dataset), config.seed)
    return splits, {
        "dataset": dataset,
        "profile": config.profile,
        "stand_in": False,
        "source": {"generator": info.pop("generator")},
        **info,
    }


def _moons(config: MoonsConfig, seed: int) -> tuple[dict[str, Split], dict[str, Any]]:
    x, y = make_moons(n_samples=config.samples, noise=config.noise, random_state=seed)
    return _classification_splits(x, y, config.test_fraction, config.val_fraction, seed), {
        "problem": "binary",
        "classes": ["moon_0", "moon_1"],
        "generator": f"sklearn.datasets.make_moons(n_samples={config.samples}, "
        f"noise={config.noise}, random_state={seed})",
    }


def _blobs(config: BlobsConfig, seed: int) -> tuple[dict[str, Split], dict[str, Any]]:
    x, y = make_blobs(
        n_samples=config.samples,
        centers=config.centers,
        cluster_std=config.cluster_std,
        random_state=seed,
    )
    return _classification_splits(x, y, config.test_fraction, config.val_fraction, seed), {
        "problem": "multiclass",
        "classes": [f"blob_{i}" for i in range(config.centers)],
        "generator": f"sklearn.datasets.make_blobs(n_samples={config.samples}, centers={config.centers}, "
        f"cluster_std={config.cluster_std}, random_state={seed})",
    }


def _classification_splits(x, y, test_fraction, val_fraction, seed) -> dict[str, Split]:
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=test_fraction, random_state=seed
    )
    train, val = tail_split(x_train, y_train, val_fraction)
    return {"train": train, "val": val, "test": (x_test, y_test)}


def _sine(config: SineConfig, seed: int) -> tuple[dict[str, Split], dict[str, Any]]:
    steps = np.arange(config.steps)
    noise = np.random.default_rng(seed).normal(0.0, config.noise_std, config.steps)
    series = (np.sin(steps / config.period) + noise).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(series[:-1], config.look_back)
    x = windows[..., np.newaxis].copy()  # (samples, look_back, 1): what recurrent layers expect
    y = series[config.look_back :].copy()
    cut = int(len(x) * config.train_fraction)  # chronological: the test part is the future
    train, val = tail_split(x[:cut], y[:cut], config.val_fraction)
    return {"train": train, "val": val, "test": (x[cut:], y[cut:])}, {
        "problem": "regression",
        "classes": None,
        "noise_floor_mse": config.noise_std**2,
        "generator": f"sin(t / {config.period}) + normal(0, {config.noise_std}), "
        f"t = 0..{config.steps - 1}, seed {seed}",
    }
