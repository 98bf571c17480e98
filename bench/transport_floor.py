"""The transport floor: what a request costs with tritonclient when the server does no work at all.

`bench/serve.py` reports each path's single-client p50 over raw `session.run`. Part of that
overhead is not the server's to remove: tritonclient building the request and parsing the
answer, the loopback round trip, and the Python ASGI / gRPC stacks. This script measures that
part. It starts, one at a time, two stand-in servers that answer every infer call with a
canned response of the model's output shape and run no model:

- REST: a bare Starlette route on uvicorn (uvloop + httptools, as `dlzoo serve` runs), which
  reads the body and returns a prepared binary-extension answer;
- gRPC: a bare `grpc.aio` server whose ModelInfer returns a prepared `ModelInferResponse`;

and drives them with the same `Client` as `bench/serve.py` (tritonclient at its defaults, one
client, requests back to back). It then starts `dlzoo serve` for the same model and reports,
per protocol, the median p50 of the stand-in, of `dlzoo serve` and of raw `session.run`, over
alternating repetitions. The stand-in's p50 is a lower bound for any Python server with this
client on this machine; `dlzoo serve`'s p50 minus the stand-in's and minus `session.run`'s is
what the server itself adds (parsing, checks, batching, ONNX Runtime's call from Python).

    python bench/transport_floor.py --repository models/repository --model cifar_cnn
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime
import serve as bench_serve
import uvloop

from dlzoo import repository
from dlzoo.records import ExportMetadata


def canned_rest_response(model: str, output: str, values: np.ndarray) -> tuple[bytes, dict]:
    raw = values.astype(np.float32).tobytes()
    header = json.dumps(
        {
            "model_name": model,
            "outputs": [
                {
                    "name": output,
                    "datatype": "FP32",
                    "shape": list(values.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return header + raw, headers


def run_rest_stand_in(port: int, model: str, output: str, values: np.ndarray) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body, headers = canned_rest_response(model, output, values)

    async def infer(request):
        await request.body()
        return Response(body, headers=headers, media_type="application/octet-stream")

    async def ready(request):
        return Response(b"")

    routes = [
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/ready", ready),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")


def run_grpc_stand_in(http_port: int, grpc_port: int, model: str, output: str, values: np.ndarray) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    response = pb.ModelInferResponse(model_name=model)
    response.outputs.add(name=output, datatype="FP32", shape=list(values.shape))
    response.raw_output_contents.append(values.astype(np.float32).tobytes())
    answer = response.SerializeToString()

    async def model_infer(request, context):
        return answer

    async def model_ready(request, context):
        return pb.ModelReadyResponse(ready=True).SerializeToString()

    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            model_infer, request_deserializer=pb.ModelInferRequest.FromString, response_serializer=bytes
        ),
        "ModelReady": grpc.unary_unary_rpc_method_handler(
            model_ready, request_deserializer=pb.ModelReadyRequest.FromString, response_serializer=bytes
        ),
    }

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)]
        )
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        await server.wait_for_termination()

    # wait_ready in serve.py probes HTTP first: answer it from a bare REST stand-in on a thread.
    threading.Thread(target=run_rest_stand_in, args=(http_port, model, output, values), daemon=True).start()
    uvloop.run(main())


def start_stand_in(protocol: str, model: str, output: str, shape: list[int]) -> tuple[subprocess.Popen, str]:
    http_port, grpc_port = bench_serve.free_ports(2)
    command = [sys.executable, __file__, "--stand-in", protocol, "--model", model, "--output", output]
    command += ["--shape", *map(str, shape), "--ports", str(http_port), str(grpc_port)]
    process = subprocess.Popen(command)
    why = bench_serve.wait_ready(process, http_port, grpc_port if protocol == "grpc" else None, model)
    if why:
        bench_serve.stop(process)
        raise RuntimeError(f"the {protocol} stand-in {why}")
    return process, f"127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}"


def start_dlzoo(args: argparse.Namespace) -> tuple[subprocess.Popen, dict[str, str]]:
    http_port, grpc_port = bench_serve.free_ports(2)
    command = [str(args.dlzoo), "serve", "--repository", str(args.repository), "--model", args.model]
    command += ["--host", "127.0.0.1", "--port", str(http_port), "--grpc-port", str(grpc_port)]
    command += ["--log-level", "warning", *args.serve_args]
    process = subprocess.Popen(command)
    why = bench_serve.wait_ready(process, http_port, grpc_port, args.model)
    if why:
        bench_serve.stop(process)
        raise RuntimeError(f"dlzoo serve {why}")
    return process, {"binary": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}


def single_client_p50(
    protocol: str, url: str, model: str, metadata: ExportMetadata, samples, requests: int
) -> float:
    tensor, output = metadata.inputs[0], metadata.outputs[0].name

    def make_client():
        return bench_serve.Client(protocol, url, model, tensor, output)

    return bench_serve.bench_clients(make_client, samples, 1, requests, warmup=20)["p50_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("models/repository"))
    parser.add_argument("--model", default="cifar_cnn")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--dlzoo", type=Path, default=Path(sys.executable).parent / "dlzoo")
    parser.add_argument(
        "--serve-args", nargs=argparse.REMAINDER, default=[], help="further `dlzoo serve` options, last"
    )
    parser.add_argument("--stand-in", choices=["binary", "grpc"], help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stand_in:
        values = np.linspace(0, 1, int(np.prod(args.shape)), dtype=np.float32).reshape(args.shape)
        if args.stand_in == "binary":
            run_rest_stand_in(args.ports[0], args.model, args.output, values)
        else:
            run_grpc_stand_in(*args.ports, args.model, args.output, values)
        return

    args.repository = args.repository.resolve()
    version = args.repository / args.model / repository.VERSION
    metadata = repository.read_metadata(args.repository / args.model)
    session = onnxruntime.InferenceSession(str(version / repository.MODEL_FILE))
    samples = bench_serve.make_inputs(metadata, 64)
    output = metadata.outputs[0]
    output_shape = [1, *output.shape[1:]]

    results: dict[str, dict[str, list[float]]] = {
        protocol: {"stand-in": [], "dlzoo": [], "session.run": []} for protocol in ("binary", "grpc")
    }
    for repetition in range(args.repetitions):
        raw = bench_serve.bench_onnxruntime(session, samples, args.requests)["p50_ms"]
        for protocol in ("binary", "grpc"):
            process, url = start_stand_in(protocol, args.model, output.name, output_shape)
            try:
                results[protocol]["stand-in"].append(
                    single_client_p50(protocol, url, args.model, metadata, samples, args.requests)
                )
            finally:
                bench_serve.stop(process)
        process, urls = start_dlzoo(args)
        try:
            for protocol in ("binary", "grpc"):
                results[protocol]["dlzoo"].append(
                    single_client_p50(protocol, urls[protocol], args.model, metadata, samples, args.requests)
                )
                results[protocol]["session.run"].append(raw)
        finally:
            bench_serve.stop(process)
        print(f"repetition {repetition + 1}/{args.repetitions} done", file=sys.stderr, flush=True)

    print(f"\n{args.model}: single client, {args.requests} requests, {args.repetitions} repetitions")
    print("median p50 ms (min-max)")
    print(f"{'protocol':<8} {'session.run':>18} {'stand-in':>18} {'dlzoo serve':>18} {'server adds':>12}")
    for protocol, columns in results.items():
        medians = {key: float(np.median(values)) for key, values in columns.items()}
        cells = [
            f"{medians[key]:.3f} ({min(columns[key]):.3f}-{max(columns[key]):.3f})"
            for key in ("session.run", "stand-in", "dlzoo")
        ]
        adds = medians["dlzoo"] - medians["stand-in"] - medians["session.run"]
        print(f"{protocol:<8} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} {adds:>12.3f}")


if __name__ == "__main__":
    main()
