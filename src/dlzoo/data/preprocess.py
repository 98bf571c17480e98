"""The preprocess stage: raw files in canonical formats -> train/val/test splits on disk.

Images stay uint8 at their native size (compact and lossless); the scaling a model needs is
recorded in info.json and applied in the model's input pipeline, so a server can accept raw
images too. Text is tokenised with our own vocabulary, built from the training part only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlzoo.config.data import CatsDogsConfig, DataConfig, ImdbConfig
from dlzoo.data import formats
from dlzoo.data.sources import REMOTE_FILES
from dlzoo.data.splits import INFO_FILE, Split, tail_split, write_splits
from dlzoo.data.text import OOV_ID, PAD_ID, SPECIAL_TOKENS, START_ID, Vocabulary, pad
from dlzoo.errors import InvalidInput
from dlzoo.records import SOURCE_FILE, CorpusInfo, DataInfo, TokensPerReview
from dlzoo.store import atomic_directory, load_json

PREPROCESSED = ("mnist", "cifar10", "cats_dogs", "imdb")
RAW_OF = {"mnist": "mnist", "cifar10": "cifar10", "cats_dogs": "cifar10", "imdb": "imdb"}
VOCABULARY_FILE = "vocabulary.json"
_IMAGE_SCALING = {"scale": 1 / 255, "offset": 0.0, "note": "uint8 pixels; models rescale inputs"}


def preprocess(dataset: str, config: DataConfig, raw_dir: Path, out_dir: Path) -> DataInfo | CorpusInfo:
    if dataset not in PREPROCESSED:
        raise InvalidInput(f"unknown data set to preprocess {dataset!r}; valid: {', '.join(PREPROCESSED)}")
    source = _read_source(raw_dir, RAW_OF[dataset], config)
    raw_file = raw_dir / REMOTE_FILES[RAW_OF[dataset]].name
    base_info = {
        "dataset": dataset,
        "profile": config.profile,
        "stand_in": source["stand_in"],
        "source": source,
    }
    with atomic_directory(out_dir) as staging:
        if dataset == "imdb":
            return _imdb(formats.read_imdb_tarball(raw_file), config, base_info, staging)
        if dataset == "mnist":
            splits, info = _images(
                formats.read_mnist_npz(raw_file), config.mnist.val_fraction, [str(i) for i in range(10)]
            )
        elif dataset == "cifar10":
            splits, info = _images(
                formats.read_cifar_tarball(raw_file), config.cifar10.val_fraction, list(formats.CIFAR_CLASSES)
            )
        else:
            splits, info = _cats_dogs(formats.read_cifar_tarball(raw_file), config.cats_dogs, config.seed)
        return write_splits(staging, splits, {**base_info, **info})


def _read_source(raw_dir: Path, raw_name: str, config: DataConfig) -> dict[str, Any]:
    path = raw_dir / SOURCE_FILE
    if not path.is_file():
        raise InvalidInput(
            f"{raw_dir} has no {SOURCE_FILE}; run the download stage first (dvc repro download@{raw_name})"
        )
    source = load_json(path)
    if source.get("profile") != config.profile:
        raise InvalidInput(
            f"{raw_dir} holds {source.get('profile')!r} data but data.profile is {config.profile!r}; "
            f"rerun the download stage (dvc repro)"
        )
    return source


def _images(raw: formats.ImageSplits, val_fraction: float, classes: list[str]):
    train, val = tail_split(raw.x_train, raw.y_train.astype(np.int64), val_fraction)
    splits = {"train": train, "val": val, "test": (raw.x_test, raw.y_test.astype(np.int64))}
    return splits, {
        "problem": "multiclass",
        "classes": classes,
        "input": _IMAGE_SCALING,
    }


def _cats_dogs(raw: formats.ImageSplits, config: CatsDogsConfig, seed: int):
    """The course's split: first N per class for training, the next M for validation (both from
    the training split), the first K per class of the test split; all test cats and dogs too."""
    rng = np.random.default_rng(seed)
    train_end = config.train_per_class
    val_end = train_end + config.val_per_class
    parts = {"train": [], "val": [], "test": [], "test_full": []}
    for label, cifar_class in enumerate((config.cat_class, config.dog_class)):
        train_pool = raw.x_train[raw.y_train == cifar_class]
        test_pool = raw.x_test[raw.y_test == cifar_class]
        if len(train_pool) < val_end or len(test_pool) < config.test_per_class:
            raise InvalidInput(
                f"data.cats_dogs asks for {val_end} training and {config.test_per_class} test images of "
                f"CIFAR class {cifar_class}, but the raw data have {len(train_pool)} and {len(test_pool)}"
            )
        parts["train"].append((train_pool[:train_end], label))
        parts["val"].append((train_pool[train_end:val_end], label))
        parts["test"].append((test_pool[: config.test_per_class], label))
        parts["test_full"].append((test_pool, label))
    splits = {name: _shuffled(pieces, rng) for name, pieces in parts.items()}
    names = [formats.CIFAR_CLASSES[config.cat_class], formats.CIFAR_CLASSES[config.dog_class]]
    return splits, {"problem": "multiclass", "classes": names, "input": _IMAGE_SCALING}


def _shuffled(pieces: list[tuple[np.ndarray, int]], rng: np.random.Generator) -> Split:
    x = np.concatenate([images for images, _ in pieces])
    y = np.concatenate([np.full(len(images), label, dtype=np.int64) for images, label in pieces])
    order = rng.permutation(len(x))
    return x[order], y[order]


def _imdb(raw: formats.TextSplits, config: DataConfig, base_info: dict, out_dir: Path) -> CorpusInfo:
    settings = config.imdb
    texts, labels = _imdb_splits(raw, config.seed, settings.val_fraction)
    # The vocabulary sees the training part only: validation and test words stay unseen.
    largest = max(settings.vocab_sizes)
    vocabulary = Vocabulary.build(texts["train"], largest - len(SPECIAL_TOKENS))
    encoded = {name: [vocabulary.encode(text, largest) for text in texts[name]] for name in texts}
    variants = {}
    for vocab_size in settings.vocab_sizes:
        splits = {
            name: (_limit(pad(encoded[name], *_padding(settings)), vocab_size), labels[name])
            for name in texts
        }
        variant_info = {**base_info, **_imdb_variant_info(settings, vocab_size)}
        variant_dir = out_dir / f"vocab_{vocab_size}"
        variants[variant_dir.name] = write_splits(variant_dir, splits, variant_info)
        # Each variant holds the words it can encode, so a stage that reads it needs nothing beside it.
        Vocabulary(vocabulary.words[: vocab_size - len(SPECIAL_TOKENS)]).save(variant_dir / VOCABULARY_FILE)
    lengths = np.array([len(ids) for ids in encoded["train"]])
    summary = CorpusInfo(
        **base_info,
        problem="binary",
        vocabulary_words=len(vocabulary),
        variants=sorted(variants),
        train_tokens_per_review=TokensPerReview(
            mean=float(lengths.mean()),
            median=float(np.median(lengths)),
            truncated_fraction=float((lengths > settings.max_length).mean()),
        ),
    )
    summary.write(out_dir / INFO_FILE)
    return summary


def _imdb_splits(raw: formats.TextSplits, seed: int, val_fraction: float) -> tuple[dict, dict]:
    """Texts and labels per split: validation is the tail of the shuffled training reviews."""
    order = np.random.default_rng(seed).permutation(len(raw.train_texts))
    train_texts = [raw.train_texts[i] for i in order]
    (train_ids, train_y), (val_ids, val_y) = tail_split(
        np.arange(len(order)), raw.train_labels[order], val_fraction
    )
    texts = {
        "train": [train_texts[i] for i in train_ids],
        "val": [train_texts[i] for i in val_ids],
        "test": raw.test_texts,
    }
    return texts, {"train": train_y, "val": val_y, "test": raw.test_labels}


def _padding(settings: ImdbConfig) -> tuple[int, str, str]:
    return settings.max_length, settings.padding, settings.truncating


def _imdb_variant_info(settings: ImdbConfig, vocab_size: int) -> dict:
    return {
        "dataset": f"imdb/vocab_{vocab_size}",
        "problem": "binary",
        "classes": ["negative", "positive"],
        "input": {
            "vocabulary": VOCABULARY_FILE,
            "vocab_size": vocab_size,
            "max_length": settings.max_length,
            "padding": settings.padding,
            "truncating": settings.truncating,
            "pad_id": PAD_ID,
            "start_id": START_ID,
            "oov_id": OOV_ID,
        },
    }


def _limit(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Maps ids at or past `vocab_size` to the OOV id, giving the smaller variant."""
    return np.where(ids < vocab_size, ids, OOV_ID).astype(np.int32)
