"""The generate stage: the course's synthetic data sets, identical in both profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import make_blobs, make_moons
from sklearn.model_selection import train_test_split

from dlzoo.config.data import BlobsConfig, DataConfig, MoonsConfig, SineConfig
from dlzoo.data.splits import Split, tail_split, write_splits
from dlzoo.errors import InvalidInput
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
        raise InvalidInput(f"unknown generated data set {dataset!r}; valid: {', '.join(GENERATED)}")
    splits, info = makers[dataset](getattr(config, dataset), config.seed)
    return splits, {
        "dataset": dataset,
        "profile": config.profile,
        "stand_in": False,
        "source": {key: info.pop(key) for key in ("generator", "split") if key in info},
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
    return _chronological_splits(x, y, config), {
        "problem": "regression",
        "classes": None,
        "noise_floor_mse": config.noise_std**2,
        "generator": f"sin(t / {config.period}) + normal(0, {config.noise_std}), "
        f"t = 0..{config.steps - 1}, seed {seed}",
        "split": f"chronological; the {config.look_back} windows after each boundary are dropped "
        "(they would read targets of the split before)",
    }


def _chronological_splits(x: np.ndarray, y: np.ndarray, config: SineConfig) -> dict[str, Split]:
    """train, val, test in time order, with `look_back` windows dropped after each boundary.

    Window i reads steps i .. i + look_back - 1 and predicts step i + look_back, so without a gap
    the first `look_back` windows of a split would read targets of the split before it: a
    validation window would see training answers, a test window validation ones.
    """
    gap = config.look_back
    cut = int(len(x) * config.train_fraction)  # chronological: the test part is the future
    val_start = cut - round(cut * config.val_fraction)
    return {
        "train": (x[:val_start], y[:val_start]),
        "val": (x[val_start + gap : cut], y[val_start + gap : cut]),
        "test": (x[cut + gap :], y[cut + gap :]),
    }
