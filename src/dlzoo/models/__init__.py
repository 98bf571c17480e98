"""The architecture families, by name: each a module with a `FAMILY` object (see family.py).

Adding a family is one module that defines its config dataclass, its builder and its `FAMILY`,
plus one `register` call (a line in `_BUILT_IN` for the families that ship with dlzoo). A
built-in family's module is imported only when a stage asks for that family, so a stage loads
(and DVC tracks) the code of its own family only, and the NumPy MLP never loads TensorFlow.
"""

from __future__ import annotations

import importlib

from dlzoo.config.experiments import FAMILY_CONFIGS
from dlzoo.errors import InvalidInput
from dlzoo.models.family import Family

FAMILIES: dict[str, Family] = {}
_BUILT_IN = {  # family name -> module holding its FAMILY (config classes: dlzoo.config.experiments)
    "mlp": "dlzoo.models.mlp",
    "cnn": "dlzoo.models.cnn",
    "rnn": "dlzoo.models.rnn",
    "transfer": "dlzoo.models.transfer",
    "autoencoder": "dlzoo.models.autoencoder",
    "transformer": "dlzoo.models.transformer",
    "scratch_mlp": "dlzoo.models.scratch_mlp",
}


def register(family: Family) -> Family:
    """Makes `family` known to the stages and its config class to params.yaml's `family:` key."""
    if family.name in FAMILIES or family.name in _BUILT_IN:
        raise InvalidInput(f"a family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    FAMILY_CONFIGS[family.name] = family.config
    return family


def family(name: str) -> Family:
    if name not in FAMILIES and name in _BUILT_IN:
        module = importlib.import_module(_BUILT_IN[name])
        FAMILIES.setdefault(name, module.FAMILY)
    if name not in FAMILIES:
        valid = ", ".join(sorted({*_BUILT_IN, *FAMILIES}))
        raise InvalidInput(f"unknown model family {name!r}; valid: {valid}")
    return FAMILIES[name]


def names() -> list[str]:
    return sorted({*_BUILT_IN, *FAMILIES})
