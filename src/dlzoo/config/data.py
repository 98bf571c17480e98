"""Data settings: the profile, the mirror, and one block per data set."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Literal

from dlzoo.config.base import Recorded, bounded


@dataclass(frozen=True)
class MoonsConfig(Recorded):
    samples: int = bounded(ge=10)
    noise: float = bounded(ge=0)
    test_fraction: float = bounded(gt=0, lt=1)
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class BlobsConfig(Recorded):
    samples: int = bounded(ge=10)
    centers: int = bounded(ge=2)
    cluster_std: float = bounded(gt=0)
    test_fraction: float = bounded(gt=0, lt=1)
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class SineConfig(Recorded):
    steps: int = bounded(ge=50)
    period: float = bounded(gt=0)
    noise_std: float = bounded(ge=0)
    look_back: int = bounded(ge=1)
    train_fraction: float = bounded(gt=0, lt=1)
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class ImageSplitConfig(Recorded):
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class CatsDogsConfig(Recorded):
    cat_class: int = bounded(ge=0, le=9)
    dog_class: int = bounded(ge=0, le=9)
    train_per_class: int = bounded(ge=1)
    val_per_class: int = bounded(ge=1)
    test_per_class: int = bounded(ge=1)

    def problems(self) -> dict[str, str]:
        if self.cat_class == self.dog_class:
            return {"dog_class": f"{self.dog_class} equals cat_class; pick two different classes"}
        return {}


@dataclass(frozen=True)
class ImdbConfig(Recorded):
    vocab_sizes: tuple[int, ...]
    max_length: int = bounded(ge=1)
    val_fraction: float = bounded(ge=0, lt=1)
    padding: Literal["pre", "post"]
    truncating: Literal["pre", "post"]

    def problems(self) -> dict[str, str]:
        # Ids 0-2 are reserved for padding, start and out-of-vocabulary.
        if (
            not self.vocab_sizes
            or min(self.vocab_sizes) < 4
            or len(set(self.vocab_sizes)) != len(self.vocab_sizes)
        ):
            return {"vocab_sizes": f"{list(self.vocab_sizes)} must be distinct and each at least 4"}
        return {}


@dataclass(frozen=True)
class DemoConfig(Recorded):
    """Sizes of the offline stand-ins used by the demo profile."""

    cifar10_train_per_class: int = bounded(ge=1)
    cifar10_test_per_class: int = bounded(ge=1)
    imdb_reviews_per_label: int = bounded(ge=1)


@dataclass(frozen=True)
class MirrorAcceptedConfig(Recorded):
    """Per downloaded file: the mirror SHA-256 accepted where a file is not the upstream one ("": none).

    One key per download stage item, so that DVC reruns only the download whose hash changed.
    """

    mnist: str
    cifar10: str
    imdb: str
    mobilenet_v2: str

    def problems(self) -> dict[str, str]:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value and not re.fullmatch(r"[0-9a-f]{64}", value):
                return {
                    spec.name: f'{value!r} is not a SHA-256: use 64 lower-case hex digits, or "" for none'
                }
        return {}


@dataclass(frozen=True)
class DataConfig(Recorded):
    profile: Literal["demo", "full"]
    mirror: str
    mirror_accepted_sha256: MirrorAcceptedConfig
    seed: int = bounded(ge=0)
    demo: DemoConfig
    moons: MoonsConfig
    blobs: BlobsConfig
    sine: SineConfig
    mnist: ImageSplitConfig
    cifar10: ImageSplitConfig
    cats_dogs: CatsDogsConfig
    imdb: ImdbConfig
