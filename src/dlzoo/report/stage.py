"""The report stage: one table of every experiment, to reports/summary.md and the terminal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dlzoo import repository
from dlzoo.export import conversion
from dlzoo.records import ExportMetadata, Metrics

LATENCY_RUNS = 50


def onnx_latency_ms(model_path: Path, metadata: ExportMetadata) -> float:
    """Median ONNX Runtime latency of one sample (batch of 1), after a warm-up run."""
    session = conversion.session(model_path.read_bytes())
    spec = metadata.inputs[0]
    dtype = np.int32 if spec.datatype == "INT32" else np.float32
    sample = np.ones([1, *spec.shape[1:]], dtype=dtype)
    session.run(None, {spec.name: sample})
    timings = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        session.run(None, {spec.name: sample})
        timings.append(time.perf_counter() - started)
    return 1000 * float(np.median(timings))


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
                "latency": f"{onnx_latency_ms(model_path, metadata):.3f} ms",
                "plots": " ".join(
                    f"[{png.stem}]({os.path.relpath(png, out.parent)})"
                    for png in sorted((plots_dir / name).glob("*.png"))
                ),
            }
        )
    return found


def render(table: list[dict], profile: str) -> str:
    header = ["experiment", "task", "test metric", "parameters", "ONNX size", "ORT latency / sample", "plots"]
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
                row[key] for key in ("experiment", "task", "metric", "parameters", "onnx", "latency", "plots")
            )
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
