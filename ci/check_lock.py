"""Fails when `dvc repro` changed what dvc.lock says about code or params (CI's pipeline job).

Run after `make run`: compares the dvc.lock the run wrote with the committed one (git HEAD).
Outs and data deps may differ (TensorFlow's float results can depend on the CPU); the stages,
their commands, their params and the hashes of their source files (src/) must not: if they do,
the commit changed code or params without running the pipeline and committing dvc.lock.

    python ci/check_lock.py [--committed REF]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml


def described(lock: dict) -> dict:
    """Per stage: its command, params and source-file hashes."""
    return {
        name: {
            "cmd": stage.get("cmd"),
            "params": stage.get("params", {}),
            "code": {
                dep["path"]: dep.get("md5") for dep in stage.get("deps", []) if dep["path"].startswith("src/")
            },
        }
        for name, stage in lock.get("stages", {}).items()
    }


def differences(committed: dict, current: dict) -> list[str]:
    found = [f"{name}: not in the committed dvc.lock" for name in sorted(set(current) - set(committed))]
    found += [f"{name}: no longer in dvc.yaml" for name in sorted(set(committed) - set(current))]
    for name in sorted(set(committed) & set(current)):
        for part in ("cmd", "params", "code"):
            if committed[name][part] != current[name][part]:
                found.append(f"{name}: {part} differs")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--committed", default="HEAD", help="git revision of the committed dvc.lock")
    args = parser.parse_args()
    committed = yaml.safe_load(
        subprocess.run(
            ["git", "show", f"{args.committed}:dvc.lock"], capture_output=True, text=True, check=True
        ).stdout
    )
    current = yaml.safe_load(Path("dvc.lock").read_text())
    found = differences(described(committed), described(current))
    if found:
        print(
            "the committed dvc.lock is out of date; run `make run` and commit dvc.lock:", *found, sep="\n  "
        )
        sys.exit(1)
    print(f"dvc.lock: {len(current['stages'])} stages; commands, params and code hashes as committed")


if __name__ == "__main__":
    main()
