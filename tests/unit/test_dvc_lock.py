"""The committed dvc.lock describes the committed code and params (DVC's own status is the judge).

`dvc repro` on the demo profile writes dvc.lock; whoever changes a stage's code or params without
running it leaves a lock that no longer says how the committed outputs were made. A fresh clone
has no data, so only what the lock says about code (src/), params and commands is checked here.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def stale_entries(project: Path) -> dict[str, list]:
    """Per stage, what DVC finds changed in its command, code deps or params."""
    from dvc.repo import Repo

    stale = {}
    with Repo(str(project)) as repo, repo.lock:
        for stage in repo.index.stages:
            problems = []
            for entry in stage.status().get(stage.addressing, []):
                if entry in ("changed command", "always changed"):
                    problems.append(entry)
                elif isinstance(entry, dict) and "changed deps" in entry:
                    code_or_params = {
                        path: change
                        for path, change in entry["changed deps"].items()
                        if path.startswith("src/") or path == "params.yaml"
                    }
                    if code_or_params:
                        problems.append(code_or_params)
            if problems:
                stale[stage.addressing] = problems
    return stale


def test_every_stage_of_dvc_yaml_is_in_dvc_lock(project_root: Path):
    from dvc.repo import Repo

    locked = set(yaml.safe_load((project_root / "dvc.lock").read_text())["stages"])
    with Repo(str(project_root)) as repo:
        declared = {stage.addressing for stage in repo.index.stages}
    assert declared - locked == set(), "stages never run into dvc.lock: run `make run` and commit dvc.lock"
    assert locked - declared == set(), "dvc.lock holds stages dvc.yaml no longer has"


def test_dvc_lock_matches_the_committed_code_and_params(project_root: Path):
    stale = stale_entries(project_root)
    assert stale == {}, (
        "dvc.lock is out of date for these stages' code or params; run `make run` (dvc repro on "
        f"the demo profile) and commit dvc.lock: {stale}"
    )
