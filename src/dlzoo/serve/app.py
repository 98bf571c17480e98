"""The HTTP app: Open Inference Protocol v2 REST over every model of the repository, and gRPC beside it.

Models load before the app starts (or in its lifespan, so tests enter the same startup as the
server); the lifespan starts the batchers and, with a gRPC port, the gRPC server on the same
event loop, so both protocols share the sessions, batchers and metrics. Request bodies are
parsed on the loop when small and on a worker thread when large; inference runs through each
model's batcher on worker threads. Every failure becomes `{"error": "..."}`: 4xx for client
mistakes, 503/504 when the server has no capacity now, and a bare "internal error" (the detail
goes to the log) for anything else.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from google.protobuf import json_format
from starlette.exceptions import HTTPException
from starlette.status import HTTP_413_CONTENT_TOO_LARGE

from dlzoo.serve import protocol, schema
from dlzoo.serve.errors import InferenceError
from dlzoo.serve.service import EXTENSIONS, SERVER_NAME, InferenceService, off_loop_if_large
from dlzoo.serve.sessions import Overrides, ServedModel, default_threads, load_repository

LOG = logging.getLogger("dlzoo.serve")
HEADER_LENGTH = "Inference-Header-Content-Length"
# int64/uint64 fields of ModelConfig that protobuf's JSON writes as strings; Triton writes numbers.
_INT64_FIELDS = {"dims", "versions", "max_queue_delay_microseconds", "default_timeout_microseconds"}


@dataclass(frozen=True)
class ServeSettings:
    repository: Path
    models: tuple[str, ...] = ()  # empty: every model of the repository
    overrides: Overrides = field(default_factory=Overrides)
    max_body_bytes: int = 8 * 1024 * 1024
    threads: int = field(default_factory=default_threads)  # session runs at once, over all models
    request_timeout_s: float = 30.0
    grpc_host: str = "127.0.0.1"
    grpc_port: int | None = None  # None: no gRPC server


def create_app(settings: ServeSettings, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The app; `models` already loaded (the CLI loads them first to fail fast), else at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = models or load_repository(settings.repository, list(settings.models), settings.overrides)
        service = InferenceService(loaded, settings.threads, settings.request_timeout_s)
        service.start()
        app.state.service = service
        grpc_server = None
        if settings.grpc_port is not None:
            from dlzoo.serve.grpc_service import start_server

            grpc_server = await start_server(
                service, settings.grpc_host, settings.grpc_port, settings.max_body_bytes
            )
        LOG.info("serving %d models: %s", len(loaded), ", ".join(loaded))
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=1)
            await service.stop()

    app = FastAPI(title="dlzoo", summary="Open Inference Protocol v2 over ONNX Runtime", lifespan=lifespan)
    _add_error_handlers(app)
    _add_health_routes(app)
    _add_model_routes(app)
    _add_infer_route(app, settings)
    _describe_bodies(app)
    return app


def _service(request: Request) -> InferenceService:
    return request.app.state.service


def _add_health_routes(app: FastAPI) -> None:
    version = package_metadata.version("dlzoo")

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", responses={503: {"description": "not ready"}})
    async def ready(request: Request) -> JSONResponse:
        service = getattr(request.app.state, "service", None)
        is_ready = bool(service and service.ready())
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": version, "extensions": EXTENSIONS}

    @app.get(
        "/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus text"}}
    )
    async def metrics(request: Request) -> Response:
        return Response(
            _service(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


def _add_model_routes(app: FastAPI) -> None:
    errors = schema.error_responses(400, 404)

    @app.get("/v2/models/{name}", responses=errors)
    @app.get("/v2/models/{name}/versions/{model_version}", responses=errors)
    async def model_metadata(request: Request, name: str, model_version: str | None = None) -> dict:
        return _service(request).model(name, model_version).describe()

    @app.get("/v2/models/{name}/ready", responses={**errors, 503: {"description": "not ready"}})
    @app.get("/v2/models/{name}/versions/{model_version}/ready", responses=errors)
    async def model_ready(request: Request, name: str, model_version: str | None = None) -> JSONResponse:
        service = _service(request)
        model = service.model(name, model_version)
        is_ready = service.model_ready(model.name, model.version)
        body = {"name": model.name, "versions": [model.version], "ready": is_ready}
        return JSONResponse(body, status_code=200 if is_ready else 503)

    @app.get("/v2/models/{name}/config", responses=errors)
    @app.get("/v2/models/{name}/versions/{model_version}/config", responses=errors)
    async def model_config(request: Request, name: str, model_version: str | None = None) -> dict:
        """Triton's model configuration extension: the ModelConfig being served, as JSON."""
        return config_json(_service(request).model(name, model_version))

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict]:
        service = _service(request)
        return [
            {
                "name": name,
                "version": version,
                "state": "READY" if service.model_ready(name, version) else "UNAVAILABLE",
            }
            for name, version in service.served
        ]


def config_json(model: ServedModel) -> dict:
    return _numbers(json_format.MessageToDict(model.config, preserving_proto_field_name=True))


def _numbers(value, key: str = ""):
    if isinstance(value, dict):
        return {name: _numbers(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item, key) for item in value]
    if key in _INT64_FIELDS and isinstance(value, str):
        return int(value)
    return value


def _add_infer_route(app: FastAPI, settings: ServeSettings) -> None:
    """A plain Starlette route: FastAPI's per-call request handling costs about 0.15 ms here, a
    quarter of a small model's whole request. Its OpenAPI operation is declared in `schema`."""

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        service = _service(request)
        name = request.path_params["name"]
        label = service.label(name)
        try:
            model = service.model(name, request.path_params.get("model_version"))
            body = await _read_body(request, settings.max_body_bytes)
            header_length = request.headers.get(HEADER_LENGTH)
            parsed = await off_loop_if_large(len(body), protocol.parse_rest, body, header_length, model)
            results = await service.infer(model, parsed.batch, parsed.timeout_s)
            size = parsed.batch.size * 8
            payload, json_length = await off_loop_if_large(
                size, protocol.rest_response, model, parsed, results
            )
        except InferenceError as error:
            service.metrics.requests.labels(label, "rest", str(error.status)).inc()
            raise
        except Exception:
            service.metrics.requests.labels(label, "rest", "500").inc()
            raise
        service.metrics.requests.labels(label, "rest", "200").inc()
        service.metrics.request_seconds.labels(label, "rest").observe(time.perf_counter() - started)
        if json_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)}
        )

    for path in schema.INFER_PATHS:
        app.router.add_route(path, infer, methods=["POST"], include_in_schema=False)


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = f"request body over the limit of {limit:,} bytes; send smaller batches"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InferenceError(too_large, HTTP_413_CONTENT_TOO_LARGE)  # before reading any of it
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InferenceError(too_large, HTTP_413_CONTENT_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


def _describe_bodies(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            document["paths"].update(schema.infer_paths())
            document.setdefault("components", {}).setdefault("schemas", {}).update(schema.components())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceError)
    async def client_error(request: Request, error: InferenceError) -> JSONResponse:
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return JSONResponse({"error": str(error)}, status_code=error.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path}"}.get(
            error.status_code, error.detail
        )
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        LOG.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)
