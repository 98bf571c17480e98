"""The dynamic batcher merges waiting requests into one ONNX Runtime call, splits the answers, and
refuses work past its queue bound instead of queueing without end."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dlzoo.serve.batching import Batcher
from dlzoo.serve.errors import InferenceError
from dlzoo.serve.prometheus import PrometheusMetrics
from dlzoo.serve.sessions import Overrides, load_model


def batch_sizes(metrics: PrometheusMetrics, name: str) -> tuple[float, float]:
    """(number of executed batches, samples in them)."""
    count = metrics.registry.get_sample_value("dlzoo_batch_size_count", {"model": name})
    total = metrics.registry.get_sample_value("dlzoo_batch_size_sum", {"model": name})
    return count, total


def configured(model, **overrides):
    return dataclasses.replace(model, config=Overrides(**overrides).apply(model.config))


def batches_of(model, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.normal(size=(size, *model.input.shape[1:])).astype(np.float32) for size in sizes]


async def with_batcher(model, metrics, work):
    with ThreadPoolExecutor(2) as executor:
        batcher = Batcher(model, executor, metrics)
        batcher.start()
        try:
            return await work(batcher)
        finally:
            await batcher.stop()


def run_concurrently(model, sizes: list[int]):
    metrics, batches = PrometheusMetrics(), batches_of(model, sizes)

    async def work(batcher):
        return await asyncio.gather(*(batcher.infer(batch) for batch in batches))

    results = asyncio.run(with_batcher(model, metrics, work))
    for batch, result in zip(batches, results, strict=True):
        np.testing.assert_allclose(result["outputs"], model.run(batch)["outputs"], rtol=1e-6, atol=1e-7)
    return batch_sizes(metrics, model.name)


@pytest.fixture(scope="module")
def model(tiny_repository: Path):
    return load_model(tiny_repository / "mlp_vector", Overrides())


def test_requests_that_wait_together_run_as_one_batch_and_each_gets_its_rows(model):
    assert run_concurrently(configured(model, max_queue_delay_ms=500), [1, 3, 2, 1, 4]) == (1, 11)


def test_a_request_that_would_overflow_the_batch_starts_the_next_one(model):
    small = configured(model, max_queue_delay_ms=500, max_batch_size=4)
    assert run_concurrently(small, [3, 3, 1]) == (2, 7)


def test_without_dynamic_batching_every_request_runs_alone(model):
    assert run_concurrently(configured(model, dynamic_batching=False), [1, 3, 2]) == (3, 6)


def test_two_instances_share_one_queue_and_lose_no_request(model):
    two = dataclasses.replace(model, config=configured(model, max_queue_delay_ms=1).config)
    two.config.instance_group[0].count = 2
    assert two.instances == 2
    count, samples = run_concurrently(two, [1] * 40)
    assert samples == 40 and count >= 2


def test_a_full_queue_refuses_at_once_with_503_and_serves_what_it_accepted(model):
    bounded = configured(model, max_queue_delay_ms=200, max_queue_size=3)
    batches = batches_of(model, [1] * 5)

    async def work(batcher):
        return await asyncio.gather(*(batcher.infer(batch) for batch in batches), return_exceptions=True)

    results = asyncio.run(with_batcher(bounded, PrometheusMetrics(), work))
    refused = [result for result in results if isinstance(result, InferenceError)]
    assert len(refused) == 2 and all(error.status == 503 for error in refused)
    assert "3 requests queued, its limit; retry later" in str(refused[0])
    assert sum(isinstance(result, dict) for result in results) == 3


def test_a_request_whose_caller_gave_up_is_dropped_not_run(model):
    metrics = PrometheusMetrics()
    slow = configured(model, max_queue_delay_ms=100)

    async def work(batcher):
        abandoned = asyncio.ensure_future(batcher.infer(batches_of(model, [2])[0]))
        await asyncio.sleep(0)
        abandoned.cancel()  # what a request timeout does
        return await batcher.infer(batches_of(model, [1])[0])

    asyncio.run(with_batcher(slow, metrics, work))
    assert batch_sizes(metrics, model.name) == (1, 1)


def test_a_dead_batcher_is_not_alive_and_answers_503(model):
    async def work(batcher):
        for worker in batcher._workers:
            worker.cancel()
        await asyncio.sleep(0)
        assert not batcher.alive
        with pytest.raises(InferenceError, match="stopped serving") as raised:
            await batcher.infer(batches_of(model, [1])[0])
        return raised.value.status

    assert asyncio.run(with_batcher(model, PrometheusMetrics(), work)) == 503


def test_fast_batches_run_on_the_loop_and_slow_ones_on_worker_threads(model):
    assert model.inline_rows >= 1  # the tiny MLP runs in microseconds
    on_threads = dataclasses.replace(configured(model, max_queue_delay_ms=500), inline_rows=0)
    threads_used = []
    original = on_threads.run

    def run(batch):
        threads_used.append(threading.current_thread().name)
        return original(batch)

    object.__setattr__(on_threads, "run", run)
    assert run_concurrently(on_threads, [1, 2]) == (1, 3)
    served, *references = threads_used  # then run_concurrently's own reference runs, in this thread
    assert served.startswith("ThreadPoolExecutor") and references == ["MainThread", "MainThread"]
