"""Offline stand-ins for the demo profile, written in the canonical raw formats.

Each stand-in has the type and shape of the real data set, so the demo profile runs the same
parsers and preprocessing as the full one. They are small, deterministic for a seed, and made
from data that ships with scikit-learn (its real 8x8 digits and two sample photos) or generated
here. They are stand-ins: every output made from them is tagged with the demo profile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, load_sample_images

from dlzoo.config.data import DemoConfig
from dlzoo.data.formats import ImageSplits, write_cifar_tarball, write_imdb_tarball, write_mnist_npz

DESCRIPTIONS = {
    "mnist": "scikit-learn's 1,797 real 8x8 digits, upscaled to 28x28 uint8 (not MNIST)",
    "cifar10": "32x32 crops of scikit-learn's two sample photos; class = photo and region (not CIFAR-10)",
    "imdb": "template-generated English reviews with sentiment words and noise (not IMDB)",
}


def write_mnist_standin(path: Path, seed: int) -> None:
    digits = load_digits()
    # 8x8 pixels in 0-16 -> 24x24 by 3x3 blocks -> centred in 28x28 like MNIST's 20x20 in 28x28.
    images = np.kron(digits.images, np.ones((3, 3))) * (255.0 / 16.0)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[: int(0.8 * len(order))], order[int(0.8 * len(order)) :]
    labels = digits.target.astype(np.uint8)
    write_mnist_npz(path, ImageSplits(images[train], labels[train], images[test], labels[test]))


def write_cifar_standin(path: Path, seed: int, demo: DemoConfig) -> None:
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # two 427x640 RGB photos
    train = _photo_crops(photos, demo.cifar10_train_per_class, rng)
    test = _photo_crops(photos, demo.cifar10_test_per_class, rng)
    write_cifar_tarball(path, ImageSplits(*train, *test))


def _photo_crops(photos: list[np.ndarray], per_class: int, rng: np.random.Generator) -> tuple:
    """Class c is a 96x96 crop from vertical strip c % 5 of photo c // 5, averaged down to 32x32."""
    images, labels = [], []
    for label in np.tile(np.arange(10), per_class).tolist():
        photo = photos[label // 5]
        strip_width = photo.shape[1] // 5
        left = (label % 5) * strip_width + rng.integers(0, strip_width - 96 + 1)
        top = rng.integers(0, photo.shape[0] - 96 + 1)
        crop = photo[top : top + 96, left : left + 96].astype(np.float64)
        small = crop.reshape(32, 3, 32, 3, 3).mean(axis=(1, 3))
        brightness = rng.uniform(-20, 20)
        images.append(np.clip(small + brightness, 0, 255).round().astype(np.uint8))
        labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.uint8)


_POSITIVE = (
    "wonderful",
    "brilliant",
    "moving",
    "superb",
    "delightful",
    "gripping",
    "charming",
    "masterful",
    "beautiful",
    "hilarious",
    "touching",
    "excellent",
)
_NEGATIVE = (
    "boring",
    "dull",
    "awful",
    "clumsy",
    "tedious",
    "predictable",
    "weak",
    "lifeless",
    "annoying",
    "bland",
    "terrible",
    "forgettable",
)
_SUBJECTS = (
    "the acting",
    "the plot",
    "the script",
    "the soundtrack",
    "the ending",
    "the cast",
    "the pacing",
    "the photography",
    "the dialogue",
    "the direction",
)
_OPINIONS = (
    "{subject} was {word}.",
    "I found {subject} {word}.",
    "Honestly, {subject} felt {word}.",
    "Overall {subject} is {word} and {other}.",
)
_FILLER = (
    "I watched it on a rainy Sunday.",
    "My friend recommended this film.",
    "It runs about two hours.",
    "The story follows a family in a small town.",
    "I saw it in the cinema last year.",
    "It is based on a novel.",
)


def write_imdb_standin(path: Path, seed: int, demo: DemoConfig) -> None:
    rng = np.random.default_rng(seed)
    reviews = {
        split: [_review(label, rng) for label in (0, 1) for _ in range(demo.imdb_reviews_per_label)]
        for split in ("train", "test")
    }
    write_imdb_tarball(path, reviews)


def _review(label: int, rng: np.random.Generator) -> tuple[int, int, str]:
    sentences = []
    for _ in range(rng.integers(3, 9)):
        if rng.random() < 0.3:
            sentences.append(str(rng.choice(_FILLER)))
            continue
        # One opinion in five goes against the review's label, so the problem is not trivial.
        positive = bool(label) != (rng.random() < 0.2)
        words = _POSITIVE if positive else _NEGATIVE
        template = str(rng.choice(_OPINIONS))
        sentences.append(
            template.format(
                subject=rng.choice(_SUBJECTS),
                word=rng.choice(words),
                other=rng.choice(words),
            ).capitalize()
        )
    rating = int(rng.integers(7, 11) if label else rng.integers(1, 5))
    return label, rating, " <br /><br />".join(sentences)
