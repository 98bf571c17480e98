"""The dynamic batcher merges waiting requests into one ONNX Runtime call and splits the answers."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dlzoo.serving.batching import Batcher
from dlzoo.serving.metrics import Metrics
from dlzoo.serving.models import load_model


def batch_sizes(metrics: Metrics, name: str) -> tuple[float, float]:
    """(number of executed batches, samples in them)."""
    count = metrics.registry.get_sample_value("dlzoo_batch_size_count", {"model": name})
    total = metrics.registry.get_sample_value("dlzoo_batch_size_sum", {"model": name})
    return count, total


def run_concurrently(model, sizes: list[int], delay: float, enabled: bool = True):
    metrics = Metrics()
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(size, 2)).astype(np.float32) for size in sizes]

    async def main():
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher(model, executor, metrics, delay, enabled)
            batcher.start()
            try:
                return await asyncio.gather(*(batcher.infer(batch) for batch in batches))
            finally:
                await batcher.stop()

    results = asyncio.run(main())
    for batch, result in zip(batches, results, strict=True):
        np.testing.assert_allclose(result["outputs"], model.run(batch)["outputs"], rtol=1e-6, atol=1e-7)
    return batch_sizes(metrics, model.name)


@pytest.fixture(scope="module")
def model(tiny_repository: Path):
    return load_model(tiny_repository / "mlp_vector")


def test_requests_that_wait_together_run_as_one_batch_and_each_gets_its_rows(model):
    assert run_concurrently(model, [1, 3, 2, 1, 4], delay=0.5) == (1, 11)


def test_a_request_that_would_overflow_the_batch_starts_the_next_one(model):
    small = dataclasses.replace(model, max_batch_size=4)
    assert run_concurrently(small, [3, 3, 1], delay=0.5) == (2, 7)


def test_without_dynamic_batching_every_request_runs_alone(model):
    assert run_concurrently(model, [1, 3, 2], delay=0.5, enabled=False) == (3, 6)
