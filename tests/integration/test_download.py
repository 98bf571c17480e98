"""The download code against a real HTTP server on 127.0.0.1: real requests + pooch, no mocks.

Every test that touches the network talks only to a ThreadingHTTPServer that the test starts itself
(port 0, loopback); a "refused" port is a socket bound but never listening.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dlzoo.config import load_params
from dlzoo.config.data import DataConfig
from dlzoo.data.download import download
from dlzoo.data.sources import (
    ACCEPTED_MIRROR_SHA256,
    CACHE_ENV,
    CHECKSUMS_FILE,
    HDF5_SIGNATURE,
    MIRROR_ENV,
    REMOTE_FILES,
    UPSTREAM_SHA256,
    UPSTREAM_SIZE_AND_SIGNATURE,
    Accepted,
    DownloadError,
    FetchedFile,
    RemoteFile,
    copy_verified,
    fetch,
    resolve_mirror,
)
from dlzoo.errors import DlzooError
from dlzoo.records import SOURCE_FILE

pytestmark = pytest.mark.integration

PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"
NAME = "data.bin"
PAYLOAD = bytes(range(256)) * 64 + b"dlzoo payload end"
OTHER = b"something else entirely" * 100


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote_for(url: str, body: bytes = PAYLOAD, name: str = NAME, **changes) -> RemoteFile:
    remote = RemoteFile(name=name, url=url, sha256=sha256(body), size=len(body), checksum_source="test")
    return dataclasses.replace(remote, **changes)


def entries(directory: Path) -> list[str]:
    """Every name in `directory` (hidden temporary files included); [] when it does not exist."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def assert_fix_hint(message: str) -> None:
    assert "dvc exp run -S data.mirror=DIR" in message
    assert MIRROR_ENV not in message, "the retired variable is no way to set the mirror"
    assert CHECKSUMS_FILE in message
    assert "data.profile: demo" in message


# ---------------------------------------------------------------------------------------------
# The loopback server
# ---------------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_length: int | None = None  # a header value that differs from len(body): a truncated transfer


class LoopbackServer:
    """Serves `routes` (name -> Route) over HTTP on 127.0.0.1 and records every request path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-http", daemon=True
        )
        self._thread.start()

    def url(self, name: str = NAME) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def serve(self, name: str, body: bytes, status: int = 200, content_length: int | None = None) -> str:
        self.routes[name] = Route(body, status, content_length)
        return self.url(name)

    def hits(self, name: str = NAME) -> int:
        with self._lock:
            return self.requests.count(f"/{name}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                route = server.routes.get(self.path.lstrip("/"))
                if route is None:
                    route = Route(b"no such file\n", status=404)
                self.send_response(route.status)
                self.send_header("Content-Type", "application/octet-stream")
                length = len(route.body) if route.content_length is None else route.content_length
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(route.body)
                self.wfile.flush()
                # HTTP/1.0 handler: the connection is closed once this returns, so a declared
                # length larger than the body is a transfer cut short.
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    httpd = LoopbackServer()
    try:
        yield httpd
    finally:
        httpd.close()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; make sure 127.0.0.1 is always reached directly."""
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv(MIRROR_ENV, raising=False)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that is bound (so nobody else takes it) but never listens: connect is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# Network: pinned files
# ---------------------------------------------------------------------------------------------


def test_good_file_is_fetched_verified_and_then_served_from_the_cache(server, cache_dir):
    remote = remote_for(server.serve(NAME, PAYLOAD))

    fetched = fetch(remote, cache_dir=cache_dir)

    assert isinstance(fetched, FetchedFile)
    assert fetched.path == (cache_dir / NAME).resolve()
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.sha256 == sha256(PAYLOAD) == remote.sha256
    assert fetched.origin == remote.url
    assert fetched.verified_by == UPSTREAM_SHA256
    assert server.hits() == 1
    assert entries(cache_dir) == [NAME]

    again = fetch(remote, cache_dir=cache_dir)

    assert again == fetched
    assert again.path.read_bytes() == PAYLOAD
    assert server.hits() == 1, "the second fetch must come from the cache, not the server"
    assert server.requests == [f"/{NAME}"]


