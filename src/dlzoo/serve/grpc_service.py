"""gRPC: KServe v2's `inference.GRPCInferenceService`, plus Triton's ModelConfig and RepositoryIndex.

The message and service modules are the ones generated in `tritonclient[grpc]` (Triton's
`grpc_service.proto`, a superset of KServe's `grpc_predict_v2.proto` with the same names):
no protoc step, and a process that also imports `tritonclient.grpc` holds one copy of the
`inference.*` descriptors instead of two that clash ("duplicate symbol"). Requests go through
the same checks, batchers and metrics as REST. Outputs are always answered in
`raw_output_contents`, the field tritonclient's `as_numpy` reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import metadata as package_metadata
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dlzoo.serve import protocol, tensors
from dlzoo.serve.errors import InferenceError
from dlzoo.serve.service import EXTENSIONS, SERVER_NAME, InferenceService, off_loop_if_large

LOG = logging.getLogger("dlzoo.serve")
# The typed `contents` field that carries each datatype (InferTensorContents).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class Malformed:
    """A message that did not parse: the method answers INVALID_ARGUMENT, not gRPC's INTERNAL."""

    def __init__(self, error: Exception):
        self.error = error


def _lenient(message_type):
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except DecodeError as error:
            return Malformed(error)

    return parse


def _checked(method):
    async def handle(request, context):
        if isinstance(request, Malformed):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the message does not parse: {request.error}"
            )
        return await method(request, context)

    return handle


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService):
        self.service = service
        self.version = package_metadata.version("dlzoo")

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready())

    async def ModelReady(self, request, context):
        known = request.name in self.service.models
        ready = known and self.service.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        async def answer():
            described = self.service.model(request.name, request.version).describe()
            return pb.ModelMetadataResponse(
                name=described["name"],
                versions=described["versions"],
                platform=described["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["outputs"]],
            )

        return await _answer(context, answer)

    async def ModelConfig(self, request, context):
        async def answer():
            return pb.ModelConfigResponse(config=self.service.model(request.name, request.version).config)

        return await _answer(context, answer)

    async def RepositoryIndex(self, request, context):
        entries = [
            pb.RepositoryIndexResponse.ModelIndex(
                name=name,
                version=version,
                state="READY" if self.service.model_ready(name, version) else "UNAVAILABLE",
            )
            for name, version in self.service.served
            if not request.ready or self.service.model_ready(name, version)
        ]
        return pb.RepositoryIndexResponse(models=entries)

    async def ModelInfer(self, request, context):
        started = time.perf_counter()
        label = self.service.label(request.model_name)
        code = grpc.StatusCode.OK

        async def answer():
            model = self.service.model(request.model_name, request.model_version)
            size = sum(len(raw) for raw in request.raw_input_contents)
            parsed = await off_loop_if_large(size, parse_infer_request, request, model)
            remaining = context.time_remaining()  # the client's deadline, if it set one
            limits = [limit for limit in (parsed.timeout_s, remaining) if limit is not None]
            results = await self.service.infer(model, parsed.batch, min(limits) if limits else None)
            return await off_loop_if_large(
                parsed.batch.size * 8, infer_response, model, request.id, parsed, results
            )

        try:
            response = await _answer(context, answer)
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            self.service.metrics.requests.labels(label, "grpc", name).inc()
        self.service.metrics.request_seconds.labels(label, "grpc").observe(time.perf_counter() - started)
        return response


async def _answer(context: grpc.aio.ServicerContext, answer: Callable[[], Awaitable[Any]]) -> Any:
    """The answer, or the call aborted with the status code the error maps to (never UNKNOWN)."""
    try:
        return await answer()
    except InferenceError as error:
        failure = (error.grpc_code, str(error))
    except Exception:
        LOG.exception("internal error in a gRPC call")
        failure = (grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
    await context.abort(*failure)


def parse_infer_request(request: pb.ModelInferRequest, model) -> protocol.InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per "
            "input, in order, or use typed contents for every input"
        )
    inputs = [_input(tensor, raw[index] if raw else None) for index, tensor in enumerate(request.inputs)]
    batch = protocol.prepare(model, inputs)
    outputs = tuple(
        protocol.requested_output(
            model, output.name, _int_parameter(output.parameters, "classification"), True
        )
        for output in request.outputs
    ) or protocol.all_outputs(model, binary=True)
    timeout = protocol.timeout_seconds(_int_parameter(request.parameters, "timeout", None))
    return protocol.InferRequest(request.id or None, batch, outputs, timeout)


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> protocol.InputTensor:
    shape = list(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise InferenceError(f"input {tensor.name!r}: shape {shape} has a negative dimension")
    if tensor.datatype not in CONTENTS_FIELDS:
        raise InferenceError(
            f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}; "
            f"one of {', '.join(CONTENTS_FIELDS)}"
        )
    typed = getattr(tensor.contents, CONTENTS_FIELDS[tensor.datatype])
    if raw is not None:
        if tensor.HasField("contents"):
            raise InferenceError(f"input {tensor.name!r} has both contents and raw_input_contents; send one")
        return protocol.InputTensor(
            tensor.name, tensor.datatype, shape, tensors.from_bytes(raw, tensor.datatype, shape, tensor.name)
        )
    if not tensor.HasField("contents"):
        raise InferenceError(f"input {tensor.name!r} has neither contents nor raw_input_contents")
    data = list(typed) if tensor.datatype == "BYTES" else np.asarray(typed)
    return protocol.InputTensor(tensor.name, tensor.datatype, shape, data)


def _int_parameter(parameters, key: str, default: Any = 0) -> Any:
    if key not in parameters:
        return default
    parameter = parameters[key]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InferenceError(f"the {key!r} parameter must be an integer, got {kind or 'nothing'}")
    return getattr(parameter, kind)


def infer_response(
    model, request_id: str, parsed: protocol.InferRequest, results: dict
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request_id)
    for tensor in protocol.output_tensors(model, parsed, results):
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.values.shape))
        response.raw_output_contents.append(tensors.to_bytes(tensor.values, tensor.datatype))
    return response


# The methods served; any other (streaming, shared memory, ...) gets gRPC's UNIMPLEMENTED.
METHODS = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelInfer": pb.ModelInferRequest,
    "ModelConfig": pb.ModelConfigRequest,
    "RepositoryIndex": pb.RepositoryIndexRequest,
}


def _handlers(servicer: Servicer) -> grpc.GenericRpcHandler:
    """The service's handlers as the generated code makes them, but with lenient parsing."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _checked(getattr(servicer, name)),
            request_deserializer=_lenient(request_type),
            response_serializer=lambda response: response.SerializeToString(),
        )
        for name, request_type in METHODS.items()
    }
    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)


async def start_server(
    service: InferenceService, host: str, port: int, max_message_bytes: int
) -> grpc.aio.Server:
    """A gRPC server on the running event loop (the one the batchers live on)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    server.add_generic_rpc_handlers([_handlers(Servicer(service))])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}; is it in use?")
    await server.start()
    LOG.info("gRPC on %s:%d", host, bound)
    return server
