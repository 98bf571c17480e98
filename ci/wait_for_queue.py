"""Waits until DVC's experiment queue is empty; exits 1 if an experiment of it failed.

`dvc queue start` returns once its workers are up; `make sweep` waits here for their results.
Reads `dvc queue status` (Task, Name, Created, Status) every few seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

PENDING = {"Queued", "Running"}


def statuses(cwd: str) -> dict[str, str]:
    """{experiment name: status} of the queue's tasks."""
    shown = subprocess.run(["dvc", "queue", "status"], cwd=cwd, capture_output=True, text=True, check=True)
    found = {}
    for line in shown.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[-1] in PENDING | {"Success", "Failed"}:
            found[fields[1]] = fields[-1]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cwd", default=".", help="the DVC project")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait at most")
    args = parser.parse_args(argv)
    started = time.monotonic()
    while (found := statuses(args.cwd)) and PENDING & set(found.values()):
        if time.monotonic() - started > args.timeout:
            print(f"the queue is still busy after {args.timeout:.0f} s: {found}", file=sys.stderr)
            return 1
        time.sleep(3)
    for name, status in sorted(found.items()):
        print(f"{name}: {status}")
    failed = [name for name, status in found.items() if status == "Failed"]
    if failed:
        print(f"failed: {', '.join(failed)}; see `dvc queue logs <name>`", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