def test_wrong_checksum_is_rejected_and_nothing_is_kept(server, cache_dir):
    remote = remote_for(server.serve(NAME, OTHER), body=PAYLOAD)

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir)

    message = str(caught.value)
    assert remote.url in message
    assert sha256(PAYLOAD) in message, "the message must name the expected SHA-256"
    assert sha256(OTHER) in message, "the message must name the actual SHA-256"
    assert server.hits() == 1
    assert not (cache_dir / NAME).exists()
    assert entries(cache_dir) == [], "no temporary leftovers in the cache"


def test_truncated_transfer_is_a_download_error_and_nothing_is_kept(server, cache_dir):
    cut = PAYLOAD[:1000]
    url = server.serve(NAME, cut, content_length=len(PAYLOAD))
    remote = remote_for(url)

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir)

    message = str(caught.value)
    assert remote.url in message
    # Detected by the transport (Content-Length not met), not only by the hash afterwards.
    assert message.startswith(f"could not download {remote.url}")
    assert_fix_hint(message)
    assert server.hits() == 1
    assert entries(cache_dir) == []


@pytest.mark.parametrize(
    ("status", "served"),
    [(500, True), (404, False)],
    ids=["500-server-error", "404-not-found"],
)
def test_http_error_status_is_a_download_error_with_the_fix(server, cache_dir, status, served):
    if served:
        server.serve(NAME, b"internal error\n", status=status)
    remote = remote_for(server.url(NAME))

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir)

    message = str(caught.value)
    assert f"could not download {remote.url}" in message
    assert str(status) in message
    assert_fix_hint(message)
    assert server.hits() == 1
    assert entries(cache_dir) == []


def test_connection_refused_tells_the_user_how_to_work_offline(refused_port, cache_dir):
    remote = remote_for(f"http://127.0.0.1:{refused_port}/{NAME}")

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir)

    message = str(caught.value)
    assert f"could not download {remote.url}" in message
    assert_fix_hint(message)
    assert "data.mirror" in message
    assert NAME in message
    assert entries(cache_dir) == []


def test_corrupt_cached_file_is_detected_and_fetched_again(server, cache_dir):
    remote = remote_for(server.serve(NAME, PAYLOAD))
    cache_dir.mkdir()
    (cache_dir / NAME).write_bytes(OTHER)

    fetched = fetch(remote, cache_dir=cache_dir)

    assert server.hits() == 1, "the corrupt copy must be replaced by a fresh download"
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.sha256 == sha256(PAYLOAD)
    assert entries(cache_dir) == [NAME]


def test_good_cached_file_is_used_without_any_request(server, cache_dir):
    remote = remote_for(server.serve(NAME, OTHER), body=PAYLOAD)  # the server would give bad bytes
    cache_dir.mkdir()
    (cache_dir / NAME).write_bytes(PAYLOAD)

    fetched = fetch(remote, cache_dir=cache_dir)

    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.sha256 == sha256(PAYLOAD)
    assert server.requests == []


# ---------------------------------------------------------------------------------------------
# Network: unpinned files (sha256=None, like the MobileNetV2 weights)
# ---------------------------------------------------------------------------------------------

WEIGHTS = "weights.h5"
HDF5_BODY = HDF5_SIGNATURE + bytes(range(200)) * 20


def test_unpinned_file_with_the_declared_size_and_hdf5_signature_passes(server, cache_dir):
    remote = remote_for(server.serve(WEIGHTS, HDF5_BODY), body=HDF5_BODY, name=WEIGHTS, sha256=None)

    fetched = fetch(remote, cache_dir=cache_dir)

    assert fetched.path.read_bytes() == HDF5_BODY
    assert fetched.sha256 == sha256(HDF5_BODY)
    assert fetched.origin == remote.url
    assert fetched.verified_by == UPSTREAM_SIZE_AND_SIGNATURE
    assert entries(cache_dir) == [WEIGHTS]
    assert server.hits(WEIGHTS) == 1


