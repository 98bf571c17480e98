"""Real team-scale services on 127.0.0.1, started by the tests that need them.

- PostgreSQL: `initdb` into a temporary directory and `pg_ctl start`, as the `postgres` user when
  the tests run as root (PostgreSQL refuses to run as root; CI runs as root).
- S3: moto in server mode (`moto_server`), a real S3 HTTP API.
- MLflow: `mlflow server` with its backend store in PostgreSQL and its artefacts in that S3.

A missing program fails the test with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.network import free_port

# moto accepts any credentials; boto3, DVC (s3fs) and MLflow read these.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
POSTGRES_USER = "postgres"


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:<port>

    def environment(self) -> dict[str, str]:
        """What a client process needs: credentials, and MLflow's endpoint override."""
        return {**S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials()).create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen, log: Path, what: str, timeout: float = 90
):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(requests.RequestException, OSError):
            if ready():
                return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"{what} was not ready after {timeout} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (a server's workers too), SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def background(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    with log.open("w") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def s3_server(directory: Path) -> Iterator[S3]:
    program = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if program is None:
        pytest.fail("moto_server not found: install the dev extras with `make setup` (moto[server])")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = directory / "moto.log"
    with background([program, "-H", "127.0.0.1", "-p", str(port)], log) as process:
        wait_until(lambda: requests.get(endpoint, timeout=2).ok, process, log, "moto_server")
        yield S3(endpoint)


def chromium() -> str:
    """Debian's Chromium (or Google Chrome, on GitHub's Ubuntu runners): Playwright drives it."""
    found = shutil.which("chromium") or shutil.which("google-chrome")
    if found is None:
        pytest.fail("Chromium not found: run `make system-packages` (apt-get install chromium)")
    return found


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL not found: run `make system-packages` (apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run the command as the `postgres` user."""
    return ["runuser", "-u", POSTGRES_USER, "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server(directory: Path, database: str) -> Iterator[str]:
    """A fresh cluster in `directory`; yields `postgresql://postgres@127.0.0.1:<port>/<database>`."""
    binaries = postgres_bin()
    data, sockets = directory / "pgdata", directory / "pgsockets"
    for path in (directory, sockets):
        path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in (directory, sockets):
            shutil.chown(path, POSTGRES_USER, POSTGRES_USER)
        _open_path_to(directory)
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "-E", "UTF8"]
    subprocess.run(_as_postgres([*initdb, "--no-sync"]), check=True, capture_output=True, text=True)
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "postgres.log")]
    subprocess.run(_as_postgres([*start, "-w", "start"]), check=True, capture_output=True, text=True)
    try:
        createdb = [
            str(binaries / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            POSTGRES_USER,
            database,
        ]
        subprocess.run(_as_postgres(createdb), check=True, capture_output=True, text=True)
        yield f"postgresql://{POSTGRES_USER}@127.0.0.1:{port}/{database}"
    finally:
        stop_command = [str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres(stop_command), check=False, capture_output=True)


def _open_path_to(directory: Path) -> None:
    """The `postgres` user must be able to reach a directory under pytest's (root-owned) temp tree."""
    for parent in directory.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)  # traverse only: names in it stay unreadable to others


@contextlib.contextmanager
def mlflow_server(directory: Path, backend: str, artifacts: str, s3: S3) -> Iterator[str]:
    """`mlflow server` on a free port: yields its URI once /health answers."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--backend-store-uri", backend]
    command += ["--artifacts-destination", artifacts]
    # Job execution (huey consumers for GenAI jobs, 7 more processes) plays no part in tracking.
    env = {**os.environ, **s3.environment(), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.pop("MLFLOW_TRACKING_URI", None)
    log = directory / "mlflow-server.log"
    with background(command, log, env) as process:
        wait_until(lambda: requests.get(f"{uri}/health", timeout=2).ok, process, log, "mlflow server")
        yield uri
