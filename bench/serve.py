"""Serving latency and throughput: raw ONNX Runtime vs Keras vs `dlzoo serve`, on the same inputs.

For each model: single-sample `session.run` on the repository's ONNX file, single-sample Keras
`model.predict` on the trained model, then `dlzoo serve` (a subprocess on 127.0.0.1, this model
only) under 1, 8 and 32 concurrent keep-alive HTTP clients, with dynamic batching on and off.
Every path sees the same seeded, model-ready samples. Prints p50/p99 latency, throughput, and
the server's overhead over raw ONNX Runtime. Clients and server share this machine's cores.

    python bench/serve.py --repository models/repository --models-dir models \\
        --model cifar_cnn --model imdb_lstm --model cats_dogs_transfer
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime

from dlzoo import repository


def make_inputs(metadata: dict, count: int, seed: int = 0) -> np.ndarray:
    """`count` model-ready single samples, as the test data look (token ids, pixels, normal noise)."""
    rng = np.random.default_rng(seed)
    tensor = metadata["inputs"][0]
    shape = [count, *tensor["shape"][1:]]
    if tensor["datatype"] == "INT32":
        ids = rng.integers(3, metadata["preprocessing"]["vocab_size"], size=shape)
        return ids.astype(np.int32)
    if metadata["preprocessing"]["type"] == "image":
        return rng.integers(0, 256, size=shape).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


def summarise(latencies: list[float], wall: float) -> dict:
    values = np.array(latencies) * 1000
    return {
        "requests": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "throughput_per_s": len(values) / wall,
    }


def time_calls(call, samples: np.ndarray, warmup: int) -> dict:
    for sample in samples[:warmup]:
        call(sample[None])
    latencies = []
    started = time.perf_counter()
    for sample in samples:
        begin = time.perf_counter()
        call(sample[None])
        latencies.append(time.perf_counter() - begin)
    return summarise(latencies, time.perf_counter() - started)


def bench_onnxruntime(model_file: Path, samples: np.ndarray) -> dict:
    session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    return time_calls(lambda batch: session.run(None, {"inputs": batch}), samples, warmup=20)


def bench_keras(model_dir: Path, samples: np.ndarray) -> dict | None:
    if not (model_dir / "model.keras").is_file():
        return None
    from dlzoo.stages.evaluate import load_trained

    model = load_trained(model_dir)
    return time_calls(lambda batch: model.predict(batch, verbose=0), samples, warmup=5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(root: Path, name: str, batching: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "dlzoo.cli", "serve", "--repository", str(root), "--model", name]
    command += ["--port", str(port), "--log-level", "warning"]
    if not batching:
        command.append("--no-dynamic-batching")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"dlzoo serve failed:\n{process.stderr.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("dlzoo serve did not become ready in 120 s")


def request_bodies(metadata: dict, samples: np.ndarray) -> list[bytes]:
    tensor = metadata["inputs"][0]
    return [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "inputs",
                        "datatype": tensor["datatype"],
                        "shape": [1, *sample.shape],
                        "data": sample.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        for sample in samples
    ]


def bench_server(port: int, name: str, bodies: list[bytes], clients: int, per_client: int) -> dict:
    path = f"/v2/models/{name}/infer"
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for warm in range(3):
            connection.request("POST", path, body=bodies[warm % len(bodies)])
            connection.getresponse().read()
        barrier.wait()
        for request in range(per_client):
            body = bodies[(index * per_client + request) % len(bodies)]
            begin = time.perf_counter()
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - begin)
            if response.status != 200:
                errors.append(response.status)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result = summarise(latencies, time.perf_counter() - started)
    result["errors"] = len(errors)
    return result


def bench_model(args: argparse.Namespace, name: str) -> list[tuple[str, dict]]:
    metadata = repository.read_metadata(args.repository / name)
    samples = make_inputs(metadata, args.samples)
    rows = [
        ("onnxruntime session.run", bench_onnxruntime(args.repository / name / "1" / "model.onnx", samples))
    ]
    keras_result = (
        bench_keras(args.models_dir / name, samples[: args.keras_samples]) if args.models_dir else None
    )
    if keras_result:
        rows.append(("keras model.predict", keras_result))
    bodies = request_bodies(metadata, samples)
    for batching in (True, False):
        process, port = start_server(args.repository, name, batching)
        try:
            for clients in args.clients:
                per_client = max(args.min_requests // clients, 10)
                result = bench_server(port, name, bodies, clients, per_client)
                rows.append((f"server, {clients} clients, batching {'on' if batching else 'off'}", result))
        finally:
            process.terminate()
            process.wait(timeout=30)
    return rows


def print_rows(name: str, rows: list[tuple[str, dict]]) -> None:
    raw = rows[0][1]
    print(f"\n{name}")
    print(f"  {'path':38} {'requests':>8} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'p50/ORT':>8}")
    for label, result in rows:
        ratio = result["p50_ms"] / raw["p50_ms"]
        errors = f"  errors {result['errors']}" if result.get("errors") else ""
        print(
            f"  {label:38} {result['requests']:>8} {result['p50_ms']:>9.3f} {result['p99_ms']:>9.3f} "
            f"{result['throughput_per_s']:>9.1f} {ratio:>7.1f}x{errors}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument(
        "--models-dir", type=Path, default=Path("models"), help="trained Keras models (or '')"
    )
    parser.add_argument(
        "--model", action="append", help="repeatable; default: cifar_cnn, imdb_lstm, cats_dogs_transfer"
    )
    parser.add_argument("--samples", type=int, default=300, help="single-sample runs of ONNX Runtime")
    parser.add_argument("--keras-samples", type=int, default=100, help="single-sample runs of Keras predict")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--min-requests", type=int, default=320, help="requests per client level, split over clients"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    names = args.model or ["cifar_cnn", "imdb_lstm", "cats_dogs_transfer"]
    print(
        f"{os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}; latencies of single-sample requests"
    )
    results = {}
    for name in names:
        rows = bench_model(args, name)
        print_rows(name, rows)
        results[name] = dict(rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