@pytest.mark.parametrize(
    ("body", "size", "what"),
    [
        (HDF5_BODY, len(HDF5_BODY) + 1, "an HDF5 signature"),
        (HDF5_BODY[:-10], len(HDF5_BODY), "an HDF5 signature"),
        (b"<html>" + HDF5_BODY[6:], len(HDF5_BODY), "no HDF5 signature"),
    ],
    ids=["size-larger-than-served", "size-smaller-than-declared", "no-signature"],
)
def test_unpinned_file_with_wrong_size_or_signature_is_rejected_and_deleted(
    server, cache_dir, body, size, what
):
    remote = remote_for(server.serve(WEIGHTS, body), name=WEIGHTS, sha256=None, size=size)

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir)

    message = str(caught.value)
    assert remote.url in message
    assert f"gave {len(body)} bytes (expected {size})" in message
    assert what in message
    assert "discarded" in message
    assert not (cache_dir / WEIGHTS).exists()
    assert entries(cache_dir) == []


# ---------------------------------------------------------------------------------------------
# Mirror
# ---------------------------------------------------------------------------------------------


def make_mirror(directory: Path, files: dict[str, bytes], sums: dict[str, str] | None = None) -> Path:
    """Writes `files` and a SHA256SUMS (their true hashes, or `sums` when given)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    listed = {name: sha256(data) for name, data in files.items()} if sums is None else sums
    lines = [f"{digest}  {name}" for name, digest in listed.items()]
    (directory / CHECKSUMS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def test_mirror_hit_returns_the_mirror_file_without_any_request(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {NAME: PAYLOAD, "other.bin": OTHER})
    remote = remote_for(server.serve(NAME, PAYLOAD))

    fetched = fetch(remote, cache_dir=cache_dir, mirror=mirror)

    assert fetched.path == mirror / NAME
    assert fetched.path.read_bytes() == PAYLOAD
    assert fetched.sha256 == sha256(PAYLOAD)
    assert fetched.origin == f"mirror:{mirror}"
    assert fetched.verified_by == UPSTREAM_SHA256
    assert server.requests == []
    assert not cache_dir.exists(), "a mirror hit must not touch the cache"


# A mirror copy that its own SHA256SUMS vouches for but that is not the pinned upstream file,
# like the rebuilt archives of the shared mirror.
ACCEPT_KEY = "data.mirror_accepted_sha256.test"


def test_mirror_file_that_is_not_the_upstream_file_is_refused_with_the_setting_to_accept_it(
    server, tmp_path, cache_dir
):
    mirror = make_mirror(tmp_path / "mirror", {NAME: OTHER})  # SHA256SUMS: the true hash of OTHER
    remote = remote_for(server.serve(NAME, PAYLOAD))  # pinned: the hash of PAYLOAD

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir, mirror=mirror, accepted=Accepted(ACCEPT_KEY))

    assert isinstance(caught.value, DlzooError)
    message = str(caught.value)
    assert f"mirror file {mirror / NAME} is not the upstream {NAME}" in message
    assert f"its SHA-256 {sha256(OTHER)} is not the pinned upstream {sha256(PAYLOAD)}" in message
    assert "refused" in message
    assert f"{CHECKSUMS_FILE} line: {sha256(OTHER)}  {NAME}" in message
    assert f'set {ACCEPT_KEY}: "{sha256(OTHER)}" in params.yaml' in message
    assert f"dvc exp run -S {ACCEPT_KEY}={sha256(OTHER)}" in message
    assert remote.url in message, "the other fix: put the upstream file in the mirror"
    assert server.requests == [], "a refused mirror file must not fall back to the network"
    assert not cache_dir.exists()


def test_mirror_file_whose_hash_params_accept_is_used_and_says_so(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {NAME: OTHER})
    remote = remote_for(server.serve(NAME, PAYLOAD))

    fetched = fetch(remote, cache_dir=cache_dir, mirror=mirror, accepted=Accepted(ACCEPT_KEY, sha256(OTHER)))

    assert fetched.path == mirror / NAME
    assert fetched.sha256 == sha256(OTHER)
    assert fetched.verified_by == ACCEPTED_MIRROR_SHA256
    assert "data.mirror_accepted_sha256" in ACCEPTED_MIRROR_SHA256
    assert server.requests == []


def test_mirror_file_matching_upstream_is_recorded_as_upstream_even_with_another_hash_accepted(
    server, tmp_path, cache_dir
):
    mirror = make_mirror(tmp_path / "mirror", {NAME: PAYLOAD})
    remote = remote_for(server.serve(NAME, PAYLOAD))

    fetched = fetch(remote, cache_dir=cache_dir, mirror=mirror, accepted=Accepted(ACCEPT_KEY, sha256(OTHER)))

    assert fetched.verified_by == UPSTREAM_SHA256


def test_mirror_file_with_a_stale_accepted_hash_is_refused_naming_both(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {NAME: OTHER})
    remote = remote_for(server.serve(NAME, PAYLOAD))
    stale = sha256(b"the mirror's previous build")

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir, mirror=mirror, accepted=Accepted(ACCEPT_KEY, stale))

    message = str(caught.value)
    assert f"params accept {stale}, which differs too" in message
    assert f"dvc exp run -S {ACCEPT_KEY}={sha256(OTHER)}" in message
    assert server.requests == []


def test_network_file_is_never_let_in_by_an_accepted_mirror_hash(server, cache_dir):
    remote = remote_for(server.serve(NAME, OTHER), body=PAYLOAD)

    with pytest.raises(DownloadError, match="failed verification"):
        fetch(remote, cache_dir=cache_dir, accepted=Accepted(ACCEPT_KEY, sha256(OTHER)))
    assert entries(cache_dir) == []


def unpinned_remote(url: str) -> RemoteFile:
    return remote_for(url, body=HDF5_BODY, name=WEIGHTS, sha256=None)


def test_unpinned_mirror_file_with_the_upstream_size_and_signature_passes(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {WEIGHTS: HDF5_BODY})

    fetched = fetch(unpinned_remote(server.url(WEIGHTS)), cache_dir=cache_dir, mirror=mirror)

    assert fetched.verified_by == UPSTREAM_SIZE_AND_SIGNATURE
    assert fetched.sha256 == sha256(HDF5_BODY)
    assert server.requests == []


REBUILT_WEIGHTS = HDF5_BODY + b"\x00" * 64  # a valid-looking HDF5 file of another size, like the mirror's


def test_unpinned_mirror_file_of_another_size_is_refused_unless_its_hash_is_accepted(
    server, tmp_path, cache_dir
):
    mirror = make_mirror(tmp_path / "mirror", {WEIGHTS: REBUILT_WEIGHTS})
    remote = unpinned_remote(server.url(WEIGHTS))

    with pytest.raises(DownloadError) as caught:
        fetch(remote, cache_dir=cache_dir, mirror=mirror, accepted=Accepted(ACCEPT_KEY))

    message = str(caught.value)
    assert f"it has {len(REBUILT_WEIGHTS)} bytes (expected {len(HDF5_BODY)}), an HDF5 signature" in message
    assert f"dvc exp run -S {ACCEPT_KEY}={sha256(REBUILT_WEIGHTS)}" in message
    assert (mirror / WEIGHTS).read_bytes() == REBUILT_WEIGHTS, "the mirror itself is never modified"

    accepted = Accepted(ACCEPT_KEY, sha256(REBUILT_WEIGHTS))
    fetched = fetch(remote, cache_dir=cache_dir, mirror=mirror, accepted=accepted)

    assert fetched.verified_by == ACCEPTED_MIRROR_SHA256
    assert fetched.sha256 == sha256(REBUILT_WEIGHTS)
    assert server.requests == []


def test_mirror_accepts_binary_mode_sha256sum_lines(server, tmp_path, cache_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(PAYLOAD)
    (mirror / CHECKSUMS_FILE).write_text(f"\n{sha256(PAYLOAD).upper()} *{NAME}\n\n", encoding="utf-8")

    fetched = fetch(remote_for(server.url()), cache_dir=cache_dir, mirror=mirror)

    assert fetched.sha256 == sha256(PAYLOAD)
    assert server.requests == []


def test_mirror_miss_name_not_listed(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {"other.bin": OTHER})
    (mirror / NAME).write_bytes(PAYLOAD)  # present, but not listed: must not be trusted

    with pytest.raises(DownloadError, match=rf"lists no {NAME} in {CHECKSUMS_FILE}"):
        fetch(remote_for(server.serve(NAME, PAYLOAD)), cache_dir=cache_dir, mirror=mirror)
    assert server.requests == [], "a mirror miss must not fall back to the network"


def test_mirror_miss_listed_but_file_missing(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {}, sums={NAME: sha256(PAYLOAD)})

    with pytest.raises(DownloadError, match=rf"lists {NAME} in {CHECKSUMS_FILE} but has no such file"):
        fetch(remote_for(server.serve(NAME, PAYLOAD)), cache_dir=cache_dir, mirror=mirror)
    assert server.requests == []


def test_mirror_miss_file_corrupt_against_sha256sums(server, tmp_path, cache_dir):
    mirror = make_mirror(tmp_path / "mirror", {NAME: OTHER}, sums={NAME: sha256(PAYLOAD)})

    with pytest.raises(DownloadError) as caught:
        fetch(remote_for(server.serve(NAME, PAYLOAD)), cache_dir=cache_dir, mirror=mirror)

    message = str(caught.value)
    assert f"mirror file {mirror / NAME}" in message
    assert f"expected SHA-256 {sha256(PAYLOAD)}" in message
    assert f"got {sha256(OTHER)}" in message
    assert f"({len(OTHER)} bytes)" in message
    assert server.requests == []
    assert (mirror / NAME).read_bytes() == OTHER, "the mirror itself is never modified"


def test_mirror_without_sha256sums(server, tmp_path, cache_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(PAYLOAD)

    with pytest.raises(DownloadError) as caught:
        fetch(remote_for(server.serve(NAME, PAYLOAD)), cache_dir=cache_dir, mirror=mirror)

    message = str(caught.value)
    assert f"has no {CHECKSUMS_FILE} file" in message
    assert f"sha256sum * > {CHECKSUMS_FILE}" in message
    assert server.requests == []


def test_mirror_with_a_malformed_sha256sums_line(server, tmp_path, cache_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / NAME).write_bytes(PAYLOAD)
    (mirror / CHECKSUMS_FILE).write_text(f"{sha256(PAYLOAD)}  {NAME}\nnot-a-hash  x\n", encoding="utf-8")

    with pytest.raises(DownloadError, match=rf"{CHECKSUMS_FILE}:2: expected"):
        fetch(remote_for(server.serve(NAME, PAYLOAD)), cache_dir=cache_dir, mirror=mirror)
    assert server.requests == []


def test_mirror_that_is_not_a_directory(server, tmp_path, cache_dir):
    with pytest.raises(DownloadError, match="is not a directory"):
        fetch(remote_for(server.serve(NAME, PAYLOAD)), cache_dir=cache_dir, mirror=tmp_path / "absent")
    assert server.requests == []


def test_resolve_mirror_reads_the_param_only(tmp_path, monkeypatch):
    from_param = tmp_path / "from-param"

    assert resolve_mirror(str(from_param)) == from_param.resolve()
    assert resolve_mirror("") is None

    monkeypatch.setenv(MIRROR_ENV, "")
    assert resolve_mirror(str(from_param)) == from_param.resolve()
    assert resolve_mirror("") is None


@pytest.mark.parametrize("param", ["", "/some/param/mirror"], ids=["no-param", "with-param"])
def test_resolve_mirror_refuses_the_retired_environment_variable(tmp_path, monkeypatch, param):
    from_env = tmp_path / "from-env"
    monkeypatch.setenv(MIRROR_ENV, str(from_env))

    with pytest.raises(DownloadError) as caught:
        resolve_mirror(param)

    message = str(caught.value)
    assert f"${MIRROR_ENV} is set ({from_env}) but no longer read" in message
    assert f"dvc exp run -S data.mirror={from_env}" in message


# ---------------------------------------------------------------------------------------------
# copy_verified
# ---------------------------------------------------------------------------------------------


def test_copy_verified_copies_with_the_hash_checked(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    destination = tmp_path / "out" / "nested" / "copy.bin"

    copy_verified(source, destination, sha256(PAYLOAD))

    assert destination.read_bytes() == PAYLOAD
    assert entries(destination.parent) == ["copy.bin"], "no temporary leftovers"
    assert source.read_bytes() == PAYLOAD


def test_copy_verified_with_a_wrong_hash_leaves_no_destination_and_no_temporaries(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    out = tmp_path / "out"
    destination = out / "copy.bin"
    wrong = sha256(OTHER)

    with pytest.raises(DownloadError) as caught:
        copy_verified(source, destination, wrong)

    message = str(caught.value)
    assert f"copy of {source}" in message
    assert f"expected SHA-256 {wrong}" in message
    assert f"got {sha256(PAYLOAD)}" in message
    assert not destination.exists()
    assert entries(out) == []


def test_copy_verified_with_a_wrong_hash_keeps_an_existing_destination(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    destination = tmp_path / "copy.bin"
    destination.write_bytes(b"previous good copy")
    before = entries(tmp_path)

    with pytest.raises(DownloadError):
        copy_verified(source, destination, sha256(OTHER))

    assert destination.read_bytes() == b"previous good copy"
    assert entries(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# The download stage (profile full, from a mirror)
# ---------------------------------------------------------------------------------------------


def small_mnist(path: Path, count: int = 12) -> bytes:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, size=(count,), dtype=np.uint8),
        x_test=rng.integers(0, 256, size=(count // 2, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, size=(count // 2,), dtype=np.uint8),
    )
    return path.read_bytes()


def full_config(mirror: Path, **accepted: str) -> DataConfig:
    """params.yaml's data block on the full profile with `mirror`; `accepted`: data set -> sha256."""
    data = load_params(PARAMS_FILE).data
    hashes = dataclasses.replace(data.mirror_accepted_sha256, **accepted)
    return dataclasses.replace(data, profile="full", mirror=str(mirror), mirror_accepted_sha256=hashes)


