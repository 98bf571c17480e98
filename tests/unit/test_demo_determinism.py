"""Demo data are deterministic for a seed: same seed, same bytes; another seed, other data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dlzoo.config import load_params
from dlzoo.data import standins
from dlzoo.data.generated import generate
from dlzoo.store import sha256_of

PROJECT = Path(__file__).resolve().parents[2]
DATA = load_params(PROJECT / "params.yaml").data
WRITERS = {
    "mnist": lambda path, seed: standins.write_mnist_standin(path, seed),
    "cifar10": lambda path, seed: standins.write_cifar_standin(path, seed, DATA.demo),
    "imdb": lambda path, seed: standins.write_imdb_standin(path, seed, DATA.demo),
}


@pytest.mark.parametrize("dataset", list(WRITERS))
def test_stand_in_files_depend_only_on_the_seed(tmp_path: Path, dataset: str):
    write = WRITERS[dataset]
    write(tmp_path / "a", 7)
    write(tmp_path / "b", 7)
    write(tmp_path / "c", 8)
    assert sha256_of(tmp_path / "a") == sha256_of(tmp_path / "b")
    assert sha256_of(tmp_path / "a") != sha256_of(tmp_path / "c")


@pytest.mark.parametrize("dataset", ["moons", "blobs", "sine"])
def test_generated_splits_depend_only_on_the_seed(dataset: str):
    first, _ = generate(dataset, DATA)
    again, _ = generate(dataset, DATA)
    other, _ = generate(dataset, dataclasses.replace(DATA, seed=DATA.seed + 1))
    for split in first:
        np.testing.assert_array_equal(first[split][0], again[split][0])
        np.testing.assert_array_equal(first[split][1], again[split][1])
    assert not np.array_equal(first["train"][0], other["train"][0])


def test_moons_match_the_course_definition():
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    x, y = make_moons(n_samples=1000, noise=0.1, random_state=42)
    x_train, x_test, _, y_test = train_test_split(x, y, test_size=0.2, random_state=42)
    splits, _ = generate("moons", DATA)
    np.testing.assert_allclose(splits["test"][0], x_test.astype(np.float32))
    np.testing.assert_array_equal(splits["test"][1], y_test)
    # Validation is the last 20% of the course's training part, as Keras' validation_split takes it.
    np.testing.assert_allclose(splits["val"][0], x_train[640:].astype(np.float32))
