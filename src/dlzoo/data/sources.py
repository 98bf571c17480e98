"""Where the real data come from: the only code in dlzoo that touches the network.

Each canonical file is pinned by SHA-256 and fetched with pooch, which streams it to a temporary
file, checks the hash and only then renames it into the cache. A mirror directory (canonical file
names plus a SHA256SUMS file, params' data.mirror) replaces the network entirely.

Whatever the source, a file is used only if it is the upstream one (its pinned SHA-256; for the
unpinned MobileNetV2 weights, the upstream size and HDF5 signature) or, from a mirror, if params
accept its SHA-256 (data.mirror_accepted_sha256). The mirror's SHA256SUMS only catches a corrupt
copy: it is not in DVC's view, so it may not decide what the pipeline trains on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests

from dlzoo.errors import DlzooError
from dlzoo.store import sha256_of

MIRROR_ENV = "DLZOO_DATA_MIRROR"  # retired: set only to refuse it (DVC cannot see the environment)
CACHE_ENV = "DLZOO_CACHE_DIR"
CHECKSUMS_FILE = "SHA256SUMS"
ACCEPT_PARAM = "data.mirror_accepted_sha256"

# What a source record's `verified_by` says: which check let a file in.
UPSTREAM_SHA256 = "upstream sha256"
UPSTREAM_SIZE_AND_SIGNATURE = "upstream size and HDF5 signature"
ACCEPTED_MIRROR_SHA256 = f"accepted mirror sha256 (params {ACCEPT_PARAM})"

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TFDS = "tensorflow-datasets 4.9.10 (PyPI wheel)"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: str | None
    size: int
    checksum_source: str


REMOTE_FILES: dict[str, RemoteFile] = {
    "mnist": RemoteFile(
        name="mnist.npz",
        url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        size=11490434,
        checksum_source="keras/src/datasets/mnist.py (file_hash passed to get_file)",
    ),
    "cifar10": RemoteFile(
        name="cifar-10-binary.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        size=170052171,
        checksum_source=f"{TFDS}: tensorflow_datasets/url_checksums/cifar10.txt",
    ),
    "imdb": RemoteFile(
        name="aclImdb_v1.tar.gz",
        url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
        size=84125825,
        checksum_source=f"{TFDS}: tensorflow_datasets/datasets/imdb_reviews/checksums.tsv",
    ),
    "mobilenet_v2": RemoteFile(
        name="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        url="https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        # Keras' own MobileNetV2 loader passes no file_hash and no checksum is published for
        # this file; the size (from Keras' download log) and the HDF5 signature are checked.
        sha256=None,
        size=9406464,
        checksum_source="none published; size from Keras' download progress (9406464 bytes)",
    ),
}


class DownloadError(DlzooError):
    """A data file could not be fetched or failed verification; the message says how to fix it."""


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    sha256: str
    origin: str
    verified_by: str  # UPSTREAM_SHA256, UPSTREAM_SIZE_AND_SIGNATURE or ACCEPTED_MIRROR_SHA256


@dataclass(frozen=True)
class Accepted:
    """A mirror file's SHA-256 that params accept although it is not the upstream file."""

    key: str  # the params key that sets it, e.g. data.mirror_accepted_sha256.cifar10 (for messages)
    sha256: str = ""  # "": nothing accepted


def resolve_mirror(param_value: str) -> Path | None:
    """The mirror directory: params' data.mirror, else none (the network)."""
    retired = os.environ.get(MIRROR_ENV)
    if retired:
        # Refused rather than ignored: a run that silently went to the network instead would
        # surprise whoever set it, and one that obeyed it would change data behind DVC's back.
        raise DownloadError(
            f"${MIRROR_ENV} is set ({retired}) but no longer read: DVC cannot see environment "
            f"variables, so the mirror is the data.mirror param only. Unset {MIRROR_ENV} and set "
            f"the param: `dvc exp run -S data.mirror={retired}` (or data.mirror in params.yaml)."
        )
    return Path(param_value).expanduser().resolve() if param_value else None


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dlzoo").expanduser()


def fetch(
    remote: RemoteFile, cache_dir: Path, mirror: Path | None = None, accepted: Accepted | None = None
) -> FetchedFile:
    """Returns a verified local copy of `remote`, from the mirror when given, else the network.

    `accepted` applies to a mirror file only: the network must give the upstream file.
    """
    if mirror is not None:
        return _from_mirror(remote, mirror, accepted or Accepted(key=f"{ACCEPT_PARAM}.<data set>"))
    return _from_network(remote, cache_dir)


