"""Serving latency and throughput: raw ONNX Runtime vs `dlzoo serve` vs Seldon MLServer.

Every path runs the same repository `model.onnx` on the same seeded, model-ready single-sample
requests (batch 1):

- `onnxruntime session.run`: one caller, in process, no server;
- `dlzoo serve` (its defaults: dynamic batching on, no queue delay) over REST JSON
  (`tritonclient.http`, `binary_data=False` on inputs and outputs), REST with the binary tensor
  extension (`tritonclient.http` at its defaults) and gRPC (`tritonclient.grpc` at its defaults);
- MLServer 1.7 (`make mlserver-venv`, runtime `bench/mlserver_onnx.py`) at its defaults and
  with adaptive batching (`max_batch_size` 32, `max_batch_time` 2 ms), over REST JSON (MLServer
  has no binary REST) and gRPC.

Method: one server process at a time (started, measured, stopped before the next: an idle
peer skews the numbers), under 1, 8 and 32 concurrent clients: one tritonclient object per
worker thread, each sending its share of requests back to back after a few warm-up requests;
the same client code for every server, so JSON compares with JSON and gRPC with gRPC. The
repetition loop is outside the server loop (rep 1: dlzoo, MLServer, MLServer batching; rep 2:
...), and each cell reports the median over repetitions of p50, p99 and throughput with their
min-max spread, plus each path's single-client p50 over raw `session.run`. Latency is what the
client sees: building the request, (de)serialising, the network round trip and the server.
Clients and servers share this machine's cores. Each path's first answer is checked against
`session.run`; a path that fails (or a server that does not start) is left out of the
tables with the reason, the others go on. (The Keras `predict` row and the batching-off rows of
earlier versions are gone: Keras is not a serving path, and batching off is not a default anyone
ships.) With the defaults (5 repetitions, 200/50/20 requests per client at 1/8/32 clients, three
models, 21 cells and 3 server starts per model and repetition) a run takes roughly 10-20 minutes
on 2 cores.

    python bench/serve.py --repository models/repository --json bench.json
    python bench/serve.py --model imdb_lstm --repetitions 1 --requests 20 5 2 --skip "dlzoo gRPC"
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlserver_setup
import numpy as np
import onnxruntime

from dlzoo import repository
from dlzoo.records import ExportMetadata, TensorInfo

RAW = "onnxruntime session.run"
DLZOO = "dlzoo"
# row label -> (server, protocol); protocol is one of "json", "binary", "grpc"
PATHS = {
    "dlzoo REST JSON": (DLZOO, "json"),
    "dlzoo REST binary": (DLZOO, "binary"),
    "dlzoo gRPC": (DLZOO, "grpc"),
    "MLServer REST JSON": ("MLServer", "json"),
    "MLServer gRPC": ("MLServer", "grpc"),
    "MLServer batching REST JSON": ("MLServer batching", "json"),
    "MLServer batching gRPC": ("MLServer batching", "grpc"),
}


def make_inputs(metadata: ExportMetadata, count: int, seed: int = 0) -> np.ndarray:
    """`count` model-ready single samples, as the test data look (token ids, pixels, normal noise)."""
    rng = np.random.default_rng(seed)
    tensor = metadata.inputs[0]
    shape = [count, *tensor.shape[1:]]
    if tensor.datatype == "INT32":
        ids = rng.integers(3, metadata.preprocessing.vocab_size, size=shape)
        return ids.astype(np.int32)
    if metadata.preprocessing.type == "image":
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


def bench_onnxruntime(session: onnxruntime.InferenceSession, samples: np.ndarray, count: int) -> dict:
    name = session.get_inputs()[0].name
    for sample in samples[:20]:
        session.run(None, {name: sample[None]})
    latencies = []
    started = time.perf_counter()
    for index in range(count):
        begin = time.perf_counter()
        session.run(None, {name: samples[index % len(samples)][None]})
        latencies.append(time.perf_counter() - begin)
    return summarise(latencies, time.perf_counter() - started)


# --- clients: the same tritonclient code for every server ---------------------------------------


class Client:
    """One tritonclient object (create it in the thread that uses it) and one protocol."""

    def __init__(self, protocol: str, url: str, model: str, tensor: TensorInfo, output: str):
        self.protocol, self.model, self.output = protocol, model, output
        self.input_name, self.datatype = tensor.name, tensor.datatype
        if protocol == "grpc":
            import tritonclient.grpc as triton
        else:
            import tritonclient.http as triton
        self.triton = triton
        self.client = triton.InferenceServerClient(url=url)
        # JSON mode sets binary_data=False explicitly; binary REST and gRPC keep the defaults.
        self.options = {"binary_data": False} if protocol == "json" else {}

    def infer(self, sample: np.ndarray) -> np.ndarray:
        batch = sample[None]
        tensor = self.triton.InferInput(self.input_name, list(batch.shape), self.datatype)
        tensor.set_data_from_numpy(batch, **self.options)
        outputs = [self.triton.InferRequestedOutput(self.output, **self.options)]
        return self.client.infer(self.model, [tensor], outputs=outputs).as_numpy(self.output)

    def close(self) -> None:
        self.client.close()


def bench_clients(make_client, samples: np.ndarray, clients: int, per_client: int, warmup: int) -> dict:
    """`clients` worker threads, each with its own client, `per_client` requests back to back."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        mine = []
        client = None
        try:
            client = make_client()
            for request in range(warmup):
                client.infer(samples[(index + request) % len(samples)])
        except Exception as error:
            errors.append(f"warm-up: {error!r}")
        barrier.wait()
        for request in range(per_client if client else 0):
            sample = samples[(index * per_client + request) % len(samples)]
            begin = time.perf_counter()
            try:
                client.infer(sample)
            except Exception as error:
                errors.append(repr(error))
                continue
            mine.append(time.perf_counter() - begin)
        if client:
            client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if not latencies:
        raise RuntimeError(f"every request failed: {errors[0] if errors else 'no requests'}")
    result = summarise(latencies, wall)
    result["errors"] = len(errors)
    if errors:
        result["first_error"] = errors[0]
    return result


