"""params.yaml -> frozen dataclasses (see base.py for the rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from dlzoo.config.base import Recorded, build, forget_reads
from dlzoo.config.data import DataConfig
from dlzoo.config.experiments import (
    ExperimentConfig,
    ExportSettings,
    OptimiseSettings,
    ServingSettings,
    TrainSettings,
)
from dlzoo.errors import InvalidInput

DEFAULT_PARAMS = Path("params.yaml")


@dataclass(frozen=True)
class Params(Recorded):
    data: DataConfig
    train: TrainSettings
    export: ExportSettings
    optimise: OptimiseSettings
    serving: ServingSettings
    experiments: dict[str, ExperimentConfig]

    def problems(self) -> dict[str, str]:
        for name in self.experiments:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                return {f"experiments.{name}": "experiment names are lower-case letters, digits and _"}
        for name, experiment in self.experiments.items():
            if experiment.family not in self.optimise.int8:
                family = experiment.family
                rule = f"no rule for family {family!r} ({name}); add {family}: dynamic, static or none"
                return {"optimise.int8": rule}
        return {}

    def experiment(self, name: str) -> ExperimentConfig:
        if name not in self.experiments:
            raise InvalidInput(f"unknown experiment {name!r}; valid: {', '.join(self.experiments)}")
        return self.experiments[name]


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"params file {path} not found; run from the repository root or pass --params")
    with path.open(encoding="utf-8") as stream:
        raw = yaml.safe_load(stream)
    params = build(Params, raw, path="")
    forget_reads()  # building read every key; from here on, reads are what the stage uses
    return params
