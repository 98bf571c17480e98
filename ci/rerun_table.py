"""What reruns after each kind of change, as DVC's own `dvc status` says (a markdown table).

Run it in a workspace where `dvc repro` has finished (`make run`): for each change it edits
params.yaml (or a source file, or a downloaded file), reads `dvc status --json`, and restores
the file. DVC lists the stages whose own deps changed; the stages after them rerun only where
those produce different bytes (every out is byte-reproducible, so an unchanged model stops there).

    python ci/rerun_table.py            # in the project root, after make run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Change:
    label: str
    apply: Callable[[Path], None] | None  # None: not something DVC tracks (nothing to edit)


def set_param(*keys: str, value: object) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    return apply


def append_line(relative: str, line: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / relative
        text = path.read_text()
        path.unlink()  # a new file: never write through a link into DVC's cache
        path.write_text(text + line)

    return apply


def changes(experiment: str, family_file: str, data_set: str) -> list[Change]:
    return [
        Change(
            f"`experiments.{experiment}.model` (units)",
            set_param("experiments", experiment, "model", "hidden_units", value=[16, 8]),
        ),
        Change(
            f"`experiments.{experiment}.training.epochs`",
            set_param("experiments", experiment, "training", "epochs", value=7),
        ),
        Change("Keras verbosity (`DLZOO_VERBOSE` / `dlzoo train --verbose`: not a param)", None),
        Change("`train.seed`", set_param("train", "seed", value=7)),
        Change("`export.opset`", set_param("export", "opset", value=16)),
        Change("`serving.max_batch_size`", set_param("serving", "max_batch_size", value=32)),
        Change("`serving.max_queue_delay_ms`", set_param("serving", "max_queue_delay_ms", value=5)),
        Change("`data.profile`", set_param("data", "profile", value="full")),
        Change(f"`data.{data_set}` (one data set)", set_param("data", data_set, "noise", value=0.2)),
        Change(f"`{family_file}` (one family's code)", append_line(family_file, "\n# probe\n")),
        Change(
            "the MobileNetV2 weights (data/raw/mobilenet_v2)",
            append_line("data/raw/mobilenet_v2/source.json", "\n"),
        ),
    ]


def stages_listed(root: Path) -> list[str]:
    output = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(json.loads(output or "{}"))


def summarise(stages: list[str]) -> str:
    """`train@a, train@b, ...` shortened to `train@* (17)` where a whole foreach is listed."""
    if not stages:
        return "nothing"
    groups: dict[str, list[str]] = {}
    for stage in stages:
        groups.setdefault(stage.split("@")[0], []).append(stage)
    return ", ".join(
        f"{group}@* ({len(members)})" if len(members) > 3 else ", ".join(members)
        for group, members in groups.items()
    )


def table(root: Path, experiment: str, family_file: str, data_set: str) -> list[tuple[str, list[str]]]:
    before = stages_listed(root)
    if before:
        raise SystemExit(f"dvc status is not clean ({', '.join(before)}): run `dvc repro` first")
    rows = []
    for change in changes(experiment, family_file, data_set):
        if change.apply is None:
            rows.append((change.label, []))
            continue
        touched = [root / "params.yaml", root / family_file, root / "data/raw/mobilenet_v2/source.json"]
        saved = {path: path.read_bytes() for path in touched if path.is_file()}
        try:
            change.apply(root)
            rows.append((change.label, stages_listed(root)))
        finally:
            for path, payload in saved.items():
                path.unlink()
                path.write_bytes(payload)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path.cwd())
    parser.add_argument("--experiment", default="blobs_mlp", help="an experiment of the mlp family")
    parser.add_argument("--family-file", default="src/dlzoo/models/cnn/__init__.py")
    parser.add_argument("--data-set", default="moons", help="a generated data set with a `noise` setting")
    args = parser.parse_args()
    print("| change | stages `dvc status` lists |")
    print("|---|---|")
    for label, stages in table(args.project, args.experiment, args.family_file, args.data_set):
        print(f"| {label} | {summarise(stages)} |")


if __name__ == "__main__":
    main()