# --- servers: one process at a time -------------------------------------------------------------


class ServerFailed(RuntimeError):
    """A server did not start or did not become ready; its paths are left out."""


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_ready(process: subprocess.Popen, port: int, grpc_port: int | None, model: str) -> str | None:
    """None once the model is ready over HTTP (and gRPC), else why not."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode}"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", f"/v2/models/{model}/ready")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.3)
    else:
        return "not ready over HTTP in 180 s"
    if grpc_port is None:
        return None
    import tritonclient.grpc

    client = tritonclient.grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        while time.monotonic() < deadline + 30:
            try:
                if client.is_model_ready(model):
                    return None
            except tritonclient.grpc.InferenceServerException as error:
                if "UNAVAILABLE" not in str(error.status()):
                    return None  # it answers (ModelReady may be unimplemented): up
            if process.poll() is not None:
                return f"exited with {process.returncode}"
            time.sleep(0.3)
    finally:
        client.close()
    return f"HTTP ready but not gRPC on port {grpc_port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Server:
    """One server process for one model: `start()` -> (HTTP port, gRPC port or None), `stop()`."""

    def __init__(self, args: argparse.Namespace, kind: str, model: str, grpc: bool):
        self.args, self.kind, self.model, self.grpc = args, kind, model, grpc

    def start(self) -> tuple[int, int | None]:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        self.log_path = self.folder / "server.log"
        http_port, grpc_port, metrics_port = free_ports(3)
        root = self.args.repository.resolve()
        with self.log_path.open("w") as log:
            if self.kind == DLZOO:
                command = [str(self.args.dlzoo), "serve", "--repository", str(root), "--model", self.model]
                command += ["--host", "127.0.0.1", "--port", str(http_port), "--log-level", "warning"]
                if self.grpc:
                    command += ["--grpc-port", str(grpc_port)]
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            else:
                mlserver_setup.write_settings(
                    self.folder,
                    self.model,
                    root / self.model / "1" / "model.onnx",
                    http_port,
                    grpc_port,
                    metrics_port,
                    mlserver_setup.CONFIGS[self.kind],
                )
                self.process = mlserver_setup.start(self.args.mlserver, self.folder, log)
        why = wait_ready(self.process, http_port, grpc_port if self.grpc else None, self.model)
        if why:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
            raise ServerFailed(f"{self.kind} {why}; its log ends:\n{tail}")
        return http_port, grpc_port if self.grpc else None

    def stop(self) -> None:
        if self.process.poll() is None:
            stop(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


# --- the benchmark ------------------------------------------------------------------------------


def check_answer(client: Client, sample: np.ndarray, expected: np.ndarray) -> str | None:
    """None if the path answers as session.run does, else why not."""
    try:
        answer = client.infer(sample)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    if answer is None or not np.allclose(answer, expected, rtol=1e-4, atol=1e-5):
        return f"answer {answer} differs from session.run's {expected}"
    return None


def bench_model(args: argparse.Namespace, name: str, labels: list[str]) -> tuple[dict, dict]:
    """(results[label][clients] = per-repetition summaries, {label: why it failed})."""
    metadata = repository.read_metadata(args.repository / name)
    tensor = metadata.inputs[0]
    output = metadata.outputs[0].name
    samples = make_inputs(metadata, args.samples)
    model_file = args.repository / name / "1" / "model.onnx"
    session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    expected = session.run([output], {tensor.name: samples[:1]})[0][0]
    servers = list(dict.fromkeys(PATHS[label][0] for label in labels))
    results: dict = {RAW: {1: []}, **{label: {c: [] for c in args.clients} for label in labels}}
    failed: dict[str, str] = {}
    for rep in range(args.repetitions):
        results[RAW][1].append(bench_onnxruntime(session, samples, args.requests[0]))
        for kind in servers:
            mine = [label for label in labels if PATHS[label][0] == kind and label not in failed]
            if not mine:
                continue
            grpc = any(PATHS[label][1] == "grpc" for label in mine)
            server = Server(args, kind, name, grpc)
            try:
                http_port, grpc_port = server.start()
            except ServerFailed as error:
                print(f"  {name}: {kind} FAILED to start, its paths left out: {error}", flush=True)
                failed.update(dict.fromkeys(mine, str(error)))
                continue
            try:
                for label in mine:
                    protocol = PATHS[label][1]
                    port = grpc_port if protocol == "grpc" else http_port

                    def make_client(protocol=protocol, port=port):
                        return Client(protocol, f"127.0.0.1:{port}", name, tensor, output)

                    probe = make_client()
                    failed_why = check_answer(probe, samples[0], expected)
                    probe.close()
                    if failed_why:
                        failed[label] = failed_why
                        print(f"  {name}: {label} FAILED, left out: {failed_why}", flush=True)
                        continue
                    for clients, per_client in zip(args.clients, args.requests, strict=True):
                        try:
                            result = bench_clients(make_client, samples, clients, per_client, args.warmup)
                        except RuntimeError as error:
                            failed[label] = str(error)
                            print(f"  {name}: {label} FAILED, left out: {error}", flush=True)
                            break
                        results[label][clients].append(result)
                        errors = result["errors"]
                        print(
                            f"  rep {rep + 1} {name:18} {label:28} {clients:>2} clients: "
                            f"p50 {result['p50_ms']:8.3f} ms  p99 {result['p99_ms']:8.3f} ms  "
                            f"{result['throughput_per_s']:8.1f} req/s"
                            + (f"  errors {errors}: {result['first_error']}" if errors else ""),
                            flush=True,
                        )
            finally:
                server.stop()
    for label in failed:
        results.pop(label, None)
    return results, failed


METRICS = ("p50_ms", "p99_ms", "throughput_per_s")


def aggregate(reps: list[dict]) -> dict:
    summary = {"repetitions": len(reps), "errors": sum(rep.get("errors", 0) for rep in reps)}
    for metric in METRICS:
        values = [rep[metric] for rep in reps]
        summary[metric] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    return summary


def cell(stat: dict, digits: int) -> str:
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def print_tables(summary: dict, failures: dict) -> None:
    print("\n| model | path | clients | p50 ms (spread) | p99 ms (spread) | req/s (spread) |")
    print("|---|---|---|---|---|---|")
    for name, rows in summary.items():
        for label, levels in rows.items():
            for clients, stat in levels.items():
                errors = f" ({stat['errors']} errors)" if stat["errors"] else ""
                print(
                    f"| {name} | {label}{errors} | {clients} | {cell(stat['p50_ms'], 3)} | "
                    f"{cell(stat['p99_ms'], 3)} | {cell(stat['throughput_per_s'], 0)} |"
                )
    print("\nSingle-client p50 over raw session.run (median p50 - median raw p50):\n")
    print("| model | path | + ms |")
    print("|---|---|---|")
    for name, rows in summary.items():
        raw = rows[RAW][1]["p50_ms"]["median"]
        for label, levels in rows.items():
            if label != RAW and 1 in levels:
                print(f"| {name} | {label} | {levels[1]['p50_ms']['median'] - raw:.3f} |")
    for name, failed in failures.items():
        for label, why in failed.items():
            lines = why.strip().splitlines()
            print(f"\n{name}: {label} left out: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument(
        "--model", action="append", help="repeatable; default: cifar_cnn, imdb_lstm, cats_dogs_transfer"
    )
    parser.add_argument("--repetitions", type=int, default=5, help="alternating repetitions (default 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="default: 1 8 32")
    parser.add_argument(
        "--requests",
        type=int,
        nargs="+",
        default=[200, 50, 20],
        help="requests per client at each --clients level (default: 200 50 20; the raw run uses the first)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="warm-up requests per client and cell")
    parser.add_argument("--samples", type=int, default=512, help="distinct seeded samples, cycled")
    parser.add_argument("--skip-mlserver", action="store_true", help="dlzoo serve only")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=list(PATHS),
        metavar="PATH",
        help="leave a path out (repeatable): " + "; ".join(PATHS),
    )
    parser.add_argument(
        "--dlzoo", type=Path, default=Path(sys.executable).with_name("dlzoo"), help="the dlzoo executable"
    )
    parser.add_argument(
        "--mlserver", type=Path, default=mlserver_setup.DEFAULT_BINARY, help="make mlserver-venv"
    )
    parser.add_argument("--json", type=Path, help="also write the results (every repetition) here")
    args = parser.parse_args()
    if len(args.requests) != len(args.clients):
        parser.error("--requests needs one count per --clients level")
    labels = [label for label in PATHS if label not in args.skip]
    if args.skip_mlserver:
        labels = [label for label in labels if PATHS[label][0] == DLZOO]
    if any(PATHS[label][0] != DLZOO for label in labels) and not args.mlserver.is_file():
        parser.error(f"no MLServer at {args.mlserver}: run `make mlserver-venv` or pass --skip-mlserver")
    names = args.model or ["cifar_cnn", "imdb_lstm", "cats_dogs_transfer"]
    environment = {
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "mlserver": None
        if args.skip_mlserver
        else subprocess.run([args.mlserver, "--version"], capture_output=True, text=True).stdout.strip(),
    }
    print(f"{environment}; single-sample requests; {args.repetitions} repetitions", flush=True)
    raw_results, summary, failures = {}, {}, {}
    for name in names:
        raw_results[name], failures[name] = bench_model(args, name, labels)
        summary[name] = {
            label: {clients: aggregate(reps) for clients, reps in levels.items()}
            for label, levels in raw_results[name].items()
        }
    print_tables(summary, failures)
    if args.json:
        config = {key: value for key, value in vars(args).items() if key != "json"}
        document = {
            "environment": environment,
            "config": config,
            "summary": summary,
            "failures": failures,
            "runs": raw_results,
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
