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
        headline, full = results.headline, results.test_full
        extra = f" (all {full.samples:,} test: {full.accuracy:.4f})" if full else ""
        found.append(
            {
                "experiment": name,
                "task": results.task,
                "metric": f"{headline.metric} {headline.value:.4f}{extra}",
                "parameters": f"{metadata.parameters:,}",
                "onnx": f"{model_path.stat().st_size / 1024:.0f} KiB",
                "plots": " ".join(
                    f"[{png.stem}]({os.path.relpath(png, out.parent)})"
                    for png in sorted((plots_dir / name).glob("*.png"))
                ),
            }
        )
    return found


def render(table: list[dict], profile: str) -> str:
    header = ["experiment", "task", "test metric (ONNX)", "parameters", "ONNX size", "plots"]
    lines = [
        f"# dlzoo summary ({profile} profile)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table:
        lines.append(
            "| "
            + " | ".join(row[key] for key in ("experiment", "task", "metric", "parameters", "onnx", "plots"))
            + " |"
        )
    return "\n".join(lines) + "\n"


def run(names: list[str], metrics_dir: Path, repository_dir: Path, plots_dir: Path, out: Path) -> str:
    table = rows(names, metrics_dir, repository_dir, plots_dir, out)
    profiles = {Metrics.read(metrics_dir / f"{name}.json").profile for name in names}
    text = render(table, ", ".join(sorted(profiles)))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(out)
    return text
