"""The download stage: put a data set's raw files, verified, into its raw directory.

`full` fetches the canonical files (network or mirror); `demo` writes offline stand-ins in the
same formats. Either way a `source.json` records where every byte came from and its SHA-256; in
`full` also which check let the file in (`verified_by`, see sources.py).
"""

from __future__ import annotations

from pathlib import Path

from dlzoo.config.data import DataConfig
from dlzoo.data import standins
from dlzoo.data.sources import (
    ACCEPT_PARAM,
    REMOTE_FILES,
    Accepted,
    copy_verified,
    default_cache_dir,
    fetch,
    resolve_mirror,
)
from dlzoo.errors import InvalidInput
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
        raise InvalidInput(f"unknown downloadable data set {dataset!r}; valid: {', '.join(DOWNLOADABLE)}")
    if dataset == NO_WEIGHTS:
        return _no_weights(out_dir)
    with atomic_directory(out_dir) as staging:
        if config.profile == "full":
            record = _download_full(dataset, config, staging)
        elif dataset == "mobilenet_v2":
            record = _demo_weights()
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
    mirror = resolve_mirror(config.mirror)
    # Read only with a mirror: the network must give the upstream file, whatever params accept.
    accepted = _accepted(dataset, config) if mirror is not None else None
    fetched = fetch(remote, default_cache_dir(), mirror, accepted)
    copy_verified(fetched.path, staging / remote.name, fetched.sha256)
    return {
        "stand_in": False,
        "description": f"canonical {remote.name}",
        "files": {
            remote.name: {
                "sha256": fetched.sha256,
                "size": (staging / remote.name).stat().st_size,
                "origin": fetched.origin,
                "verified_by": fetched.verified_by,
                "canonical_url": remote.url,
                "upstream_sha256": remote.sha256,
                "upstream_size": remote.size,
                "checksum_source": remote.checksum_source,
            }
        },
    }


def _accepted(dataset: str, config: DataConfig) -> Accepted:
    key = f"{ACCEPT_PARAM}.{dataset}"
    return Accepted(key=key, sha256=getattr(config.mirror_accepted_sha256, dataset))


def _write_standin(dataset: str, config: DataConfig, staging: Path) -> dict:
    name = REMOTE_FILES[dataset].name
    _STANDIN_WRITERS[dataset](staging / name, config)
    return {
        "stand_in": True,
        "description": standins.DESCRIPTIONS[dataset],
        "files": {name: {"sha256": sha256_of(staging / name), "origin": "generated offline (demo)"}},
    }


def _demo_weights() -> dict:
    """The demo is offline and reads nothing DVC cannot see (not even Keras' cache): no weights.
    An experiment that names them trains its random-weights variant or refuses (its
    model.demo_weights)."""
    return {
        "stand_in": True,
        "weights": "random",
        "description": "the demo profile has no ImageNet weights offline: random initial weights",
        "files": {},
    }