@pytest.fixture
def stage_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "stage-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return cache


def small_mnist_mirror(tmp_path: Path) -> tuple[Path, bytes]:
    """A mirror whose SHA256SUMS vouches for a 12-image "mnist.npz": not the upstream file."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    name = REMOTE_FILES["mnist"].name
    data = small_mnist(mirror / name)
    make_mirror(mirror, {name: data})
    return mirror, data


def read_source(out_dir: Path) -> dict:
    return json.loads((out_dir / SOURCE_FILE).read_text(encoding="utf-8"))


def test_download_stage_refuses_a_mirror_file_that_is_not_the_upstream_one(tmp_path, stage_env):
    """A 12-image "mnist.npz" that the mirror's own SHA256SUMS vouches for is not MNIST."""
    mnist = REMOTE_FILES["mnist"]
    mirror, data = small_mnist_mirror(tmp_path)
    parent = tmp_path / "data" / "raw"
    out_dir = parent / "mnist"

    with pytest.raises(DownloadError) as caught:
        download("mnist", full_config(mirror), out_dir)

    message = str(caught.value)
    assert f"is not the upstream {mnist.name}" in message
    assert f"its SHA-256 {sha256(data)} is not the pinned upstream {mnist.sha256}" in message
    assert f'set data.mirror_accepted_sha256.mnist: "{sha256(data)}" in params.yaml' in message
    assert f"dvc exp run -S data.mirror_accepted_sha256.mnist={sha256(data)}" in message
    assert not out_dir.exists()
    assert entries(parent) == [], "no staging directory left behind"
    assert not stage_env.exists(), "a mirror download must not use the network cache"


