"""Dynamic batching: requests for the same model that wait together run as one ONNX Runtime call.

One worker task per model takes the oldest waiting request, adds whatever else is queued (for at
most `max_queue_delay` seconds, and up to the model's maximum batch size), runs the merged batch
on a worker thread so the event loop keeps serving, and hands every caller its own rows back.
With a delay of 0 it never waits: it only merges what piled up while the previous batch ran.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from dlzoo.serving.metrics import Metrics
from dlzoo.serving.models import ServedModel


@dataclass
class _Pending:
    batch: np.ndarray
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(
        self, model: ServedModel, executor: Executor, metrics: Metrics, max_queue_delay: float, enabled: bool
    ):
        self.model, self.executor, self.metrics = model, executor, metrics
        self.max_queue_delay, self.enabled = max_queue_delay, enabled
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carried: _Pending | None = None
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        if self.enabled:
            self._worker = asyncio.create_task(self._serve(), name=f"batcher-{self.model.name}")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not self.enabled:
            return await self._run(batch)
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(batch, future))
        return await future

    async def _serve(self) -> None:
        while True:
            pending = await self._collect()
            started = time.perf_counter()
            for item in pending:
                self.metrics.queue_seconds.labels(self.model.name).observe(started - item.queued_at)
            try:
                results = await self._run(np.concatenate([item.batch for item in pending]))
            except Exception as error:  # a server fault: every waiting caller gets it, the worker lives on
                for item in pending:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            start = 0
            for item in pending:
                stop = start + len(item.batch)
                if not item.future.done():  # the client may have gone away
                    item.future.set_result({name: values[start:stop] for name, values in results.items()})
                start = stop

    async def _collect(self) -> list[_Pending]:
        first = self._carried or await self.queue.get()
        self._carried = None
        pending, rows = [first], len(first.batch)
        deadline = time.perf_counter() + self.max_queue_delay
        while rows < self.model.max_batch_size:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if rows + len(item.batch) > self.model.max_batch_size:
                self._carried = item  # it starts the next batch
                break
            pending.append(item)
            rows += len(item.batch)
        return pending

    async def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        results = await loop.run_in_executor(self.executor, self.model.run, batch)
        self.metrics.inference_seconds.labels(self.model.name).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.model.name).observe(len(batch))
        return results
