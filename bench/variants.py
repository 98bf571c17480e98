"""FP32 against its optimised and INT8 variants, for every experiment of a model repository.

For each version an entry serves (1 FP32, 2 graph-optimised, 3 INT8: see dlzoo.repository), it
prints the file's size, the headline test metric that the evaluate stage recorded for it, and the
p50/p99 latency of one ONNX Runtime run at batch 1 and batch 32, in one run, as a Markdown table.
Sessions are made as `dlzoo serve` makes them (every graph optimisation, a fixed thread count);
inputs are all-ones tensors of the model's shape (the speed of these models does not depend on
the values). INT8 speed depends on the CPU's VNNI instructions: the flags are printed first.

    python bench/variants.py [--workspace DIR] [--runs 1000] [--rounds 5] [--threads N] [experiment ...]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import onnxruntime

from dlzoo import onnx_model, repository
from dlzoo.records import METADATA_FILE, MODEL_FILE, ExportMetadata, Metrics
from dlzoo.serve.sessions import default_threads, session_options

BATCHES = (1, 32)


def sample(metadata: ExportMetadata, batch: int) -> np.ndarray:
    tensor = metadata.inputs[0]
    dtype = np.int32 if tensor.datatype == "INT32" else np.float32
    return np.ones((batch, *tensor.shape[1:]), dtype=dtype)


def test_metric(metrics: Metrics | None, kind: str) -> str:
    if metrics is None:
        return "-"
    if kind == "fp32":
        return f"{metrics.headline.value:.4f}"
    scores = (metrics.variants or {}).get(kind)
    if scores is None or scores.test is None:
        return "-"
    return f"{scores.test:.4f} ({scores.test_change:+.4f})"


def measure(entry: Path, runs: int, rounds: int, threads: int) -> dict[str, dict[int, dict[str, float]]]:
    """p50/p99 per version and batch size. The versions take turns, `rounds` times, so that a
    drift of this machine's speed spreads over all of them instead of favouring one."""
    sessions = {
        version: onnxruntime.InferenceSession(
            entry / version / MODEL_FILE, session_options(threads), providers=["CPUExecutionProvider"]
        )
        for version in repository.versions(entry)
    }
    metadata = ExportMetadata.read(entry / repository.VERSION / METADATA_FILE)
    timings = {version: {batch: [] for batch in BATCHES} for version in sessions}
    for _ in range(rounds):
        for version, session in sessions.items():
            for batch in BATCHES:
                count = max(runs // batch // rounds, 10)  # batch 32 costs ~32x batch 1
                timings[version][batch] += onnx_model.timings_ms(session, sample(metadata, batch), count)
    return {
        version: {
            batch: {f"p{q}": float(np.percentile(found, q)) for q in (50, 99)}
            for batch, found in batches.items()
        }
        for version, batches in timings.items()
    }


def rows(entry: Path, metrics: Metrics | None, args: argparse.Namespace) -> list[str]:
    found = []
    timings = measure(entry, args.runs, args.rounds, args.threads)
    fp32_bytes = (entry / repository.VERSION / MODEL_FILE).stat().st_size
    for version, timing in timings.items():
        metadata = ExportMetadata.read(entry / version / METADATA_FILE)
        size = (entry / version / MODEL_FILE).stat().st_size
        cells = [
            entry.name,
            f"{version} {metadata.variant}",
            f"{size / 1024:,.1f} KiB ({size / fp32_bytes:.2f}x)",
            test_metric(metrics, metadata.variant),
            *(f"{timing[batch]['p50']:.3f} / {timing[batch]['p99']:.3f}" for batch in BATCHES),
        ]
        found.append("| " + " | ".join(cells) + " |")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace", type=Path, default=Path("."), help="holds models/repository and metrics"
    )
    parser.add_argument("--runs", type=int, default=1000, help="timed runs at batch 1 (fewer at 32)")
    parser.add_argument("--rounds", type=int, default=5, help="turns the versions take (see measure)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="intra-op threads per session")
    parser.add_argument("experiments", nargs="*", help="default: every entry of the repository")
    args = parser.parse_args()
    root = args.workspace / "models" / "repository"
    names = args.experiments or sorted(path.name for path in root.iterdir() if (path / "1").is_dir())
    flags = " ".join(onnx_model.cpu_flags()) or "unknown"
    runtime = f"ONNX Runtime {onnxruntime.__version__}, {args.threads} threads"
    print(f"{runtime}, {platform.machine()}, CPU flags: {flags}\n")
    columns = ["experiment", "version", "size", "test metric (vs FP32)"]
    columns += [f"ms p50 / p99, batch {batch}" for batch in BATCHES]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---:|---:|---:|---:|")
    for name in names:
        metrics_file = args.workspace / "metrics" / f"{name}.json"
        metrics = Metrics.read(metrics_file) if metrics_file.is_file() else None
        for row in rows(root / name, metrics, args):
            print(row, flush=True)


if __name__ == "__main__":
    main()
