"""The download stage: put a data set's raw files, verified, into its raw directory.

`full` fetches the canonical files (network or mirror); `demo` writes offline stand-ins in the
same formats. Either way a `source.json` records where every byte came from and its SHA-256.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlzoo.config.data import DataConfig
from dlzoo.data import standins
from dlzoo.data.sources import (
    REMOTE_FILES,
    copy_verified,
    default_cache_dir,
    fetch,
    resolve_mirror,
)
from dlzoo.records import SOURCE_FILE
from dlzoo.store import atomic_directory, save_json, sha256_of

NO_WEIGHTS = "none"  # `pretrained: none`: a directory with only a record, so the dep never changes
DOWNLOADABLE = (*REMOTE_FILES, NO_WEIGHTS)
_STANDIN_WRITERS = {
    "mnist": lambda path, config: standins.write_mnist_standin(path, config.seed),
    "cifar10": lambda path, config: standins.write_cifar_standin(path, config.seed, config.demo),
    "imdb": lambda path, config: standins.write_imdb_standin(path, config.seed, config.demo),
}


def download(dataset: str, config: DataConfig, out_dir: Path) -> dict:
    """Writes `out_dir` atomically and returns its source record."""
    if dataset not in DOWNLOADABLE:
        raise ValueError(f"unknown downloadable data set {dataset!r}; valid: {', '.join(DOWNLOADABLE)}")
    if dataset == NO_WEIGHTS:
        return _no_weights(out_dir)
    with atomic_directory(out_dir) as staging:
        if config.profile == "full":
            record = _download_full(dataset, config, staging)
        elif dataset == "mobilenet_v2":
            record = _weights_from_keras_cache(staging)
        else:
            record = _write_standin(dataset, config, staging)
        if dataset == "mobilenet_v2":
            record.setdefault("weights", "imagenet")
        record.update(dataset=dataset, profile=config.profile)
        save_json(staging / SOURCE_FILE, record)
    return record


def _no_weights(out_dir: Path) -> dict:
    """What `pretrained: none` points at: no files, whatever the profile (so it reads no params)."""
    record = {
        "dataset": NO_WEIGHTS,
        "stand_in": False,
        "weights": "random",
        "description": "no pretrained weights: training starts from random weights",
        "files": {},
    }
    with atomic_directory(out_dir) as staging:
        save_json(staging / SOURCE_FILE, record)
    return record


def _download_full(dataset: str, config: DataConfig, staging: Path) -> dict:
    remote = REMOTE_FILES[dataset]
    fetched = fetch(remote, default_cache_dir(), resolve_mirror(config.mirror))
    copy_verified(fetched.path, staging / remote.name, fetched.sha256)
    return {
        "stand_in": False,
        "description": f"canonical {remote.name}",
        "files": {
            remote.name: {
                "sha256": fetched.sha256,
                "origin": fetched.origin,
                "canonical_url": remote.url,
                "upstream_sha256": remote.sha256,
                "matches_upstream": fetched.sha256 == remote.sha256,
                "checksum_source": remote.checksum_source,
            }
        },
    }


def _write_standin(dataset: str, config: DataConfig, staging: Path) -> dict:
    name = REMOTE_FILES[dataset].name
    _STANDIN_WRITERS[dataset](staging / name, config)
    return {
        "stand_in": True,
        "description": standins.DESCRIPTIONS[dataset],
        "files": {name: {"sha256": sha256_of(staging / name), "origin": "generated offline (demo)"}},
    }


def keras_weights_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def _weights_from_keras_cache(staging: Path) -> dict:
    """demo never touches the network: use Keras' cached ImageNet weights if present, else none."""
    name = REMOTE_FILES["mobilenet_v2"].name
    cached = keras_weights_cache() / name
    if not cached.is_file():
        return {
            "stand_in": True,
            "weights": "random",
            "description": f"no {name} in Keras' cache ({cached.parent}): random initial weights",
            "files": {},
        }
    digest = sha256_of(cached)
    copy_verified(cached, staging / name, digest)
    return {
        "stand_in": False,
        "weights": "imagenet",
        "description": f"ImageNet weights from Keras' cache {cached}",
        "files": {name: {"sha256": digest, "origin": f"keras-cache:{cached}"}},
    }