def test_download_stage_uses_a_mirror_file_whose_hash_params_accept_and_records_it(tmp_path, stage_env):
    mnist = REMOTE_FILES["mnist"]
    mirror, data = small_mnist_mirror(tmp_path)
    out_dir = tmp_path / "data" / "raw" / "mnist"

    record = download("mnist", full_config(mirror, mnist=sha256(data)), out_dir)

    assert entries(out_dir) == sorted([mnist.name, SOURCE_FILE])
    assert (out_dir / mnist.name).read_bytes() == data
    source = read_source(out_dir)
    assert source == record
    assert source["dataset"] == "mnist"
    assert source["profile"] == "full"
    assert source["stand_in"] is False
    assert source["files"][mnist.name] == {
        "sha256": sha256(data),
        "size": len(data),
        "origin": f"mirror:{mirror.resolve()}",
        "verified_by": "accepted mirror sha256 (params data.mirror_accepted_sha256)",
        "canonical_url": mnist.url,
        "upstream_sha256": mnist.sha256,
        "upstream_size": mnist.size,
        "checksum_source": mnist.checksum_source,
    }
    assert entries(out_dir.parent) == ["mnist"], "no staging directory left beside the output"
    assert not stage_env.exists(), "a mirror download must not use the network cache"


def test_download_stage_records_a_mirror_file_matching_the_pin_as_upstream(tmp_path, stage_env, monkeypatch):
    mnist = REMOTE_FILES["mnist"]
    mirror, data = small_mnist_mirror(tmp_path)
    # Pin the small file itself: the test cannot hold the real 11 MB archive.
    monkeypatch.setitem(
        REMOTE_FILES, "mnist", dataclasses.replace(mnist, sha256=sha256(data), size=len(data))
    )
    out_dir = tmp_path / "raw" / "mnist"

    record = download("mnist", full_config(mirror), out_dir)

    entry = record["files"][mnist.name]
    assert entry["verified_by"] == "upstream sha256"
    assert entry["sha256"] == entry["upstream_sha256"] == sha256(data)
    assert read_source(out_dir) == record


