"""The architecture families, by name: each a module with a `FAMILY` object (see family.py).

Adding a family is one module that defines its config dataclass, its builder and its `FAMILY`,
plus one `register` call (a line in `_BUILT_IN` for the families that ship with dlzoo).
"""

from __future__ import annotations

from dlzoo.config.experiments import FAMILY_CONFIGS
from dlzoo.models import autoencoder, cnn, mlp, rnn, scratch_mlp, transfer, transformer
from dlzoo.models.family import Family

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Makes `family` known to the stages and its config class to params.yaml's `family:` key."""
    if family.name in FAMILIES:
        raise ValueError(f"a family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    FAMILY_CONFIGS[family.name] = family.config
    return family


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


_BUILT_IN = (mlp, cnn, rnn, transfer, autoencoder, transformer, scratch_mlp)
for _module in _BUILT_IN:
    register(_module.FAMILY)
