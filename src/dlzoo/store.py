"""Writing pipeline outputs so that a crash never leaves a half-written one behind.

A stage builds its output directory under a temporary name beside the target and renames it
into place at the end. Array files are written with fixed timestamps so that the same arrays
give the same bytes, and DVC sees an unchanged output as unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yields a fresh temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like numpy.savez (uncompressed, loadable by numpy.load) but byte-for-byte reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME), buffer.getvalue())


def normalise_keras_archive(path: Path) -> None:
    """Rewrites a `.keras` file without its save time (metadata.json and zip entry times).

    Keras stamps both on every save, and numbers objects shared between layers by their memory
    address (`shared_object_id` in config.json), so the same weights would give new bytes and DVC
    would rerun everything downstream of a retrained model. The ids are renumbered in order of
    appearance (they only pair references up); Keras reads only `keras_version` from metadata.json.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    temporary = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, payload in entries:
            if name == "metadata.json":
                metadata = json.loads(payload)
                metadata.pop("date_saved", None)
                payload = json.dumps(metadata, sort_keys=True).encode()
            elif name == "config.json":
                payload = json.dumps(_renumber_shared_objects(json.loads(payload), {})).encode()
            archive.writestr(zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME), payload)
    os.replace(temporary, path)


def _renumber_shared_objects(node: Any, numbers: dict[int, int]) -> Any:
    if isinstance(node, dict):
        return {
            key: numbers.setdefault(value, len(numbers))
            if key == "shared_object_id" and isinstance(value, int)
            else _renumber_shared_objects(value, numbers)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber_shared_objects(item, numbers) for item in node]
    return node


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def save_json(path: Path, payload: Any) -> None:
    """Writes beside the target, then renames: a reader never sees half a file."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