def read_checksums(mirror: Path) -> dict[str, str]:
    """Parses a `sha256sum`-style file: '<hex>  <name>' (or '<hex> *<name>') per line."""
    sums_path = mirror / CHECKSUMS_FILE
    if not sums_path.is_file():
        raise DownloadError(
            f"mirror {mirror} has no {CHECKSUMS_FILE} file; create one with "
            f"`cd {mirror} && sha256sum * > {CHECKSUMS_FILE}`"
        )
    sums = {}
    for number, line in enumerate(sums_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DownloadError(f"{sums_path}:{number}: expected '<sha256>  <file name>', got {line!r}")
        sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def copy_verified(source: Path, destination: Path, sha256: str) -> None:
    """Copies to a temporary file beside `destination`, checks the hash, then renames."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        _check_hash(Path(temporary), sha256, what=f"copy of {source}")
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _from_mirror(remote: RemoteFile, mirror: Path, accepted: Accepted) -> FetchedFile:
    if not mirror.is_dir():
        raise DownloadError(f"data mirror {mirror} is not a directory (data.mirror in params.yaml)")
    listed = read_checksums(mirror).get(remote.name)
    if listed is None:
        raise DownloadError(f"mirror {mirror} lists no {remote.name} in {CHECKSUMS_FILE}")
    path = mirror / remote.name
    if not path.is_file():
        raise DownloadError(f"mirror {mirror} lists {remote.name} in {CHECKSUMS_FILE} but has no such file")
    _check_hash(path, listed, what=f"mirror file {path}")  # a corrupt copy, whatever it should be
    # Upstream first: the upstream file is recorded as such even where params accept another hash.
    verified_by = _upstream_check(path, listed, remote) or _accepted_check(path, listed, remote, accepted)
    return FetchedFile(path=path, sha256=listed, origin=f"mirror:{mirror}", verified_by=verified_by)


def _upstream_check(path: Path, sha256: str, remote: RemoteFile) -> str | None:
    """The check that shows `path` is the upstream file, or None when it is not."""
    if remote.sha256 is not None:
        return UPSTREAM_SHA256 if sha256 == remote.sha256 else None
    return None if _unpinned_problem(path, remote) else UPSTREAM_SIZE_AND_SIGNATURE


def _accepted_check(path: Path, sha256: str, remote: RemoteFile, accepted: Accepted) -> str:
    """A mirror file that is not the upstream one passes only with its hash accepted in params."""
    if sha256 == accepted.sha256:
        return ACCEPTED_MIRROR_SHA256
    raise DownloadError(_refusal(path, sha256, remote, accepted))


def _refusal(path: Path, sha256: str, remote: RemoteFile, accepted: Accepted) -> str:
    if remote.sha256 is not None:
        differs = f"its SHA-256 {sha256} is not the pinned upstream {remote.sha256}"
    else:
        differs = f"it has {_unpinned_problem(path, remote)}"
    stale = f"; params accept {accepted.sha256}, which differs too" if accepted.sha256 else ""
    return (
        f"mirror file {path} is not the upstream {remote.name} (checksum: {remote.checksum_source}): "
        f"{differs}{stale}. It was refused. To use this copy anyway, accept its hash (the mirror's "
        f'{CHECKSUMS_FILE} line: {sha256}  {remote.name}): set {accepted.key}: "{sha256}" in '
        f"params.yaml, or run `dvc exp run -S {accepted.key}={sha256}`; the source record then says "
        f"verified_by: {ACCEPTED_MIRROR_SHA256}. Otherwise put the upstream file ({remote.url}) "
        f"in the mirror."
    )


def _from_network(remote: RemoteFile, cache_dir: Path) -> FetchedFile:
    known_hash = f"sha256:{remote.sha256}" if remote.sha256 else None
    downloader = pooch.HTTPDownloader(progressbar=True, timeout=60)
    try:
        path = Path(
            pooch.retrieve(remote.url, known_hash, fname=remote.name, path=cache_dir, downloader=downloader)
        )
    except requests.RequestException as error:
        raise DownloadError(
            f"could not download {remote.url}: {error}. Without network access, point data.mirror "
            f"in params.yaml (or `dvc exp run -S data.mirror=DIR`) at a directory holding "
            f"{remote.name} and a {CHECKSUMS_FILE} file, or use the offline profile: set "
            f"data.profile: demo (or run `dvc exp run -S data.profile=demo`)."
        ) from error
    except ValueError as error:
        raise DownloadError(f"{remote.url} failed verification and was discarded: {error}") from error
    if remote.sha256 is None:
        _check_unpinned(path, remote)
        return FetchedFile(path, sha256_of(path), origin=remote.url, verified_by=UPSTREAM_SIZE_AND_SIGNATURE)
    return FetchedFile(path, sha256_of(path), origin=remote.url, verified_by=UPSTREAM_SHA256)


def _check_unpinned(path: Path, remote: RemoteFile) -> None:
    problem = _unpinned_problem(path, remote)
    if problem:
        path.unlink()
        raise DownloadError(f"{remote.url} gave {problem}; the file was discarded, try again")


def _unpinned_problem(path: Path, remote: RemoteFile) -> str:
    """How a file without a published hash differs from the upstream size and HDF5 signature; "" if not."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        is_hdf5 = stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    if size == remote.size and is_hdf5:
        return ""
    return f"{size} bytes (expected {remote.size}), {'an' if is_hdf5 else 'no'} HDF5 signature"


def _check_hash(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DownloadError(
            f"{what} is corrupt or truncated: expected SHA-256 {expected}, got {actual} "
            f"({path.stat().st_size} bytes); it was not used"
        )
