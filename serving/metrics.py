"""pdeserve's own metrics, exported with Ray's on the metrics port (Ray names them ``ray_pdeserve_*``).

Replicas only: ``ray.serve.metrics`` records through the Ray worker the replica runs in.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Sequence

import grpc
from ray.serve import metrics

# Every metric is per model and version.
MODEL_TAGS = ("model", "version")
# The label of a name the repository does not publish, and of an empty one.
UNKNOWN = "unknown"
EMPTY = "-"


def model_labels(model: str, version: str, published: Sequence[str]) -> tuple[str, str]:
    """The ``model`` and ``version`` labels of a request that names ``model`` and ``version``, where
    ``published`` are the versions the repository has of ``model`` (empty if it has no such model): a
    name only when the repository publishes it, else :data:`UNKNOWN` (each label value is a series of
    its own, and clients, even unauthenticated ones, choose these strings)."""
    return (
        EMPTY if not model else model if published else UNKNOWN,
        EMPTY if not version else version if version in published else UNKNOWN,
    )


class Metrics:
    """The counters and histograms one replica records into."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "pdeserve_requests",
            "inference requests (Solve, ModelInfer, Rollout) by outcome",
            tag_keys=(*MODEL_TAGS, "method", "code"),
        )
        self.latency = metrics.Histogram(
            "pdeserve_request_latency_ms",
            "inference request latency inside the replica (validation, queueing, inference; a whole Rollout)",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            tag_keys=(*MODEL_TAGS, "method"),
        )
        self.batch_size = metrics.Histogram(
            "pdeserve_batch_size",
            "requests stacked per forward pass",
            [1, 2, 4, 8, 16, 32, 64],
            tag_keys=MODEL_TAGS,
        )
        self.forward_passes = metrics.Counter(
            "pdeserve_forward_passes",
            "forward passes (requests / passes = mean batch size)",
            tag_keys=MODEL_TAGS,
        )
        self.load_seconds = metrics.Gauge(
            "pdeserve_model_load_seconds", "time to load a model", tag_keys=MODEL_TAGS
        )
        self.reference_error = metrics.Histogram(
            "pdeserve_reference_relative_l2",
            "relative L2 of the surrogate against the classical solver, when a request asks for it",
            boundaries=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            tag_keys=MODEL_TAGS,
        )

        self.answers = metrics.Counter(
            "pdeserve_answers",
            "answered samples (Rollout: per state) by the path that produced them: surrogate, refined, "
            "classical (refined / all = the refined fraction)",
            tag_keys=(*MODEL_TAGS, "method", "path"),
        )
        self.estimated_error = metrics.Histogram(
            "pdeserve_estimated_relative_l2",
            "estimated relative L2 error of each answered sample, for calibrated models",
            boundaries=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            tag_keys=MODEL_TAGS,
        )

    def answered(
        self, method: str, model: str, version: str, paths: Iterable[str], errors: Iterable[float]
    ) -> None:
        """Count a request's answered samples by ``paths`` and record their estimated ``errors``."""
        tags = {"model": model, "version": version}
        for path, count in collections.Counter(paths).items():
            self.answers.inc(count, tags={**tags, "method": method, "path": path})
        for error in errors:
            self.estimated_error.observe(error, tags=tags)

    def request(self, method: str, model: str, version: str, code: grpc.StatusCode, started: float) -> None:
        """Count one finished inference request, whatever its outcome, and its latency since ``started``
        (``time.perf_counter()`` when it entered the replica); ``model`` and ``version`` are labels
        (:func:`model_labels`)."""
        tags = {"model": model, "version": version, "method": method}
        self.requests.inc(tags={**tags, "code": code.name})
        self.latency.observe((time.perf_counter() - started) * 1e3, tags=tags)
