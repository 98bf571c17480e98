"""params.yaml -> frozen dataclasses.

Every key is required (params.yaml is the single source of every number), unknown keys are
rejected, and each mistake raises a ValueError naming the full key path and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def bounded(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A required field with numeric bounds, checked when the config is built."""
    limits = {"gt": gt, "ge": ge, "lt": lt, "le": le}
    return field(metadata={"bounds": {k: v for k, v in limits.items() if v is not None}})


@dataclass(frozen=True)
class MoonsConfig:
    samples: int = bounded(ge=10)
    noise: float = bounded(ge=0)
    test_fraction: float = bounded(gt=0, lt=1)
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class BlobsConfig:
    samples: int = bounded(ge=10)
    centers: int = bounded(ge=2)
    cluster_std: float = bounded(gt=0)
    test_fraction: float = bounded(gt=0, lt=1)
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class SineConfig:
    steps: int = bounded(ge=50)
    period: float = bounded(gt=0)
    noise_std: float = bounded(ge=0)
    look_back: int = bounded(ge=1)
    train_fraction: float = bounded(gt=0, lt=1)
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class ImageSplitConfig:
    val_fraction: float = bounded(ge=0, lt=1)


@dataclass(frozen=True)
class CatsDogsConfig:
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
class ImdbConfig:
    vocab_sizes: tuple[int, ...]
    max_length: int = bounded(ge=1)
    val_fraction: float = bounded(ge=0, lt=1)
    padding: Literal["pre", "post"]
    truncating: Literal["pre", "post"]

    def problems(self) -> dict[str, str]:
        # Ids 0-2 are reserved for padding, start and out-of-vocabulary.
        if min(self.vocab_sizes) < 4 or len(set(self.vocab_sizes)) != len(self.vocab_sizes):
            return {"vocab_sizes": f"{list(self.vocab_sizes)} must be distinct and each at least 4"}
        return {}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the offline stand-ins used by the demo profile."""

    cifar10_train_per_class: int = bounded(ge=1)
    cifar10_test_per_class: int = bounded(ge=1)
    imdb_reviews_per_label: int = bounded(ge=1)


@dataclass(frozen=True)
class DataConfig:
    profile: Literal["demo", "full"]
    mirror: str
    seed: int = bounded(ge=0)
    demo: DemoConfig
    moons: MoonsConfig
    blobs: BlobsConfig
    sine: SineConfig
    mnist: ImageSplitConfig
    cifar10: ImageSplitConfig
    cats_dogs: CatsDogsConfig
    imdb: ImdbConfig


@dataclass(frozen=True)
class Params:
    data: DataConfig


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"params file {path} not found; run from the repository root or pass --params")
    with path.open(encoding="utf-8") as stream:
        raw = yaml.safe_load(stream)
    return build(Params, raw, path="")


def build(cls: type, raw: Any, path: str) -> Any:
    """Builds dataclass `cls` from plain data, checking keys, types and bounds."""
    where = path or "params.yaml"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(_field_names(cls))}, got {raw!r}")
    names = _field_names(cls)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        keys = ", ".join(_join(path, str(key)) for key in unknown)
        raise ValueError(f"unknown key {keys}; allowed keys here: {', '.join(names)}")
    missing = [name for name in names if name not in raw]
    if missing:
        keys = ", ".join(_join(path, name) for name in missing)
        raise ValueError(f"missing key {keys}: params.yaml must set every value")
    hints = typing.get_type_hints(cls)
    values = {}
    for spec in dataclasses.fields(cls):
        key = _join(path, spec.name)
        value = _convert(hints[spec.name], raw[spec.name], key)
        _check_bounds(value, spec.metadata.get("bounds", {}), key)
        values[spec.name] = value
    config = cls(**values)
    # Checks that involve several fields live on the class as `problems()`: {field: message}.
    for name, message in getattr(config, "problems", dict)().items():
        raise ValueError(f"{_join(path, name)}: {message}")
    return config


def _convert(kind: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return build(kind, value, key)
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ValueError(f"{key}: {value!r} is not allowed; use one of {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        if not isinstance(value, list) or not value:
            raise ValueError(f"{key}: expected a non-empty list, got {value!r}")
        return tuple(_convert(item_kind, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(kind):
            return None
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _convert(inner, value, key)
    return _convert_scalar(kind, value, key)


def _convert_scalar(kind: type, value: Any, key: str) -> Any:
    # bool is a subclass of int in Python; `epochs: true` must not pass as 1.
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")


def _check_bounds(value: Any, bounds: dict[str, float], key: str) -> None:
    checks = {
        "gt": (lambda v, b: v > b, "greater than"),
        "ge": (lambda v, b: v >= b, "at least"),
        "lt": (lambda v, b: v < b, "less than"),
        "le": (lambda v, b: v <= b, "at most"),
    }
    for name, bound in bounds.items():
        passes, words = checks[name]
        if not passes(value, bound):
            raise ValueError(f"{key}: {value!r} is out of range; it must be {words} {bound}")


def _field_names(cls: type) -> list[str]:
    return [spec.name for spec in dataclasses.fields(cls)]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
