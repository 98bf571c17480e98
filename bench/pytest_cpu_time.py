"""CPU time of every test (its own process and the child processes it waited for), per file.

The suite is CPU-bound on a 2-core machine, so its wall clock drops only with less CPU work;
`--durations` shows wall time, which depends on what the other xdist worker runs meanwhile.
As a pytest plugin it appends one JSON line per test to DLZOO_CPU_TIME_DIR; run as a script
it prints the totals per file, largest first.

    PYTHONPATH=bench DLZOO_CPU_TIME_DIR=/tmp/cpu .venv/bin/pytest -p pytest_cpu_time tests/unit
    python bench/pytest_cpu_time.py /tmp/cpu [--tests 20]

Children count once reaped, so a module fixture's servers count in the test that tears it
down, and processes nobody waits for (DVC's queue workers) do not count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import defaultdict
from pathlib import Path

import pytest

OUT_ENV = "DLZOO_CPU_TIME_DIR"


def _cpu_seconds() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    before, started = _cpu_seconds(), time.perf_counter()
    yield
    after = _cpu_seconds()
    out = Path(os.environ.get(OUT_ENV, "cpu-time"))
    out.mkdir(parents=True, exist_ok=True)
    row = {
        "test": item.nodeid,
        "own": after[0] - before[0],
        "children": after[1] - before[1],
        "wall": time.perf_counter() - started,
    }
    with (out / f"{os.getpid()}.jsonl").open("a") as file:
        file.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tests", type=int, default=0, help="also list the N most expensive tests")
    args = parser.parse_args()
    rows = [json.loads(line) for path in args.directory.glob("*.jsonl") for line in path.open()]
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        totals = by_file[row["test"].split("::")[0]]
        totals[0] += row["own"] + row["children"]
        totals[1] += row["wall"]
    print(f"{'CPU s':>8} {'wall s':>8}  file ({len(rows)} tests)")
    for name, (cpu, wall) in sorted(by_file.items(), key=lambda item: -item[1][0]):
        print(f"{cpu:8.0f} {wall:8.0f}  {name}")
    print(f"{sum(cpu for cpu, _ in by_file.values()):8.0f} {'':8}  total")
    for row in sorted(rows, key=lambda row: -(row["own"] + row["children"]))[: args.tests]:
        print(f"{row['own'] + row['children']:8.0f} {row['wall']:8.0f}  {row['test']}")


if __name__ == "__main__":
    main()
