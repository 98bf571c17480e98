"""Readers of the canonical raw formats, checked against fixtures built here by hand.

The fixtures are written with numpy / tarfile / raw bytes only, never with the project's own
writers, so that a reader and a writer sharing the same mistake cannot hide it. The writers are
checked separately by a round trip through the readers.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from dlzoo.data.formats import (
    FormatError,
    ImageSplits,
    read_cifar_tarball,
    read_imdb_tarball,
    read_mnist_npz,
    write_cifar_tarball,
    write_imdb_tarball,
    write_mnist_npz,
)

CIFAR_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


# --- MNIST ---------------------------------------------------------------------------------------


def _mnist_arrays(n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def test_read_mnist_npz_returns_the_keras_arrays(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)

    splits = read_mnist_npz(path)

    for key, expected in arrays.items():
        got = getattr(splits, key)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_read_mnist_npz_accepts_a_compressed_npz_and_label_9(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    arrays["y_train"][0] = 9
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, **arrays)

    np.testing.assert_array_equal(read_mnist_npz(path).y_train, arrays["y_train"])


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda a: a.pop("y_test"), id="missing-key"),
        pytest.param(lambda a: a.update(x_train=a["x_train"].astype(np.float32)), id="float-images"),
        pytest.param(lambda a: a.update(x_test=a["x_test"].astype(np.int64)), id="int64-images"),
        pytest.param(lambda a: a.update(x_train=a["x_train"][:, :27, :]), id="27x28-images"),
        pytest.param(lambda a: a.update(x_test=a["x_test"].reshape(-1, 28 * 28)), id="flat-images"),
        pytest.param(lambda a: a.update(x_train=a["x_train"][..., None]), id="4d-images"),
        pytest.param(lambda a: a["y_train"].__setitem__(2, 10), id="label-10"),
        pytest.param(lambda a: a.update(y_test=a["y_test"][:-1]), id="too-few-labels"),
        pytest.param(lambda a: a.update(y_train=a["y_train"].reshape(-1, 1)), id="2d-labels"),
    ],
)
def test_read_mnist_npz_rejects_malformed_archives(tmp_path: Path, corrupt) -> None:
    arrays = _mnist_arrays()
    corrupt(arrays)
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)

    with pytest.raises(FormatError):
        read_mnist_npz(path)


def test_read_mnist_npz_rejects_a_file_that_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"<html>404 Not Found</html>\n")

    with pytest.raises(FormatError):
        read_mnist_npz(path)


def test_read_mnist_npz_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError):
        read_mnist_npz(tmp_path / "absent.npz")


def test_read_mnist_npz_rejects_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"")

    with pytest.raises(FormatError):
        read_mnist_npz(path)


def test_read_mnist_npz_rejects_a_single_npy_array(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    with path.open("wb") as stream:
        np.save(stream, _mnist_arrays()["x_train"])

    with pytest.raises(FormatError):
        read_mnist_npz(path)


# --- CIFAR-10 ------------------------------------------------------------------------------------


def _cifar_record(label: int) -> bytes:
    """One record: R plane = row index, G plane = column index, B plane = label * 10."""
    rows, cols = np.indices((32, 32), dtype=np.uint8)
    blue = np.full((32, 32), label * 10, dtype=np.uint8)
    return bytes([label]) + rows.tobytes() + cols.tobytes() + blue.tobytes()


def _cifar_batches(labels_per_batch: dict[str, list[int]]) -> dict[str, bytes]:
    return {
        f"cifar-10-batches-bin/{name}": b"".join(_cifar_record(label) for label in labels)
        for name, labels in labels_per_batch.items()
    }


CIFAR_LABELS = {
    "data_batch_1.bin": [3, 1],
    "data_batch_2.bin": [0],
    "data_batch_3.bin": [9, 9, 2],
    "data_batch_4.bin": [5],
    "data_batch_5.bin": [7, 4],
    "test_batch.bin": [8, 6, 0],
}


def test_read_cifar_tarball_decodes_planes_into_height_width_channel(tmp_path: Path) -> None:
    members = _cifar_batches(CIFAR_LABELS)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    path = _write_tar_gz(tmp_path / "cifar.tar.gz", members)

    splits = read_cifar_tarball(path)

    train_labels = [label for name in CIFAR_BATCHES[:5] for label in CIFAR_LABELS[name]]
    test_labels = CIFAR_LABELS["test_batch.bin"]
    assert splits.x_train.shape == (len(train_labels), 32, 32, 3)
    assert splits.x_test.shape == (len(test_labels), 32, 32, 3)
    assert splits.x_train.dtype == splits.x_test.dtype == np.uint8
    assert splits.y_train.tolist() == train_labels
    assert splits.y_test.tolist() == test_labels

    rows, cols = np.indices((32, 32))
    for images, labels in ((splits.x_train, train_labels), (splits.x_test, test_labels)):
        for image, label in zip(images, labels, strict=True):
            np.testing.assert_array_equal(image[:, :, 0], rows)
            np.testing.assert_array_equal(image[:, :, 1], cols)
            np.testing.assert_array_equal(image[:, :, 2], np.full((32, 32), label * 10))
    # Spot checks of the layout, independent of np.indices.
    assert splits.x_train[0, 5, 17].tolist() == [5, 17, 30]
    assert splits.x_test[0, 31, 0].tolist() == [31, 0, 80]


def test_read_cifar_tarball_keeps_record_order_within_and_across_batches(tmp_path: Path) -> None:
    # Each record's pixels are unique to it (value = global index), so any reordering shows.
    members = {}
    index = 0
    for name in CIFAR_BATCHES:
        payload = b""
        for _ in range(2):
            payload += bytes([index % 10]) + bytes([index]) * 3072
            index += 1
        members[f"cifar-10-batches-bin/{name}"] = payload
    path = _write_tar_gz(tmp_path / "cifar.tar.gz", members)

    splits = read_cifar_tarball(path)

    assert splits.x_train[:, 0, 0, 0].tolist() == list(range(10))
    assert (splits.x_train == np.arange(10, dtype=np.uint8)[:, None, None, None]).all()
    assert splits.y_train.tolist() == list(range(10))
    assert splits.x_test[:, 0, 0, 0].tolist() == [10, 11]
    assert splits.y_test.tolist() == [0, 1]


@pytest.mark.parametrize("missing", CIFAR_BATCHES)
def test_read_cifar_tarball_rejects_a_missing_batch(tmp_path: Path, missing: str) -> None:
    members = _cifar_batches({name: labels for name, labels in CIFAR_LABELS.items() if name != missing})
    path = _write_tar_gz(tmp_path / "cifar.tar.gz", members)

    with pytest.raises(FormatError, match=missing):
        read_cifar_tarball(path)


@pytest.mark.parametrize("extra_bytes", [-1, 1, -3072, 3072, -3074])
def test_read_cifar_tarball_rejects_partial_records(tmp_path: Path, extra_bytes: int) -> None:
    members = _cifar_batches(CIFAR_LABELS)
    name = "cifar-10-batches-bin/data_batch_3.bin"
    payload = members[name]
    members[name] = payload[:extra_bytes] if extra_bytes < 0 else payload + b"\0" * extra_bytes
    path = _write_tar_gz(tmp_path / "cifar.tar.gz", members)

    with pytest.raises(FormatError, match="data_batch_3"):
        read_cifar_tarball(path)


def test_read_cifar_tarball_rejects_an_empty_batch(tmp_path: Path) -> None:
    members = _cifar_batches(CIFAR_LABELS)
    members["cifar-10-batches-bin/test_batch.bin"] = b""
    path = _write_tar_gz(tmp_path / "cifar.tar.gz", members)

    with pytest.raises(FormatError, match="test_batch"):
        read_cifar_tarball(path)


def test_read_cifar_tarball_rejects_a_label_above_9(tmp_path: Path) -> None:
    labels = dict(CIFAR_LABELS)
    labels["data_batch_4.bin"] = [5, 10]
    path = _write_tar_gz(tmp_path / "cifar.tar.gz", _cifar_batches(labels))

    with pytest.raises(FormatError, match="label 10"):
        read_cifar_tarball(path)


def test_read_cifar_tarball_rejects_a_directory_in_place_of_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "cifar.tar.gz"
    members = _cifar_batches(CIFAR_LABELS)
    del members["cifar-10-batches-bin/data_batch_2.bin"]
    with tarfile.open(path, "w:gz") as archive:
        directory = tarfile.TarInfo("cifar-10-batches-bin/data_batch_2.bin")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))

    with pytest.raises(FormatError):
        read_cifar_tarball(path)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not gzip at all", id="text"),
        pytest.param(gzip.compress(b"gzip but not a tar" * 100), id="gzip-not-tar"),
        pytest.param(gzip.compress(b"x" * 5000)[:25], id="truncated-gzip"),
    ],
)
def test_read_cifar_tarball_rejects_non_tarballs(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(payload)

    with pytest.raises(FormatError):
        read_cifar_tarball(path)


def test_read_cifar_tarball_rejects_an_uncompressed_tar(tmp_path: Path) -> None:
    path = tmp_path / "cifar.tar"
    with tarfile.open(path, "w") as archive:
        for name, payload in _cifar_batches(CIFAR_LABELS).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))

    with pytest.raises(FormatError):
        read_cifar_tarball(path)


# --- IMDB ----------------------------------------------------------------------------------------

IMDB_MEMBERS = {
    # Deliberately out of order in the tarball; ids compared as numbers (10 after 2).
    "aclImdb/train/pos/10_7.txt": "train pos ten",
    "aclImdb/train/pos/0_9.txt": "train pos zero",
    "aclImdb/train/neg/1_2.txt": "train neg one",
    "aclImdb/train/pos/2_8.txt": "train pos two",
    "aclImdb/train/neg/0_1.txt": "train neg zero <br />with a break",
    "aclImdb/train/unsup/0_0.txt": "unlabelled, must be ignored",
    "aclImdb/test/pos/0_10.txt": "test pos zero, caf\u00e9 \u2014 fine",
    "aclImdb/test/neg/3_4.txt": "test neg three",
    "aclImdb/test/neg/0_3.txt": "test neg zero",
    "aclImdb/imdb.vocab": "the\nand\n",
    "aclImdb/imdbEr.txt": "0.1\n",
    "aclImdb/README": "readme",
    "aclImdb/train/labeledBow.feat": "0 0:1\n",
    "aclImdb/train/urls_pos.txt": "http://example.invalid\n",
}


def _write_imdb(path: Path, members: dict[str, str | bytes]) -> Path:
    encoded = {
        name: text.encode("utf-8") if isinstance(text, str) else text for name, text in members.items()
    }
    return _write_tar_gz(path, encoded)


def test_read_imdb_tarball_orders_by_split_label_and_numeric_id(tmp_path: Path) -> None:
    path = _write_imdb(tmp_path / "aclImdb_v1.tar.gz", IMDB_MEMBERS)

    splits = read_imdb_tarball(path)

    assert splits.train_texts == [
        "train neg zero <br />with a break",
        "train neg one",
        "train pos zero",
        "train pos two",
        "train pos ten",
    ]
    assert splits.train_labels.tolist() == [0, 0, 1, 1, 1]
    assert splits.test_texts == ["test neg zero", "test neg three", "test pos zero, caf\u00e9 \u2014 fine"]
    assert splits.test_labels.tolist() == [0, 0, 1]
    assert splits.train_labels.dtype == splits.test_labels.dtype == np.int64


def test_read_imdb_tarball_ignores_directory_entries(tmp_path: Path) -> None:
    path = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for directory in ("aclImdb", "aclImdb/train", "aclImdb/train/pos", "aclImdb/test/neg/5_1.txt"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, text in (("aclImdb/train/pos/0_9.txt", b"good"), ("aclImdb/test/neg/0_1.txt", b"bad")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))

    splits = read_imdb_tarball(path)

    assert (splits.train_texts, splits.test_texts) == (["good"], ["bad"])


def test_read_imdb_tarball_rejects_non_utf8_text(tmp_path: Path) -> None:
    members: dict[str, str | bytes] = dict(IMDB_MEMBERS)
    members["aclImdb/test/neg/3_4.txt"] = "caf\u00e9".encode("latin-1")
    path = _write_imdb(tmp_path / "aclImdb_v1.tar.gz", members)

    with pytest.raises(FormatError):
        read_imdb_tarball(path)


def test_read_imdb_tarball_rejects_a_tarball_without_reviews(tmp_path: Path) -> None:
    members = {name: text for name, text in IMDB_MEMBERS.items() if not name.endswith(".txt")}
    members["aclImdb/train/unsup/0_0.txt"] = "unlabelled"
    path = _write_imdb(tmp_path / "aclImdb_v1.tar.gz", members)

    with pytest.raises(FormatError):
        read_imdb_tarball(path)


@pytest.mark.parametrize("split", ["train", "test"])
def test_read_imdb_tarball_rejects_a_split_without_reviews(tmp_path: Path, split: str) -> None:
    members = {name: text for name, text in IMDB_MEMBERS.items() if not name.startswith(f"aclImdb/{split}/")}
    path = _write_imdb(tmp_path / "aclImdb_v1.tar.gz", members)

    with pytest.raises(FormatError, match=split):
        read_imdb_tarball(path)


def test_read_imdb_tarball_rejects_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "aclImdb_v1.tar.gz"
    path.write_bytes(b"PK\x03\x04 a zip, not a tar.gz")

    with pytest.raises(FormatError):
        read_imdb_tarball(path)


# --- Writers: round trip and determinism --------------------------------------------------------


def _image_splits(shape: tuple[int, ...], n_train: int, n_test: int) -> ImageSplits:
    rng = np.random.default_rng(1)
    return ImageSplits(
        x_train=rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        y_train=rng.integers(0, 10, size=n_train, dtype=np.uint8),
        x_test=rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=n_test, dtype=np.uint8),
    )


@pytest.fixture
def set_clock(monkeypatch: pytest.MonkeyPatch):
    """Moves the wall clock, so that a timestamp leaking into a written file shows as a diff."""
    real_localtime = time.localtime

    def set_to(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: seconds)
        monkeypatch.setattr(
            time, "localtime", lambda secs=None: real_localtime(seconds if secs is None else secs)
        )

    return set_to


def _assert_same_splits(got: ImageSplits, expected: ImageSplits) -> None:
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert getattr(got, key).dtype == getattr(expected, key).dtype, key
        np.testing.assert_array_equal(getattr(got, key), getattr(expected, key), err_msg=key)


def test_write_mnist_npz_round_trips_and_is_deterministic(tmp_path: Path, set_clock) -> None:
    splits = _image_splits((28, 28), n_train=7, n_test=3)
    first, second = tmp_path / "a" / "mnist.npz", tmp_path / "b" / "mnist.npz"
    first.parent.mkdir()
    second.parent.mkdir()

    set_clock(1_000_000_000)
    write_mnist_npz(first, splits)
    set_clock(1_700_000_000)
    write_mnist_npz(second, splits)

    _assert_same_splits(read_mnist_npz(first), splits)
    assert first.read_bytes() == second.read_bytes()


def test_write_cifar_tarball_round_trips_and_is_deterministic(tmp_path: Path, set_clock) -> None:
    splits = _image_splits((32, 32, 3), n_train=12, n_test=4)  # 12 over 5 batches: uneven sizes
    first, second = tmp_path / "first.tar.gz", tmp_path / "second.tar.gz"

    set_clock(1_000_000_000)
    write_cifar_tarball(first, splits)
    set_clock(1_700_000_000)
    write_cifar_tarball(second, splits)

    _assert_same_splits(read_cifar_tarball(first), splits)
    assert first.read_bytes() == second.read_bytes()
    # The writer's layout is the canonical one: check one record against the raw bytes.
    with tarfile.open(first, "r:gz") as archive:
        raw = archive.extractfile("cifar-10-batches-bin/data_batch_1.bin").read()
    image = splits.x_train[0]
    assert raw[0] == splits.y_train[0]
    assert raw[1:1025] == image[:, :, 0].tobytes()
    assert raw[1025:2049] == image[:, :, 1].tobytes()
    assert raw[2049:3073] == image[:, :, 2].tobytes()


def test_write_imdb_tarball_round_trips_and_is_deterministic(tmp_path: Path, set_clock) -> None:
    reviews = {
        "train": [(1, 9, "great <br />film"), (0, 2, "dull"), (1, 7, "caf\u00e9 was fine"), (0, 1, "awful")],
        "test": [(0, 3, "meh"), (1, 10, "superb")],
    }
    first, second = tmp_path / "first.tar.gz", tmp_path / "second.tar.gz"

    set_clock(1_000_000_000)
    write_imdb_tarball(first, reviews)
    set_clock(1_700_000_000)
    write_imdb_tarball(second, reviews)

    splits = read_imdb_tarball(first)
    # The reader orders by label then id; the writer numbers each label's reviews in order.
    assert splits.train_texts == ["dull", "awful", "great <br />film", "caf\u00e9 was fine"]
    assert splits.train_labels.tolist() == [0, 0, 1, 1]
    assert splits.test_texts == ["meh", "superb"]
    assert splits.test_labels.tolist() == [0, 1]
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first, "r:gz") as archive:
        names = set(archive.getnames())
    assert {"aclImdb/train/pos/0_9.txt", "aclImdb/train/neg/1_1.txt", "aclImdb/test/pos/0_10.txt"} <= names


def test_writers_give_different_bytes_for_different_content(tmp_path: Path) -> None:
    splits = _image_splits((32, 32, 3), n_train=5, n_test=1)
    changed = ImageSplits(splits.x_train, splits.y_train, splits.x_test ^ 1, splits.y_test)
    write_cifar_tarball(tmp_path / "a.tar.gz", splits)
    write_cifar_tarball(tmp_path / "b.tar.gz", changed)

    assert (tmp_path / "a.tar.gz").read_bytes() != (tmp_path / "b.tar.gz").read_bytes()


@pytest.mark.parametrize("labels", [np.array([-1.0, 0.5]), np.array([0.0, 1.0])])
def test_read_mnist_npz_rejects_non_integer_labels(tmp_path: Path, labels: np.ndarray) -> None:
    arrays = _mnist_arrays()
    arrays["y_train"] = labels
    arrays["x_train"] = arrays["x_train"][: len(labels)]
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(FormatError, match="integer labels"):
        read_mnist_npz(path)
