"""The HTTP app: Open Inference Protocol v2 REST over every model of the repository.

Models load in the app's lifespan (so tests enter the same startup as the server). Request
bodies are parsed and checked on a worker thread, inference runs through each model's batcher
on worker threads, and every failure becomes `{"error": "..."}`: 4xx for client mistakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.status import HTTP_413_CONTENT_TOO_LARGE

from dlzoo.serving import protocol
from dlzoo.serving.batching import Batcher
from dlzoo.serving.metrics import Metrics
from dlzoo.serving.models import NAME_PATTERN, ServedModel, load_repository
from dlzoo.serving.protocol import InferenceError

LOG = logging.getLogger("dlzoo.serving")
SERVER_NAME = "dlzoo"
INLINE_BYTES = 64 * 1024  # parse and encode on the event loop below this; on a thread above


@dataclass(frozen=True)
class ServeSettings:
    repository: Path
    models: tuple[str, ...] = ()  # empty: every model of the repository
    max_batch_size: int | None = None  # None: each model's own (metadata.json / config.pbtxt)
    max_queue_delay_ms: float = 0.0
    dynamic_batching: bool = True
    max_body_bytes: int = 8 * 1024 * 1024
    threads: int = 4


@dataclass
class _State:
    models: dict[str, ServedModel]
    batchers: dict[str, Batcher]
    metrics: Metrics
    executor: ThreadPoolExecutor


def create_app(settings: ServeSettings, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The app; `models` already loaded (the CLI loads them first to fail fast), else at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = models or load_repository(
            settings.repository, list(settings.models), settings.max_batch_size
        )
        executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="dlzoo-infer")
        metrics = Metrics()
        delay = settings.max_queue_delay_ms / 1000
        batchers = {
            name: Batcher(model, executor, metrics, delay, settings.dynamic_batching)
            for name, model in loaded.items()
        }
        for batcher in batchers.values():
            batcher.start()
        app.state.serving = _State(loaded, batchers, metrics, executor)
        LOG.info("serving %d models: %s", len(loaded), ", ".join(loaded))
        try:
            yield
        finally:
            for batcher in batchers.values():
                await batcher.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="dlzoo", summary="Open Inference Protocol v2 over ONNX Runtime", lifespan=lifespan)
    _add_error_handlers(app)
    _add_routes(app, settings)
    return app


def _state(request: Request) -> _State:
    return request.app.state.serving


def _model(request: Request, name: str, version: str | None) -> ServedModel:
    if not NAME_PATTERN.fullmatch(name):
        raise InferenceError(f"model name {name!r} may hold only letters, digits, '_', '.' and '-'")
    model = _state(request).models.get(name)
    if model is None:
        available = ", ".join(_state(request).models)
        raise InferenceError(f"unknown model {name!r}; available: {available}", status=404)
    if version is not None and version != model.version:
        raise InferenceError(
            f"model {name!r} has no version {version!r}; versions: {model.version}", status=404
        )
    return model


def _add_routes(app: FastAPI, settings: ServeSettings) -> None:
    version = package_metadata.version("dlzoo")

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(request: Request) -> JSONResponse:
        is_ready = bool(getattr(request.app.state, "serving", None) and _state(request).models)
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": version, "extensions": ["classification"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{model_version}")
    async def model_metadata(request: Request, name: str, model_version: str | None = None) -> dict:
        return _model(request, name, model_version).describe()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{model_version}/ready")
    async def model_ready(request: Request, name: str, model_version: str | None = None) -> dict:
        model = _model(request, name, model_version)
        return {"name": model.name, "versions": [model.version], "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{model_version}/infer")
    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        started = time.perf_counter()
        state = _state(request)
        label = name if name in state.models else "unknown"
        try:
            model = _model(request, name, model_version)
            if "inference-header-content-length" in request.headers:
                raise InferenceError(
                    "binary tensor data is not supported; send JSON (tritonclient: binary_data=False)"
                )
            body = await _read_body(request, settings.max_body_bytes)
            parsed = await _off_loop_if_large(len(body), _parse, body, model)
            results = await state.batchers[model.name].infer(parsed.batch)
            payload = await _off_loop_if_large(parsed.batch.size * 8, _encode, model, parsed, results)
        except InferenceError as error:
            state.metrics.requests.labels(label, str(error.status)).inc()
            raise
        except Exception:
            state.metrics.requests.labels(label, "500").inc()
            raise
        state.metrics.requests.labels(label, "200").inc()
        state.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)
        return Response(payload, media_type="application/json")

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(
            _state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


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


async def _off_loop_if_large(size: int, function, *args):
    """Small payloads take well under a millisecond to parse: a thread hop would cost more."""
    if size <= INLINE_BYTES:
        return function(*args)
    return await asyncio.to_thread(function, *args)


def _parse(body: bytes, model: ServedModel) -> protocol.InferRequest:
    return protocol.parse_infer_request(protocol.decode_json(body), model)


def _encode(model: ServedModel, parsed: protocol.InferRequest, results: dict) -> bytes:
    return orjson.dumps(protocol.response(model, parsed, results))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceError)
    async def client_error(request: Request, error: InferenceError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path}"}.get(
            error.status_code, error.detail
        )
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        LOG.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal server error: {type(error).__name__}: {error}"}, status_code=500
        )
