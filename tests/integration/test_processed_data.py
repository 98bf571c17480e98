"""Data tests: every processed split of the demo profile, as the pipeline writes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dlzoo.config import DEFAULT_PARAMS, load_params
from dlzoo.data.splits import INFO_FILE, load_info, load_split
from dlzoo.data.text import Vocabulary
from dlzoo.records import SOURCE_FILE, CorpusInfo
from dlzoo.store import load_json

pytestmark = pytest.mark.integration

# data set: (splits, x shape without the batch, x dtype, x range, y dtype, classes or None)
EXPECTED = {
    "moons": (("train", "val", "test"), (2,), "float32", (-2.0, 3.0), "int64", 2),
    "blobs": (("train", "val", "test"), (2,), "float32", (-20.0, 20.0), "int64", 4),
    "sine": (("train", "val", "test"), (10, 1), "float32", (-1.6, 1.6), "float32", None),
    "mnist": (("train", "val", "test"), (28, 28), "uint8", (0, 255), "int64", 10),
    "cifar10": (("train", "val", "test"), (32, 32, 3), "uint8", (0, 255), "int64", 10),
    "cats_dogs": (("train", "val", "test", "test_full"), (32, 32, 3), "uint8", (0, 255), "int64", 2),
    "imdb/vocab_10000": (("train", "val", "test"), (200,), "int32", (0, 9999), "int64", 2),
    "imdb/vocab_20000": (("train", "val", "test"), (200,), "int32", (0, 19999), "int64", 2),
}
SPLITS = [(name, split) for name, spec in EXPECTED.items() for split in spec[0]]


@pytest.mark.parametrize(("dataset", "split"), SPLITS, ids=[f"{d}-{s}" for d, s in SPLITS])
def test_split_shapes_dtypes_ranges_and_labels(demo_data: Path, dataset: str, split: str):
    _, x_tail, x_dtype, (low, high), y_dtype, n_classes = EXPECTED[dataset]
    x, y = load_split(demo_data / "processed" / dataset, split)
    assert len(x) == len(y) > 0
    assert x.shape[1:] == x_tail and str(x.dtype) == x_dtype
    assert low <= x.min() and x.max() <= high
    assert np.isfinite(x).all() and y.ndim == 1 and str(y.dtype) == y_dtype
    if n_classes is None:
        assert np.isfinite(y).all()
        return
    counts = np.bincount(y, minlength=n_classes)
    assert len(counts) == n_classes, "labels outside 0..classes-1"
    shares = counts / counts.sum()
    # Every class present, none under half or over 1.5 times its fair share.
    assert shares.min() >= 0.5 / n_classes and shares.max() <= 1.5 / n_classes, counts


@pytest.mark.parametrize("dataset", list(EXPECTED))
def test_info_json_describes_the_arrays(demo_data: Path, dataset: str):
    data_dir = demo_data / "processed" / dataset
    info = load_info(data_dir)
    assert info.profile == "demo"
    assert set(info.splits) == set(EXPECTED[dataset][0])
    n_classes = EXPECTED[dataset][5]
    assert (info.problem == "regression") == (n_classes is None)
    assert (len(info.classes) if info.classes is not None else None) == n_classes
    for split, summary in info.splits.items():
        x, y = load_split(data_dir, split)
        assert (
            summary.x_shape == list(x.shape) and summary.count == len(x) and summary.x_dtype == str(x.dtype)
        )
        if info.classes is not None:
            assert sum(summary.class_counts.values()) == len(y)


def test_stand_ins_are_labelled_as_stand_ins(demo_data: Path):
    for dataset in ("mnist", "cifar10", "cats_dogs", "imdb/vocab_10000", "imdb/vocab_20000"):
        info = load_info(demo_data / "processed" / dataset)
        assert info.stand_in is True, dataset
        assert "not" in info.source["description"]
    corpus = CorpusInfo.read(demo_data / "processed" / "imdb" / INFO_FILE)
    assert corpus.stand_in is True and "not" in corpus.source["description"]
    assert corpus.variants == ["vocab_10000", "vocab_20000"]
    weights = load_json(demo_data / "raw" / "mobilenet_v2" / SOURCE_FILE)
    assert weights["weights"] == "random" and weights["files"] == {}
    # `pretrained: none`: a record and nothing else, whatever the profile.
    assert sorted(path.name for path in (demo_data / "raw" / "none").iterdir()) == [SOURCE_FILE]
    none = load_json(demo_data / "raw" / "none" / SOURCE_FILE)
    assert none["dataset"] == "none" and none["weights"] == "random" and none["files"] == {}


def test_cats_dogs_follow_the_course_split_without_leakage(demo_data: Path):
    data_dir = demo_data / "processed" / "cats_dogs"
    info = load_info(data_dir)
    counts = {split: info.splits[split].class_counts for split in ("train", "val", "test")}
    assert counts == {
        "train": {"cat": 200, "dog": 200},
        "val": {"cat": 50, "dog": 50},
        "test": {"cat": 50, "dog": 50},
    }
    digests = {split: {_digest(image) for image in load_split(data_dir, split)[0]} for split in counts}
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]


def test_imdb_vocabulary_comes_from_the_training_part(demo_data: Path):
    data_dir = demo_data / "processed" / "imdb"
    assert not (data_dir / "vocabulary.json").exists()  # each variant holds its own
    large_words = Vocabulary.load(data_dir / "vocab_20000" / "vocabulary.json")
    x_train, _ = load_split(data_dir / "vocab_20000", "train")
    assert x_train.max() == len(large_words) + 2  # every word id is used in training
    # The 10k variant is the 20k one with ranks >= 10000 mapped to the OOV id.
    small, _ = load_split(data_dir / "vocab_10000", "test")
    large, _ = load_split(data_dir / "vocab_20000", "test")
    np.testing.assert_array_equal(small, np.where(large < 10000, large, 2))
    # ... and its vocabulary is the words it can encode: the first ranks of the 20k one.
    small_words = Vocabulary.load(data_dir / "vocab_10000" / "vocabulary.json")
    assert len(small_words) == min(len(large_words), 10000 - 3)
    assert small_words.words == large_words.words[: len(small_words)]
    for variant in ("vocab_10000", "vocab_20000"):
        assert load_info(data_dir / variant).input.vocabulary == "vocabulary.json"


def test_sine_is_chronological_and_no_window_reads_an_earlier_splits_target(demo_data: Path):
    data_dir = demo_data / "processed" / "sine"
    splits = {name: load_split(data_dir, name) for name in ("train", "val", "test")}
    x_train, y_train = splits["train"]
    # The target of window i is the last input of window i + 1: the windows are consecutive.
    np.testing.assert_array_equal(x_train[1:, -1, 0], y_train[:-1])
    look_back = x_train.shape[1]
    # The noisy series has no repeated value, so a value identifies its time step.
    for earlier, later in (("train", "val"), ("val", "test"), ("train", "test")):
        read_later = set(splits[later][0].ravel().tolist())
        assert read_later.isdisjoint(splits[earlier][1].tolist()), f"{later} reads {earlier} targets"
    # Only the windows that would leak are dropped: look_back after each of the two boundaries.
    steps = load_params(DEFAULT_PARAMS).data.sine.steps
    windows = steps - look_back
    assert sum(len(y) for _, y in splits.values()) == windows - 2 * look_back
    assert load_info(data_dir).source["split"].startswith("chronological")


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()
