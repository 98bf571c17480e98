"""What REST and gRPC share: the models, their batchers, metrics, readiness and time limits."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dlzoo.serve.batching import Batcher
from dlzoo.serve.errors import InferenceError
from dlzoo.serve.prometheus import PrometheusMetrics
from dlzoo.serve.sessions import NAME_PATTERN, ServedModel

LOG = logging.getLogger("dlzoo.serve")
SERVER_NAME = "dlzoo"
EXTENSIONS = ["classification", "binary_tensor_data", "model_configuration"]


INLINE_BYTES = 64 * 1024  # parse and encode on the event loop below this; on a thread above


async def off_loop_if_large(size: int, function, *args):
    """Small payloads take well under a millisecond to parse: a thread hop would cost more."""
    if size <= INLINE_BYTES:
        return function(*args)
    return await asyncio.to_thread(function, *args)


class InferenceService:
    def __init__(self, models: dict[str, ServedModel], threads: int, request_timeout_s: float):
        self.models = models  # name -> its default (highest) version, holding the others
        self.served = {
            (model.name, model.version): model
            for default in models.values()
            for model in sorted((*default.others, default), key=lambda model: int(model.version))
        }
        self.request_timeout_s = request_timeout_s
        self.metrics = PrometheusMetrics()
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="dlzoo-infer")
        self.batchers = {
            key: Batcher(model, self.executor, self.metrics) for key, model in self.served.items()
        }

    def start(self) -> None:
        """Starts the batchers on the running event loop."""
        for batcher in self.batchers.values():
            batcher.start()

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> bool:
        return bool(self.models) and all(batcher.alive for batcher in self.batchers.values())

    def model_ready(self, name: str, version: str | None = None) -> bool:
        key = (name, version or self.models[name].version)
        return key in self.batchers and self.batchers[key].alive

    def model(self, name: str, version: str | None = None) -> ServedModel:
        if not NAME_PATTERN.fullmatch(name):
            raise InferenceError(f"model name {name!r} may hold only letters, digits, '_', '.' and '-'")
        model = self.models.get(name)
        if model is None:
            raise InferenceError(f"unknown model {name!r}; available: {', '.join(self.models)}", status=404)
        if not version:
            return model
        if (name, version) not in self.served:
            served = ", ".join(model.versions or (model.version,))
            raise InferenceError(f"model {name!r} has no version {version!r}; versions: {served}", status=404)
        return self.served[(name, version)]

    def label(self, name: str) -> str:
        """The metrics label: unknown names are pooled, so a client cannot grow the label set."""
        return name if name in self.models else "unknown"

    async def infer(
        self, model: ServedModel, batch: np.ndarray, client_timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        """Runs one request through its model's batcher within the server's time limit (or the client's)."""
        limit = min(self.request_timeout_s, client_timeout_s or self.request_timeout_s)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every call in a new task.
            async with asyncio.timeout(limit):
                return await self.batchers[(model.name, model.version)].infer(batch)
        except TimeoutError:
            raise InferenceError(
                f"model {model.name} did not answer within {limit:g} s (queue and compute); retry later "
                "or send smaller batches",
                504,
            ) from None
