"""Prometheus metrics per model, in a registry of the app's own (so two apps never share one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class PrometheusMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dlzoo_inference_requests",
            "Inference requests by model, protocol (rest, grpc) and status (HTTP code or gRPC code name)",
            ["model", "protocol", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "dlzoo_inference_request_duration_seconds",
            "Time from receiving an inference request to its response, successful requests",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "dlzoo_queue_duration_seconds",
            "Time a request waited for the dynamic batcher",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "dlzoo_compute_duration_seconds",
            "ONNX Runtime session.run time per executed batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "dlzoo_batch_size",
            "Samples per executed batch (several requests merged by the dynamic batcher)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
