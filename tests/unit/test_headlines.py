"""Headlines that can be compared: sample count and a 95% interval, on the largest test set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlzoo.evaluate import scoring
from dlzoo.records import Headline, Metrics
from dlzoo.report import stage as report

CLASSES = ["cat", "dog"]


def _wilson_by_hand(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return centre - half, centre + half


@pytest.mark.parametrize(("successes", "trials"), [(1626, 2000), (82, 100), (50, 100), (200, 200), (0, 7)])
def test_wilson_interval_matches_the_textbook_formula(successes: int, trials: int):
    low, high = scoring.wilson_interval(successes, trials)
    assert (low, high) == pytest.approx(_wilson_by_hand(successes, trials), abs=1e-9)
    assert 0.0 <= low <= successes / trials <= high <= 1.0


def test_a_perfect_score_on_200_samples_is_not_certain():
    low, high = scoring.wilson_interval(200, 200)
    assert high == 1.0 and low == pytest.approx(0.9812, abs=1e-4)


def _scores(correct: int, total: int) -> dict:
    """Real scorer output for a binary classifier that gets `correct` of `total` right."""
    labels = np.arange(total) % 2
    right = np.arange(total) < correct
    predicted = np.where(right, labels, 1 - labels)
    outputs = np.where(predicted == 1, 0.9, 0.1).astype(np.float32)[:, None]
    return scoring.classification_metrics(outputs, labels, CLASSES)


def _metrics(name: str, by_split: dict[str, dict]) -> Metrics:
    return Metrics(
        experiment=name,
        task="cats-vs-dogs",
        problem="binary",
        profile="full",
        headline=Headline(**scoring.headline("binary", by_split)),
        **by_split,
    )


def test_the_headline_is_measured_on_test_full_where_the_data_keep_it_and_carries_n_and_interval():
    by_split = {"test": _scores(82, 100), "test_full": _scores(1626, 2000)}
    headline = scoring.headline("binary", by_split)
    assert headline["split"] == "test_full" and headline["samples"] == 2000
    assert headline["value"] == 0.813
    assert (headline["ci95_low"], headline["ci95_high"]) == pytest.approx(_wilson_by_hand(1626, 2000))
    assert by_split["test"]["accuracy_ci95"] == pytest.approx(list(_wilson_by_hand(82, 100)))
    only_test = scoring.headline("binary", {"test": _scores(82, 100)})
    assert only_test["split"] == "test" and only_test["samples"] == 100
    regression = scoring.headline(
        "regression", {"test": scoring.regression_metrics(np.zeros((4, 1)), np.ones(4))}
    )
    assert regression == {"metric": "mse", "value": 1.0, "split": "test", "samples": 4}


def test_the_report_shows_intervals_labels_the_course_test_set_and_says_who_wins(tmp_path):
    entries = {
        "transfer": {"test": _scores(82, 100), "test_full": _scores(1626, 2000)},
        "scratch": {"test": _scores(66, 100), "test_full": _scores(1300, 2000)},
        "lucky": {"test": _scores(81, 100), "test_full": _scores(1610, 2000)},
    }
    for name, by_split in entries.items():
        _metrics(name, by_split).write(tmp_path / f"{name}.json")
    transfer = Metrics.read(tmp_path / "transfer.json")
    text = report.headline_text(transfer)
    assert text.startswith("accuracy 0.8130 (95% CI 0.7953-0.8295, 2,000 test_full samples)")
    assert "; 0.8200 on the 100 test samples (0.7333-0.8830)" in text
    lines = report.comparisons(list(entries), tmp_path)
    assert len(lines) == 2
    assert any(
        line.startswith("- cats-vs-dogs: transfer 0.8130 (0.7953-0.8295) vs scratch 0.6500")
        and line.endswith("transfer wins beyond both 95% intervals")
        for line in lines
    )
    assert any("vs lucky 0.8050" in line and "within the noise" in line for line in lines)


def test_a_model_trained_as_a_variant_is_named_so_in_the_table_and_the_comparisons(tmp_path):
    entries = {"transfer": _scores(55, 100), "scratch": _scores(50, 100)}
    for name, scores in entries.items():
        metrics = _metrics(name, {"test": scores})
        if name == "transfer":  # the demo: no ImageNet weights, the random-weights variant trained
            metrics = metrics.model_copy(update={"training_variant": "random weights"})
        metrics.write(tmp_path / f"{name}.json")
    assert report.label(Metrics.read(tmp_path / "transfer.json")) == "transfer (random weights)"
    assert report.label(Metrics.read(tmp_path / "scratch.json")) == "scratch"
    (line,) = report.comparisons(list(entries), tmp_path)
    assert line.startswith("- cats-vs-dogs: transfer (random weights) 0.5500")
    assert line.endswith("transfer (random weights) is within the noise: the intervals overlap")
