"""Seldon MLServer as the baseline server of `bench/serve.py`: settings files and its process.

MLServer runs from its own venv (`make mlserver-venv`: MLServer pins an older FastAPI than the
project's) with the minimal ONNX Runtime runtime of `bench/mlserver_onnx.py`, on the same
`model.onnx` as `dlzoo serve`. `parallel_workers: 0` keeps inference in the server process (its
worker pool fails on this Python), debug (and with it the access log) and metrics are off.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_BINARY = BENCH.parent / ".venv-mlserver" / "bin" / "mlserver"
IMPLEMENTATION = "mlserver_onnx.OnnxModel"

# The two configurations compared: MLServer's defaults (no adaptive batching) and adaptive
# batching on (up to 32 requests merged, waiting at most 2 ms for more).
CONFIGS = {
    "MLServer": {},
    "MLServer batching": {"max_batch_size": 32, "max_batch_time": 0.002},
}


def write_settings(
    folder: Path, name: str, model_file: Path, http_port: int, grpc_port: int, metrics_port: int, config: dict
) -> Path:
    """`folder/settings.json` and `folder/<name>/model-settings.json`; returns `folder`."""
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,  # unused: the metrics server is off (no endpoint)
        "metrics_endpoint": None,
        "load_models_at_startup": True,
        "model_repository_root": str(folder),
    }
    model = {
        "name": name,
        "implementation": IMPLEMENTATION,
        "parameters": {"uri": str(Path(model_file).resolve())},
        **config,
    }
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (folder / name / "model-settings.json").write_text(json.dumps(model, indent=2) + "\n")
    return folder


def start(binary: Path, folder: Path, log) -> subprocess.Popen:
    """`mlserver start folder`, with the bench directory (the runtime's module) on its path."""
    env = dict(os.environ)
    # Only this directory: an inherited PYTHONPATH (the project's sources, say) has no business
    # in MLServer's venv. (Hence this module's name: a bench/mlserver.py would shadow MLServer.)
    env["PYTHONPATH"] = str(BENCH)
    env.pop("VIRTUAL_ENV", None)
    return subprocess.Popen(
        [str(binary), "start", str(folder)], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
    )
