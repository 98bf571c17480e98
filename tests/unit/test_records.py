"""The typed files between stages: what they accept, what they refuse, and how they round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlzoo.data.splits import INFO_FILE, load_info, write_splits
from dlzoo.evaluate import scoring
from dlzoo.records import SUMMARY_FILE, DataInfo, Headline, Metrics, RecordError, TrainSummary

BASE_INFO = {
    "dataset": "toy",
    "profile": "demo",
    "stand_in": False,
    "source": {"generator": "the test"},
    "problem": "multiclass",
    "classes": ["a", "b", "c"],
}


def toy_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    splits = {
        name: (rng.normal(size=(12, 2)).astype(np.float32), np.arange(12) % 3) for name in ("train", "test")
    }
    write_splits(tmp_path, splits, BASE_INFO)
    return tmp_path


def test_write_splits_validates_and_load_info_reads_the_same_record(tmp_path):
    written = write_splits(
        tmp_path, {"train": (np.zeros((4, 2), np.float32), np.array([0, 1, 2, 0]))}, BASE_INFO
    )
    assert load_info(tmp_path) == written
    assert written.splits["train"].class_counts == {"a": 2, "b": 1, "c": 1}
    assert written.input is None and "input" not in json.loads((tmp_path / INFO_FILE).read_text())


def test_a_writer_that_misspells_a_field_fails_where_it_writes(tmp_path):
    with pytest.raises(ValueError, match="tsak"):
        write_splits(tmp_path, {"train": (np.zeros((1, 2)), np.zeros(1, int))}, {**BASE_INFO, "tsak": "x"})
    assert not (tmp_path / INFO_FILE).exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda info: info.pop("profile"), "profile"),
        (lambda info: info.update(problem="classification"), "problem"),
        (lambda info: info.update(task="multiclass_classification"), "task"),  # the pre-glossary key
        (lambda info: info["splits"]["train"].update(count="twelve"), "splits.train.count"),
    ],
)
def test_a_file_that_does_not_match_names_itself_the_field_and_the_fix(tmp_path, change, named):
    data_dir = toy_data(tmp_path)
    info = json.loads((data_dir / INFO_FILE).read_text())
    change(info)
    (data_dir / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(RecordError) as raised:
        load_info(data_dir)
    message = str(raised.value)
    assert str(data_dir / INFO_FILE) in message and named in message and "rerun the stage" in message


def test_a_missing_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(RecordError, match=f"{tmp_path / SUMMARY_FILE} is missing: run the stage"):
        TrainSummary.read(tmp_path / SUMMARY_FILE)


def test_metrics_from_the_real_scorers_round_trip_with_absent_fields_left_absent(tmp_path):
    labels = np.array([0, 1, 2, 1, 0, 2])
    outputs = np.eye(3)[[0, 1, 1, 1, 0, 2]].astype(np.float32)
    scores = scoring.classification_metrics(outputs, labels, ["a", "b", "c"])
    headline = scoring.headline("multiclass", {"test": scores})
    metrics = Metrics(
        experiment="toy",
        task="toy",
        problem="multiclass",
        profile="demo",
        test=scores,
        headline=Headline(**headline),
    )
    metrics.write(tmp_path / "toy.json")
    on_disk = json.loads((tmp_path / "toy.json").read_text())
    assert on_disk["test"] == scores  # every score, the "f1-score" spelling of scikit-learn included
    assert "test_full" not in on_disk and "roc_auc" not in on_disk["test"]  # multiclass: no ROC AUC
    assert Metrics.read(tmp_path / "toy.json") == metrics
    assert metrics.test.per_class["b"].f1_score == scores["per_class"]["b"]["f1-score"]


def test_a_null_that_means_something_stays_null(tmp_path):
    info = write_splits(
        tmp_path,
        {"train": (np.zeros((3, 4), np.float32), np.zeros(3, np.float32))},
        {**BASE_INFO, "problem": "regression", "classes": None},
    )
    assert json.loads((tmp_path / INFO_FILE).read_text())["classes"] is None
    assert DataInfo.read(tmp_path / INFO_FILE) == info
