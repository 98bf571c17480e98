"""The track stage: each experiment's evaluation and export, added to the MLflow run that trained it.

The run is found by its tags (the experiment name and the SHA-256 of the model file, which DVC
pins) and written to by id, never reopened, so its status and duration stay the training's. The
ONNX file is logged and registered as `dlzoo-<experiment>`. One process does it for every
experiment: MLflow takes seconds to load, and the evaluate and export stages stay free of it
(their outputs depend on their inputs only). An experiment whose results are already in its run
(same metrics and ONNX bytes) is skipped, so a rerun registers no duplicate versions.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric

from dlzoo import onnx_model, repository, track
from dlzoo.records import VARIANTS_FILE, ExportMetadata, Metrics
from dlzoo.store import load_json

SPLITS = ("test", "test_full")
LOGGED_TAG = "dlzoo.logged_results_sha256"  # metrics + ONNX bytes already added to this run


LATENCY_RUNS = 20  # per version and batch size: a rough comparison; bench/variants.py measures properly


def run(
    names: list[str], metrics_dir: Path, exports_dir: Path, plots_dir: Path, variants_dir: Path | None = None
) -> dict[str, str]:
    """{experiment: 'logged' | 'unchanged'} for every experiment (variants: the optimise stage's)."""
    return {
        name: _track(
            name, metrics_dir, exports_dir / name, plots_dir / name, variants_dir and variants_dir / name
        )
        for name in names
    }


def _track(name: str, metrics_dir: Path, export_dir: Path, plots_dir: Path, variants_dir: Path | None) -> str:
    metrics_file = metrics_dir / f"{name}.json"
    onnx_file = export_dir / repository.MODEL_FILE
    metadata = ExportMetadata.read(export_dir / repository.METADATA_FILE)
    digest = hashlib.sha256(metrics_file.read_bytes() + onnx_file.read_bytes()).hexdigest()
    run_id = track.results_run_id(metadata.task, name, metadata.source_sha256)
    client = mlflow.MlflowClient()
    if client.get_run(run_id).data.tags.get(LOGGED_TAG) == digest:
        return "unchanged"
    results = Metrics.read(metrics_file).to_json()
    values = {"onnx_parity_max_abs_diff": metadata.parity.max_abs_diff}
    for split in SPLITS:
        if split in results:
            values |= track.scalar_metrics(split, results[split])
    if variants_dir is not None:
        values |= _variant_values(results.get("variants") or {}, export_dir, variants_dir)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in values.items()])
    client.log_dict(run_id, results, "evaluation/metrics.json")
    client.log_artifacts(run_id, str(plots_dir), artifact_path="evaluation")
    if variants_dir is not None:
        client.log_dict(run_id, load_json(variants_dir / VARIANTS_FILE), "optimise/variants.json")
    client.set_tag(run_id, "dlzoo.cpu_flags", " ".join(onnx_model.cpu_flags()) or "unknown")
    _log_onnx(name, onnx_file, run_id)
    client.set_tag(run_id, LOGGED_TAG, digest)
    return "logged"


def _variant_values(variants: dict, export_dir: Path, variants_dir: Path) -> dict[str, float]:
    """The optimise stage's decisions and test deltas (from metrics), and each served file's speed:
    measured here, not in a stage whose outputs DVC caches (timings differ from run to run)."""
    values = {}
    files = {"fp32": export_dir / repository.MODEL_FILE}
    for kind, scores in variants.items():
        values[f"variant_{kind}_kept"] = float(scores["kept"])
        for key in ("validation_change", "test", "test_change"):
            if scores.get(key) is not None:
                values[f"variant_{kind}_{key}"] = scores[key]
        if scores["kept"]:
            files[kind] = variants_dir / kind / repository.MODEL_FILE
    sample = _sample_input(ExportMetadata.read(export_dir / repository.METADATA_FILE))
    for kind, path in files.items():
        session = onnx_model.session(path)
        for batch in (1, 32):
            timing = onnx_model.latency_ms(session, np.repeat(sample, batch, axis=0), LATENCY_RUNS)
            values |= {f"variant_{kind}_latency_ms_p{q}_batch{batch}": timing[f"p{q}"] for q in (50, 99)}
    return values


def _sample_input(metadata: ExportMetadata) -> np.ndarray:
    shape = [1, *metadata.inputs[0].shape[1:]]
    return np.ones(shape, dtype=np.int32 if metadata.inputs[0].datatype == "INT32" else np.float32)


def _log_onnx(name: str, onnx_file: Path, run_id: str) -> None:
    import onnx
    import onnxruntime

    mlflow.onnx.log_model(
        onnx.load(str(onnx_file)),
        name="onnx",
        registered_model_name=f"dlzoo-{name}",
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        run_id=run_id,  # by id: an active run would be reopened, and its end time moved
    )
