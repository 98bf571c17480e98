"""The machinery that turns plain data from params.yaml into frozen dataclasses.

Every key is required (params.yaml is the single source of every number), unknown keys are
rejected, and each mistake raises a ValueError naming the full key path and what is allowed.

Built configs remember their key path and record every value a stage reads from them
(`keys_read`): that is what a DVC stage must declare under `params`, and a test compares the two.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal

from dlzoo.errors import InvalidInput


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


_READ: set[str] = set()  # key paths read since the last `forget_reads` (see Recorded)


class Recorded:
    """Base of every config dataclass: remembers its key path and records each field read.

    A field holding a nested config records nothing itself (its own fields do); a mapping of
    configs (`experiments`) records its path when its keys are listed, since the names are then
    what the stage read.
    """

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if not name.startswith("_") and name in object.__getattribute__(self, "__dataclass_fields__"):
            path = object.__getattribute__(self, "__dict__").get("_path")
            if path is not None and not isinstance(value, Recorded | RecordedMapping):
                _READ.add(_join(path, name))
        return value


class RecordedMapping(dict):
    """A mapping of configs by name whose listing counts as a read of the key itself."""

    def __init__(self, items: dict, path: str) -> None:
        super().__init__(items)
        self._path = path

    def __iter__(self):
        _READ.add(self._path)
        return super().__iter__()

    def keys(self):
        _READ.add(self._path)
        return super().keys()

    def items(self):
        _READ.add(self._path)
        return super().items()

    def values(self):
        _READ.add(self._path)
        return super().values()


class RecordedValues(RecordedMapping):
    """A mapping of plain values by name (`optimise.int8`): looking one up reads only its key."""

    def __getitem__(self, name):
        _READ.add(_join(self._path, str(name)))
        return super().__getitem__(name)


def keys_read() -> set[str]:
    """The key paths read from built configs since the last `forget_reads()`."""
    return set(_READ)


def forget_reads() -> None:
    _READ.clear()


def replace(config: Any, **changes: Any) -> Any:
    """dataclasses.replace that keeps the key path, so reads of the copy are still recorded."""
    copy = dataclasses.replace(config, **changes)
    path = object.__getattribute__(config, "__dict__").get("_path")
    if path is not None:
        object.__setattr__(copy, "_path", path)
    return copy


def build(cls: type, raw: Any, path: str) -> Any:
    """Builds dataclass `cls` from plain data, checking keys, types and bounds."""
    where = path or "params.yaml"
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"{where}: expected a mapping with keys {', '.join(_field_names(cls))}, got {raw!r}"
        )
    names = _field_names(cls)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        keys = ", ".join(_join(path, str(key)) for key in unknown)
        raise InvalidInput(f"unknown key {keys}; allowed keys here: {', '.join(names)}")
    missing = [name for name in names if name not in raw]
    if missing:
        keys = ", ".join(_join(path, name) for name in missing)
        raise InvalidInput(f"missing key {keys}: params.yaml must set every value")
    hints = typing.get_type_hints(cls)
    # A class may pick some field types from the raw data (an experiment's model block by family).
    hints.update(getattr(cls, "field_types", lambda raw, path: {})(raw, path))
    values = {}
    for spec in dataclasses.fields(cls):
        key = _join(path, spec.name)
        value = _convert(hints[spec.name], raw[spec.name], key)
        _check_bounds(value, spec.metadata.get("bounds", {}), key)
        values[spec.name] = value
    config = cls(**values)
    # Checks that involve several fields live on the class as `problems()`: {field: message}.
    for name, message in getattr(config, "problems", dict)().items():
        raise InvalidInput(f"{_join(path, name)}: {message}")
    if isinstance(config, Recorded):
        object.__setattr__(config, "_path", path)
    return config


def _convert(kind: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return build(kind, value, key)
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise InvalidInput(f"{key}: {value!r} is not allowed; use one of {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        if not isinstance(value, list):
            raise InvalidInput(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(item_kind, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        (_key_kind, value_kind) = typing.get_args(kind)
        if not isinstance(value, dict) or not value:
            raise InvalidInput(f"{key}: expected a non-empty mapping, got {value!r}")
        converted = {name: _convert(value_kind, item, _join(key, str(name))) for name, item in value.items()}
        return (RecordedMapping if dataclasses.is_dataclass(value_kind) else RecordedValues)(converted, key)
    if origin in (typing.Union, types.UnionType):
        # Only optional blocks are unions here: `null` switches the block off.
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
    raise InvalidInput(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")


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
            raise InvalidInput(f"{key}: {value!r} is out of range; it must be {words} {bound}")


def _field_names(cls: type) -> list[str]:
    return [spec.name for spec in dataclasses.fields(cls)]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
