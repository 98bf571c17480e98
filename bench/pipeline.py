"""Wall time of the pipeline from an empty workspace, per stage and in total.

Copies the project's pipeline (dvc.yaml, params.yaml, src/) into a fresh git + DVC workspace
(its stages run that copy of src/, so editing the project meanwhile changes nothing), runs
`dvc repro` there with DLZOO_TRACE_DIR set (each stage records what it imported), and
prints each stage's wall time (from DVC's "Running stage" lines: the stage's process and DVC's
own bookkeeping), the total, how many stage processes loaded TensorFlow, and the time of a
no-op `dvc repro` after it. With --force-twice it then runs `dvc repro --force` and reports
every out whose hash in dvc.lock changed (byte reproducibility).

    python bench/pipeline.py [--workspace DIR] [--keep] [--force-twice]
    python bench/pipeline.py --profile full --mirror ../shared/datasets \
        --accept-mirror-sha256 cifar10=<sha256> ...                       # the real data

A mirror file that is not the upstream one is refused unless --accept-mirror-sha256 names its
hash (written to the workspace's data.mirror_accepted_sha256; the refusal prints the pair).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")


def environment(workspace: Path, traces: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(DLZOO_TRACE_DIR=str(traces), DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env["PYTHONPATH"] = str(workspace / "src")  # ahead of the editable install's path
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The mirror comes from --mirror (the workspace's data.mirror); the retired DLZOO_DATA_MIRROR
    # of the caller's shell would only make a full run refuse to start.
    for name in ("DLZOO_DATA_MIRROR", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def accepted_pair(text: str) -> tuple[str, str]:
    """'cifar10=<sha256>' -> ('cifar10', '<sha256>'); dlzoo's config checks both when it loads."""
    name, equals, digest = text.partition("=")
    if not (name and equals and digest):
        raise argparse.ArgumentTypeError(f"expected <data set>=<sha256>, got {text!r}")
    return name, digest


def prepare(workspace: Path, profile: str, mirror: Path | None, accepted: dict[str, str]) -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy(PROJECT / name, workspace / name)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    if (profile, mirror, accepted) != (params["data"]["profile"], None, {}):
        params["data"]["profile"] = profile
        if mirror is not None:
            params["data"]["mirror"] = str(mirror.resolve())
        params["data"]["mirror_accepted_sha256"].update(accepted)
        (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(PROJECT / "src", workspace / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=workspace, check=True, env=environment(workspace, workspace / "traces"))


def timed_repro(workspace: Path, traces: Path, *extra: str) -> tuple[float, list[tuple[str, float]]]:
    """Runs dvc repro, timing each stage from one "Running stage" line to the next."""
    started = time.perf_counter()
    process = subprocess.Popen(
        ["dvc", "repro", *extra],
        cwd=workspace,
        env=environment(workspace, traces),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stages, current, since = [], None, started
    for line in process.stdout:
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if current:
                stages.append((current, now - since))
            current, since = line.split("'")[1], now
    if process.wait() != 0:
        raise SystemExit(f"dvc repro {' '.join(extra)} failed in {workspace}")
    total = time.perf_counter() - started
    if current:
        stages.append((current, started + total - since))
    return total, stages


def tensorflow_processes(traces: Path) -> tuple[int, int]:
    found = [json.loads(path.read_text()) for path in traces.glob("*.json")]
    return sum(trace.get("tensorflow", False) for trace in found), len(found)


def out_hashes(workspace: Path) -> dict[str, str]:
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out.get("md5", "")
        for stage, entry in lock["stages"].items()
        for out in entry.get("outs", [])
    }


def report(total: float, stages: list[tuple[str, float]], traces: Path) -> None:
    groups: dict[str, float] = {}
    for name, seconds in stages:
        print(f"{seconds:8.1f} s  {name}")
        groups[name.split("@")[0]] = groups.get(name.split("@")[0], 0.0) + seconds
    print("per step: " + ", ".join(f"{group} {seconds:.0f} s" for group, seconds in groups.items()))
    loaded, processes = tensorflow_processes(traces)
    print(f"total: {total:.1f} s for {len(stages)} stages; TensorFlow in {loaded} of {processes} processes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    parser.add_argument("--force-twice", action="store_true", help="then `dvc repro --force`, compare outs")
    parser.add_argument("--profile", choices=("demo", "full"), default="demo", help="data.profile")
    parser.add_argument("--mirror", type=Path, help="data.mirror: a local copy of the real data")
    parser.add_argument(
        "--accept-mirror-sha256",
        type=accepted_pair,
        action="append",
        default=[],
        metavar="SET=SHA256",
        help="data.mirror_accepted_sha256.SET: use a mirror file that is not the upstream one (repeatable)",
    )
    args = parser.parse_args()
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="dlzoo-bench-"))
    prepare(workspace, args.profile, args.mirror, dict(args.accept_mirror_sha256))
    total, stages = timed_repro(workspace, workspace / "traces")
    report(total, stages, workspace / "traces")
    noop, _ = timed_repro(workspace, workspace / "traces-noop")
    print(f"no-op dvc repro: {noop:.2f} s")
    if args.force_twice:
        before = out_hashes(workspace)
        forced, _ = timed_repro(workspace, workspace / "traces-forced", "--force")
        after = out_hashes(workspace)
        changed = sorted(key for key in before if after.get(key) != before[key])
        print(f"dvc repro --force: {forced:.1f} s; {len(before)} outs, {len(changed)} with a new hash")
        for key in changed:
            print(f"  changed: {key}")
    if args.keep or args.workspace:
        print(f"workspace: {workspace}")
    else:
        shutil.rmtree(workspace)


if __name__ == "__main__":
    main()
