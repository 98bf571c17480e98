"""The report stage: one table of every experiment, to reports/summary.md and the terminal."""

from __future__ import annotations

import os
from pathlib import Path

from dlzoo import repository
from dlzoo.records import Metrics


def rows(names: list[str], metrics_dir: Path, repository_dir: Path, plots_dir: Path, out: Path) -> list[dict]:
    found = []
    for name in names:
        results = Metrics.read(metrics_dir / f"{name}.json")
        entry = repository_dir / name
        metadata = repository.read_metadata(entry)
        model_path = entry / repository.VERSION / repository.MODEL_FILE
        found.append(
            {
                "experiment": label(results),
                "task": results.task,
                "metric": headline_text(results),
                "parameters": f"{metadata.parameters:,}",
                "onnx": f"{model_path.stat().st_size / 1024:.0f} KiB",
                "versions": versions_text(results, repository.versions(entry)),
                "plots": " ".join(
                    f"[{png.stem}]({os.path.relpath(png, out.parent)})"
                    for png in sorted((plots_dir / name).glob("*.png"))
                ),
            }
        )
    return found


def versions_text(results: Metrics, served: list[str]) -> str:
    """The versions served, each with its test headline's change from FP32; the highest answers
    unversioned requests: "1 fp32, 2 optimised +0.0000, 3 int8 -0.0012 (default)"."""
    parts = []
    for version in served:
        kind = next((k for k, v in repository.VERSIONS.items() if v == version), version)
        scores = (results.variants or {}).get(kind)
        change = f" {scores.test_change:+.4f}" if scores and scores.test_change is not None else ""
        parts.append(f"{version} {kind}{change}")
    return ", ".join(parts) + " (default)" if parts else "-"


def label(results: Metrics) -> str:
    """The experiment's name, and what trained if not its recipe: "cats_dogs_transfer (random weights)"."""
    variant = results.training_variant
    return f"{results.experiment} ({variant})" if variant else results.experiment


def headline_text(results: Metrics) -> str:
    """ "accuracy 0.8130 (95% CI 0.7953-0.8295, 2,000 test_full samples)", and the course's smaller
    test set beside it, labelled, where the headline is measured on a larger one."""
    headline = results.headline
    text = f"{headline.metric} {headline.value:.4f}"
    measured_on = f"{headline.samples:,} {headline.split} samples"
    if headline.ci95_low is None:
        text += f" ({measured_on})"
    else:
        text += f" (95% CI {headline.ci95_low:.4f}-{headline.ci95_high:.4f}, {measured_on})"
    if headline.split != "test":
        test = results.test
        low, high = test.accuracy_ci95
        text += f"; {test.accuracy:.4f} on the {test.samples:,} test samples ({low:.4f}-{high:.4f})"
    return text


def comparisons(names: list[str], metrics_dir: Path) -> list[str]:
    """Within each task, whether the best classifier wins beyond both 95% intervals, pair by pair."""
    by_task: dict[str, list[Metrics]] = {}
    for name in names:
        results = Metrics.read(metrics_dir / f"{name}.json")
        if results.headline.ci95_low is not None:
            by_task.setdefault(results.task, []).append(results)
    lines = []
    for task, entries in by_task.items():
        if len(entries) < 2:
            continue
        best, *others = sorted(entries, key=lambda entry: -entry.headline.value)
        for other in others:
            separated = best.headline.ci95_low > other.headline.ci95_high
            verdict = (
                "wins beyond both 95% intervals"
                if separated
                else "is within the noise: the intervals overlap"
            )
            lines.append(
                f"- {task}: {label(best)} {_interval(best)} vs {label(other)} {_interval(other)}, "
                f"{best.headline.samples:,} samples: {label(best)} {verdict}"
            )
    return lines


def _interval(results: Metrics) -> str:
    headline = results.headline
    return f"{headline.value:.4f} ({headline.ci95_low:.4f}-{headline.ci95_high:.4f})"


def render(table: list[dict], profile: str, compared: list[str]) -> str:
    header = [
        "experiment",
        "task",
        "test metric (ONNX)",
        "parameters",
        "ONNX size",
        "versions (test vs FP32)",
        "plots",
    ]
    lines = [
        f"# dlzoo summary ({profile} profile)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table:
        lines.append(
            "| "
            + " | ".join(
                row[key]
                for key in ("experiment", "task", "metric", "parameters", "onnx", "versions", "plots")
            )
            + " |"
        )
    if compared:
        lines += ["", "Comparisons (Wilson 95% intervals of the headline accuracy):", "", *compared]
    return "\n".join(lines) + "\n"


def run(names: list[str], metrics_dir: Path, repository_dir: Path, plots_dir: Path, out: Path) -> str:
    table = rows(names, metrics_dir, repository_dir, plots_dir, out)
    profiles = {Metrics.read(metrics_dir / f"{name}.json").profile for name in names}
    text = render(table, ", ".join(sorted(profiles)), comparisons(names, metrics_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(out)
    return text
