"""Config: params.yaml is strict, typed and frozen; every mistake names its key."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from dlzoo.config import Params, load_params
from dlzoo.config.base import build, forget_reads, keys_read, replace

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def build_with(raw: dict, dotted_key: str, value) -> Params:
    changed = copy.deepcopy(raw)
    *parents, leaf = dotted_key.split(".")
    node = changed
    for name in parents:
        node = node[name]
    node[leaf] = value
    return build(Params, changed, path="")


def test_repository_params_load_into_frozen_dataclasses():
    params = load_params(PROJECT / "params.yaml")
    assert params.data.profile == "demo"
    assert params.data.imdb.vocab_sizes == (10000, 20000)
    assert params.data.moons.samples == 1000
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.data.profile = "full"


def test_unknown_key_names_full_path_and_allowed_keys(raw_params):
    with pytest.raises(
        ValueError, match=r"unknown key data\.moons\.epochs; allowed keys here: samples, noise"
    ):
        build_with(raw_params, "data.moons.epochs", 3)


def test_unknown_data_set_lists_the_known_ones(raw_params):
    with pytest.raises(
        ValueError, match=r"unknown key data\.fashion_mnist; allowed keys here: .*mnist, cifar10"
    ):
        build_with(raw_params, "data.fashion_mnist", {"val_fraction": 0.1})


def test_unknown_profile_lists_allowed_values(raw_params):
    with pytest.raises(ValueError, match=r"data\.profile: 'tiny' is not allowed; use one of demo, full"):
        build_with(raw_params, "data.profile", "tiny")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.moons.samples", "many", r"data\.moons\.samples: expected int, got str 'many'"),
        ("data.moons.samples", 10.5, r"data\.moons\.samples: expected int, got float"),
        ("data.moons.samples", True, r"data\.moons\.samples: expected int, got bool"),
        ("data.mirror", 3, r"data\.mirror: expected str, got int"),
        (
            "data.mirror_accepted_sha256.cifar10",
            5,
            r"data\.mirror_accepted_sha256\.cifar10: expected str, got int",
        ),
        ("data.mirror_accepted_sha256", "", r"data\.mirror_accepted_sha256: expected a mapping with keys"),
        ("data.imdb.vocab_sizes", 10000, r"data\.imdb\.vocab_sizes: expected a list"),
        ("data.imdb.vocab_sizes", [10000, "x"], r"data\.imdb\.vocab_sizes\[1\]: expected int"),
        ("data.sine", [1, 2], r"data\.sine: expected a mapping with keys"),
    ],
)
def test_wrong_type_names_the_key(raw_params, key, value, message):
    with pytest.raises(ValueError, match=message):
        build_with(raw_params, key, value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.seed", -1, r"data\.seed: -1 is out of range; it must be at least 0"),
        (
            "data.moons.test_fraction",
            1.0,
            r"data\.moons\.test_fraction: 1\.0 is out of range; it must be less than 1",
        ),
        ("data.moons.noise", -0.1, r"data\.moons\.noise: -0\.1 is out of range"),
        ("data.blobs.centers", 1, r"data\.blobs\.centers: 1 is out of range; it must be at least 2"),
        (
            "data.cats_dogs.dog_class",
            10,
            r"data\.cats_dogs\.dog_class: 10 is out of range; it must be at most 9",
        ),
        ("data.cats_dogs.dog_class", 3, r"data\.cats_dogs\.dog_class: 3 equals cat_class"),
        (
            "data.imdb.vocab_sizes",
            [10000, 10000],
            r"data\.imdb\.vocab_sizes: \[10000, 10000\] must be distinct",
        ),
        (
            "data.imdb.padding",
            "middle",
            r"data\.imdb\.padding: 'middle' is not allowed; use one of pre, post",
        ),
        (
            "data.mirror_accepted_sha256.cifar10",
            "5ee4dd9a",
            r"data\.mirror_accepted_sha256\.cifar10: '5ee4dd9a' is not a SHA-256: use 64 lower-case hex",
        ),
        (
            "data.mirror_accepted_sha256.imdb",
            "AB" * 32,
            r"data\.mirror_accepted_sha256\.imdb: 'ABAB.*' is not a SHA-256",
        ),
    ],
)
def test_bad_value_names_the_key_and_the_rule(raw_params, key, value, message):
    with pytest.raises(ValueError, match=message):
        build_with(raw_params, key, value)


def test_mirror_accepted_sha256_has_one_key_per_downloaded_file_and_accepts_none_by_default(raw_params):
    from dlzoo.data.sources import REMOTE_FILES

    accepted = load_params(PROJECT / "params.yaml").data.mirror_accepted_sha256
    names = [spec.name for spec in dataclasses.fields(accepted)]
    assert names == list(REMOTE_FILES), "one key per download stage item, in REMOTE_FILES' order"
    assert all(getattr(accepted, name) == "" for name in names), "params.yaml accepts no mirror hash"
    with pytest.raises(
        ValueError,
        match=r"unknown key data\.mirror_accepted_sha256\.fashion_mnist; allowed keys here: mnist, cifar10",
    ):
        build_with(raw_params, "data.mirror_accepted_sha256.fashion_mnist", "")


def test_an_accepted_mirror_hash_loads_and_its_read_is_recorded_per_data_set(raw_params):
    digest = "5ee4dd9a9e426886a6b955ee8bd5f5569cacbe9afff2dea8ccccc106a5245e48"
    params = build_with(raw_params, "data.mirror_accepted_sha256.cifar10", digest)
    forget_reads()
    assert params.data.mirror_accepted_sha256.cifar10 == digest
    assert keys_read() == {"data.mirror_accepted_sha256.cifar10"}  # what dvc.yaml declares per item
    forget_reads()


def test_integer_is_accepted_for_a_float(raw_params):
    params = build_with(raw_params, "data.blobs.cluster_std", 2)
    assert params.data.blobs.cluster_std == 2.0
    assert isinstance(params.data.blobs.cluster_std, float)


def test_missing_key_is_an_error_because_params_yaml_sets_every_value(raw_params):
    changed = copy.deepcopy(raw_params)
    del changed["data"]["sine"]["look_back"]
    with pytest.raises(ValueError, match=r"missing key data\.sine\.look_back"):
        build(Params, changed, path="")


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(ValueError, match=r"not found; run from the repository root"):
        load_params(tmp_path / "params.yaml")


def test_empty_params_file_is_rejected(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(ValueError, match=r"params\.yaml: expected a mapping with keys data"):
        load_params(tmp_path / "params.yaml")


def test_unknown_family_lists_the_families(raw_params):
    with pytest.raises(
        ValueError, match=r"experiments\.moons_mlp\.family: 'resnet' is not allowed; use one of mlp, cnn"
    ):
        build_with(raw_params, "experiments.moons_mlp.family", "resnet")


def test_model_block_is_checked_against_its_family(raw_params):
    with pytest.raises(
        ValueError, match=r"unknown key experiments\.moons_mlp\.model\.cell; allowed keys here"
    ):
        build_with(raw_params, "experiments.moons_mlp.model.cell", "lstm")
    with pytest.raises(
        ValueError, match=r"experiments\.imdb_lstm\.model\.cell: 'transformer' is not allowed"
    ):
        build_with(raw_params, "experiments.imdb_lstm.model.cell", "transformer")


def test_experiment_level_rules(raw_params):
    with pytest.raises(
        ValueError, match=r"experiments\.mnist_baseline\.training\.reduce_lr: cannot be combined"
    ):
        build_with(
            raw_params,
            "experiments.mnist_baseline.training.lr_schedule",
            {"decay_steps": 10, "decay_rate": 0.5, "staircase": True},
        )
    with pytest.raises(
        ValueError,
        match=r"moons_mlp\.training\.fine_tune: the mlp family has no fine-tuning phase",
    ):
        build_with(
            raw_params,
            "experiments.moons_mlp.training.fine_tune",
            {"from_layer": 1, "learning_rate": 0.1, "epochs": 1},
        )
    with pytest.raises(ValueError, match=r"experiments\.moons_mlp\.training\.epochs: 0 is out of range"):
        build_with(raw_params, "experiments.moons_mlp.training.epochs", 0)


def test_unknown_experiment_names_the_valid_ones():
    params = load_params(PROJECT / "params.yaml")
    with pytest.raises(ValueError, match=r"unknown experiment 'moons'; valid: scratch_moons, moons_mlp"):
        params.experiment("moons")


def test_every_experiment_names_a_processed_data_set():
    params = load_params(PROJECT / "params.yaml")
    known = {
        "moons",
        "blobs",
        "sine",
        "mnist",
        "cifar10",
        "cats_dogs",
        "imdb/vocab_10000",
        "imdb/vocab_20000",
    }
    assert {experiment.data for experiment in params.experiments.values()} <= known


def test_empty_vocabulary_list_is_rejected(raw_params):
    with pytest.raises(
        ValueError, match=r"data\.imdb\.vocab_sizes: \[\] must be distinct and each at least 4"
    ):
        build_with(raw_params, "data.imdb.vocab_sizes", [])


def test_pretrained_names_weights_the_family_accepts(raw_params):
    with pytest.raises(
        ValueError, match=r"experiments\.moons_mlp\.pretrained: 'mobilenet_v2': the mlp family accepts none$"
    ):
        build_with(raw_params, "experiments.moons_mlp.pretrained", "mobilenet_v2")
    with pytest.raises(
        ValueError, match=r"experiments\.cats_dogs_transfer\.pretrained: the transfer family trains on"
    ):
        build_with(raw_params, "experiments.cats_dogs_transfer.pretrained", "none")
    params = build_with(raw_params, "experiments.cats_dogs_transfer.pretrained", "mobilenet_v2")
    assert params.experiments["cats_dogs_transfer"].pretrained == "mobilenet_v2"


def test_a_stage_records_the_keys_it_reads_not_those_building_read():
    params = load_params(PROJECT / "params.yaml")
    assert keys_read() == set()  # building read every key; load_params forgot it
    experiment = params.experiment("blobs_mlp")  # one looked up by name: the names are not read
    assert experiment.training.batch_size > 0 and params.data.seed >= 0
    assert {"experiments.blobs_mlp.training.batch_size", "data.seed"} <= keys_read()
    assert "experiments" not in keys_read()
    copy = replace(experiment.training, epochs=1)  # a copy keeps recording under the same key
    forget_reads()
    assert copy.epochs == 1 and params.experiment("blobs_mlp").model.activation == "relu"
    assert keys_read() == {"experiments.blobs_mlp.training.epochs", "experiments.blobs_mlp.model.activation"}
    assert "blobs_mlp" in list(params.experiments)
    assert "experiments" in keys_read()  # every name listed: what the stage read is the whole mapping
    forget_reads()
    assert keys_read() == set()
