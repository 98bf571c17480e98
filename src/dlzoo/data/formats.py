"""Readers (and, for the demo stand-ins, writers) of the canonical raw formats.

- MNIST: Keras' `mnist.npz` (x_train, y_train, x_test, y_test), loaded without pickle.
- CIFAR-10: the binary version; each record is 1 label byte + 3072 pixel bytes (R, G, B planes).
- IMDB: Stanford's `aclImdb_v1.tar.gz`, `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlzoo.store import save_npz

CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch.bin"
CIFAR_RECORD_BYTES = 1 + 32 * 32 * 3
IMDB_LABELS = ("neg", "pos")
_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(neg|pos)/(\d+)_(\d+)\.txt$")


class FormatError(ValueError):
    """A raw file is not in the format it claims to be."""


@dataclass(frozen=True)
class ImageSplits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class TextSplits:
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray


def read_mnist_npz(path: Path) -> ImageSplits:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise FormatError(f"{path} is not a Keras mnist.npz: {error}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise FormatError(f"{path} is not a Keras mnist.npz: it holds one array, not an archive")
    with loaded as archive:
        try:
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
        except (KeyError, ValueError, OSError, EOFError) as error:
            raise FormatError(f"{path} is not a Keras mnist.npz: {error}") from error
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise FormatError(
                f"{path}: x_{split} must be uint8 (N, 28, 28), got {images.dtype} {images.shape}"
            )
        valid_labels = labels.dtype.kind in "ui" and (not labels.size or labels.max() <= 9)
        if labels.shape != (len(images),) or not valid_labels:
            raise FormatError(f"{path}: y_{split} must hold {len(images)} integer labels in 0-9")
    return ImageSplits(**arrays)


def write_mnist_npz(path: Path, splits: ImageSplits) -> None:
    save_npz(
        path,
        x_train=splits.x_train,
        y_train=splits.y_train,
        x_test=splits.x_test,
        y_test=splits.y_test,
    )


def read_cifar_tarball(path: Path) -> ImageSplits:
    try:
        with tarfile.open(path, "r:gz") as archive:
            train = [_read_cifar_batch(archive, name) for name in CIFAR_TRAIN_BATCHES]
            test = _read_cifar_batch(archive, CIFAR_TEST_BATCH)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise FormatError(f"{path} is not a readable CIFAR-10 binary tarball: {error}") from error
    return ImageSplits(
        x_train=np.concatenate([images for images, _ in train]),
        y_train=np.concatenate([labels for _, labels in train]),
        x_test=test[0],
        y_test=test[1],
    )


def _read_cifar_batch(archive: tarfile.TarFile, name: str) -> tuple[np.ndarray, np.ndarray]:
    member = f"{CIFAR_DIR}/{name}"
    try:
        stream = archive.extractfile(member)
    except KeyError as error:
        raise FormatError(f"CIFAR-10 tarball has no member {member}") from error
    if stream is None:
        raise FormatError(f"CIFAR-10 member {member} is not a regular file")
    data = np.frombuffer(stream.read(), dtype=np.uint8)
    if data.size == 0 or data.size % CIFAR_RECORD_BYTES:
        raise FormatError(
            f"{member}: {data.size} bytes is not a whole number of {CIFAR_RECORD_BYTES}-byte records"
        )
    records = data.reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise FormatError(f"{member}: label {labels.max()} is outside 0-9")
    # Planes are stored R, G, B, each 32x32 row-major; Keras and ONNX want height, width, channel.
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def write_cifar_tarball(path: Path, splits: ImageSplits) -> None:
    train_parts = np.array_split(np.arange(len(splits.x_train)), len(CIFAR_TRAIN_BATCHES))
    members = {
        name: _cifar_records(splits.x_train[part], splits.y_train[part])
        for name, part in zip(CIFAR_TRAIN_BATCHES, train_parts, strict=True)
    }
    members[CIFAR_TEST_BATCH] = _cifar_records(splits.x_test, splits.y_test)
    members["batches.meta.txt"] = ("\n".join(CIFAR_CLASSES) + "\n").encode()
    with _deterministic_tar_gz(path) as archive:
        for name, payload in members.items():
            _add_bytes(archive, f"{CIFAR_DIR}/{name}", payload)


def _cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.reshape(-1, 1).astype(np.uint8), planes], axis=1).tobytes()


def read_imdb_tarball(path: Path) -> TextSplits:
    """Reads the labelled reviews in a stable order: split, label (neg, pos), review id."""
    found: dict[str, list[tuple[int, int, str]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                match = _IMDB_MEMBER.match(member.name)
                if not match or not member.isfile():
                    continue
                split, label, review_id, _rating = match.groups()
                text = archive.extractfile(member).read().decode("utf-8")
                found[split].append((IMDB_LABELS.index(label), int(review_id), text))
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as error:
        raise FormatError(f"{path} is not a readable aclImdb tarball: {error}") from error
    for split, reviews in found.items():
        if not reviews:
            raise FormatError(f"{path} holds no aclImdb/{split}/(neg|pos)/<id>_<rating>.txt reviews")
        reviews.sort()
    return TextSplits(
        train_texts=[text for _, _, text in found["train"]],
        train_labels=np.array([label for label, _, _ in found["train"]], dtype=np.int64),
        test_texts=[text for _, _, text in found["test"]],
        test_labels=np.array([label for label, _, _ in found["test"]], dtype=np.int64),
    )


def write_imdb_tarball(path: Path, reviews: dict[str, list[tuple[int, int, str]]]) -> None:
    """`reviews` maps split to (label, rating, text) tuples; ids are assigned per label."""
    with _deterministic_tar_gz(path) as archive:
        for split, items in reviews.items():
            counters = {0: 0, 1: 0}
            for label, rating, text in items:
                name = f"aclImdb/{split}/{IMDB_LABELS[label]}/{counters[label]}_{rating}.txt"
                counters[label] += 1
                _add_bytes(archive, name, text.encode("utf-8"))
        _add_bytes(archive, "aclImdb/README", b"Offline stand-in in the aclImdb layout.\n")


@contextlib.contextmanager
def _deterministic_tar_gz(path: Path) -> Iterator[tarfile.TarFile]:
    # tarfile's own "w:gz" stamps the current time into the gzip header; the same content
    # must give the same bytes so that DVC sees an unchanged output as unchanged.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        yield archive


def _add_bytes(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0  # fixed so that the same content gives the same bytes
    archive.addfile(info, io.BytesIO(payload))