@pytest.mark.parametrize(
    ("body", "accepted", "verified_by"),
    [
        (HDF5_BODY, "", "upstream size and HDF5 signature"),
        (
            REBUILT_WEIGHTS,
            sha256(REBUILT_WEIGHTS),
            "accepted mirror sha256 (params data.mirror_accepted_sha256)",
        ),
    ],
    ids=["upstream-size", "rebuild-accepted"],
)
def test_download_stage_records_which_check_let_the_weights_in(
    tmp_path, stage_env, monkeypatch, body, accepted, verified_by
):
    weights = REMOTE_FILES["mobilenet_v2"]
    monkeypatch.setitem(REMOTE_FILES, "mobilenet_v2", dataclasses.replace(weights, size=len(HDF5_BODY)))
    mirror = make_mirror(tmp_path / "mirror", {weights.name: body})
    out_dir = tmp_path / "raw" / "mobilenet_v2"

    record = download("mobilenet_v2", full_config(mirror, mobilenet_v2=accepted), out_dir)

    entry = record["files"][weights.name]
    assert entry["verified_by"] == verified_by
    assert entry["sha256"] == sha256(body)
    assert entry["size"] == len(body)
    assert entry["upstream_sha256"] is None
    assert entry["upstream_size"] == len(HDF5_BODY)
    assert record["weights"] == "imagenet"
    assert (out_dir / weights.name).read_bytes() == body


