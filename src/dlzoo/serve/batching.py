"""Dynamic batching: requests for the same model that wait together run as one ONNX Runtime call.

One worker task per model instance takes the oldest waiting request, adds whatever else is
queued (for at most the model's max queue delay, and up to its maximum batch size), runs the
merged batch on a worker thread so the event loop keeps serving, and hands every caller its own
rows back. With a delay of 0 it never waits: it only merges what piled up while the previous
batch ran. At most `max_queue_size` requests wait or run per model; one more is refused at once
(503) rather than queued without end.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from dlzoo.serve.errors import InferenceError
from dlzoo.serve.prometheus import PrometheusMetrics
from dlzoo.serve.sessions import ServedModel


@dataclass
class _Pending:
    batch: np.ndarray
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, model: ServedModel, executor: Executor, metrics: PrometheusMetrics):
        self.model, self.executor, self.metrics = model, executor, metrics
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.in_flight = 0  # requests waiting or running
        self._carried: collections.deque[_Pending] = collections.deque()  # begin the next batches
        self._workers: list[asyncio.Task] = []

    def start(self) -> None:
        if self.model.dynamic_batching:
            self._workers = [
                asyncio.create_task(self._serve(), name=f"batcher-{self.model.name}-{instance}")
                for instance in range(self.model.instances)
            ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    @property
    def alive(self) -> bool:
        """False once a worker has ended: its model can no longer answer (readiness says so)."""
        return not any(worker.done() for worker in self._workers)

    async def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        name = self.model.name
        if not self.alive:
            raise InferenceError(f"model {name} stopped serving (its batcher ended); restart the server", 503)
        if self.in_flight >= self.model.max_queue_size:
            raise InferenceError(
                f"model {name} already has {self.in_flight} requests queued, its limit; retry later", 503
            )
        self.in_flight += 1
        try:
            if not self.model.dynamic_batching:
                return await self._run(batch)
            future = asyncio.get_running_loop().create_future()
            self.queue.put_nowait(_Pending(batch, future))
            return await future
        finally:
            self.in_flight -= 1

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

    async def _next(self) -> _Pending:
        """The oldest request whose caller still waits (timed-out callers cancelled theirs)."""
        while True:
            item = self._carried.popleft() if self._carried else await self.queue.get()
            if not item.future.done():
                return item

    async def _collect(self) -> list[_Pending]:
        first = await self._next()
        pending, rows = [first], len(first.batch)
        deadline = time.perf_counter() + self.model.max_queue_delay_s
        while rows < self.model.max_batch_size:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):  # a queued item stays queued on time-out
                        item = await self.queue.get()
                except TimeoutError:
                    break
            if item.future.done():
                continue
            if rows + len(item.batch) > self.model.max_batch_size:
                self._carried.append(item)  # it starts the next batch
                break
            pending.append(item)
            rows += len(item.batch)
        return pending

    async def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        if len(batch) <= self.model.inline_rows:
            # Cheaper on the loop than a hop to a worker thread and back (two thread wake-ups,
            # about 0.2 ms here): only batches that ran well under a millisecond at warm-up.
            results = self.model.run(batch)
        else:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.model.run, batch)
        self.metrics.inference_seconds.labels(self.model.name).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.model.name).observe(len(batch))
        return results