def test_download_stage_refuses_rebuilt_weights_of_another_size(tmp_path, stage_env, monkeypatch):
    weights = REMOTE_FILES["mobilenet_v2"]
    monkeypatch.setitem(REMOTE_FILES, "mobilenet_v2", dataclasses.replace(weights, size=len(HDF5_BODY)))
    mirror = make_mirror(tmp_path / "mirror", {weights.name: REBUILT_WEIGHTS})
    out_dir = tmp_path / "raw" / "mobilenet_v2"

    with pytest.raises(DownloadError) as caught:
        download("mobilenet_v2", full_config(mirror), out_dir)

    message = str(caught.value)
    assert f"{len(REBUILT_WEIGHTS)} bytes (expected {len(HDF5_BODY)})" in message
    assert f"dvc exp run -S data.mirror_accepted_sha256.mobilenet_v2={sha256(REBUILT_WEIGHTS)}" in message
    assert not out_dir.exists()


def test_download_stage_refuses_the_retired_mirror_variable(tmp_path, stage_env, monkeypatch):
    mnist = REMOTE_FILES["mnist"]
    mirror = tmp_path / "env-mirror"
    mirror.mkdir()
    data = small_mnist(mirror / mnist.name, count=4)
    make_mirror(mirror, {mnist.name: data})
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    out_dir = tmp_path / "raw" / "mnist"

    with pytest.raises(DownloadError, match=rf"\${MIRROR_ENV} is set .* but no longer read"):
        download("mnist", full_config(tmp_path / "param-mirror", mnist=sha256(data)), out_dir)
    assert not out_dir.exists()


def test_demo_profile_ignores_the_retired_mirror_variable(tmp_path, stage_env, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "anything"))
    data = dataclasses.replace(load_params(PARAMS_FILE).data, profile="demo")

    record = download("mnist", data, tmp_path / "raw" / "mnist")

    assert record["stand_in"] is True


@pytest.mark.parametrize("listed", [False, True], ids=["not-listed", "listed-but-missing"])
def test_download_stage_mirror_miss_creates_no_output(tmp_path, stage_env, listed):
    mnist = REMOTE_FILES["mnist"]
    sums = {"unrelated.bin": sha256(OTHER)}
    if listed:
        sums[mnist.name] = sha256(b"not there")
    mirror = make_mirror(tmp_path / "mirror", {"unrelated.bin": OTHER}, sums=sums)
    parent = tmp_path / "data" / "raw"
    out_dir = parent / "mnist"

    with pytest.raises(DownloadError, match=mnist.name):
        download("mnist", full_config(mirror), out_dir)

    assert not out_dir.exists()
    assert entries(parent) == [], "no staging directory left behind"
    assert not stage_env.exists()


def test_download_stage_failure_keeps_the_previous_output(tmp_path, stage_env):
    mirror = make_mirror(tmp_path / "mirror", {"unrelated.bin": OTHER})
    out_dir = tmp_path / "raw" / "mnist"
    out_dir.mkdir(parents=True)
    (out_dir / "previous.txt").write_text("kept", encoding="utf-8")

    with pytest.raises(DownloadError):
        download("mnist", full_config(mirror), out_dir)

    assert entries(out_dir) == ["previous.txt"]
    assert (out_dir / "previous.txt").read_text(encoding="utf-8") == "kept"
    assert entries(out_dir.parent) == ["mnist"]


def test_no_weights_is_a_record_only_and_reads_no_mirror_or_network(tmp_path, stage_env):
    out_dir = tmp_path / "raw" / "none"

    record = download("none", full_config(tmp_path / "mirror-that-does-not-exist"), out_dir)

    assert entries(out_dir) == [SOURCE_FILE]
    assert json.loads((out_dir / SOURCE_FILE).read_text(encoding="utf-8")) == record
    assert record["weights"] == "random" and record["files"] == {} and record["stand_in"] is False
    assert not stage_env.exists()
