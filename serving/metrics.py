"""pdeserve's own metrics, exported with Ray's on the metrics port (Ray names them ``ray_pdeserve_*``).

Replicas only: ``ray.serve.metrics`` records through the Ray worker the replica runs in.

A Ray metric record costs a few microseconds of the replica's event loop (tag merging and validation,
then the core worker's record), several per request. Counters therefore add up in a dict here and reach
Ray at :meth:`Metrics.flush`, which the replica calls about every second: the exported series are the
same, a second later at most (Ray's agent exports every few seconds anyway). A histogram has no bulk
record (each value adds to its count, sum and bucket), so histograms record each value at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

import grpc
from ray.serve import metrics

logger = logging.getLogger("pdeserve")

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


class BufferedCounter:
    """A Ray counter whose increments add up in this process, per label values, until :meth:`flush`.

    Parameters
    ----------
    name, description : str
        The Ray counter's.
    tag_keys : tuple of str
        Its label names; :meth:`add` takes their values in this order.
    """

    def __init__(self, name: str, description: str, tag_keys: tuple[str, ...]) -> None:
        self.name = name
        self.tag_keys = tag_keys
        self._counter = metrics.Counter(name, description, tag_keys=tag_keys)
        self._pending: dict[tuple[str, ...], float] = {}
        # Recording and flushing share the replica's event loop today; the lock keeps a count from
        # being lost if either ever runs on another thread (it costs well under a microsecond).
        self._lock = threading.Lock()

    def add(self, labels: tuple[str, ...], value: float = 1) -> None:
        """Count ``value`` (positive) for the label values ``labels`` (in :attr:`tag_keys` order)."""
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"a counter increment must be a positive number, got {value!r}")
        if len(labels) != len(self.tag_keys):
            raise ValueError(f"expected values of the labels {self.tag_keys}, got {labels!r}")
        with self._lock:
            self._pending[labels] = self._pending.get(labels, 0) + value

    def inc(self, value: float = 1, tags: dict[str, str] | None = None) -> None:
        """Ray's ``Counter.inc``: count ``value`` for the labels ``tags`` (every tag key, by name)."""
        tags = tags or {}
        missing = [key for key in self.tag_keys if key not in tags]
        if missing:
            raise ValueError(f"missing value for tag key(s): {','.join(missing)}")
        self.add(tuple(tags[key] for key in self.tag_keys), value)

    def pending(self) -> dict[tuple[str, ...], float]:
        """The counts not flushed yet, by label values (a copy)."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> None:
        """Add the counts since the last flush to the Ray counter (one record per label values). A
        record Ray refuses is logged and dropped: it must not stop the flushes of the others."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for labels, value in pending.items():
            try:
                self._counter.inc(value, tags=dict(zip(self.tag_keys, labels, strict=True)))
            except Exception:
                logger.exception("recording %s%s failed", self.name, labels)


class HeldGauge:
    """A Ray gauge whose last value per label values is recorded again at every :meth:`flush`.

    Ray's metrics agent drops a gauge series that no record refreshed within two export intervals (20 s
    by default), so a value recorded once, such as a model's load time, would leave Prometheus before
    most scrapes saw it. A held series stays until the replica stops (a model version the replica has
    unloaded keeps its last load time).

    Parameters
    ----------
    name, description : str
        The Ray gauge's.
    tag_keys : tuple of str
        Its label names; :meth:`set` takes their values by name.
    """

    def __init__(self, name: str, description: str, tag_keys: tuple[str, ...]) -> None:
        self.name = name
        self.tag_keys = tag_keys
        self._gauge = metrics.Gauge(name, description, tag_keys=tag_keys)
        self._held: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def set(self, value: float, tags: dict[str, str]) -> None:
        """Record ``value`` for the labels ``tags`` (every tag key, by name) and hold it."""
        labels = tuple(tags[key] for key in self.tag_keys)
        with self._lock:  # a flush in between cannot record an older value after this one
            self._gauge.set(value, tags=tags)
            self._held[labels] = value

    def flush(self) -> None:
        """Record every held value again, so that its series stays exported."""
        with self._lock:
            for labels, value in self._held.items():
                try:
                    self._gauge.set(value, tags=dict(zip(self.tag_keys, labels, strict=True)))
                except Exception:
                    logger.exception("recording %s%s failed", self.name, labels)


class Metrics:
    """The counters and histograms one replica records into; :meth:`flush` hands the counters' counts
    to Ray (the replica calls it periodically)."""

    def __init__(self) -> None:
        self.requests = BufferedCounter(
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
        self.forward_passes = BufferedCounter(
            "pdeserve_forward_passes",
            "forward passes (requests / passes = mean batch size)",
            tag_keys=MODEL_TAGS,
        )
        self.load_seconds = HeldGauge(
            "pdeserve_model_load_seconds", "time the last load of a model took", tag_keys=MODEL_TAGS
        )
        self.reference_error = metrics.Histogram(
            "pdeserve_reference_relative_l2",
            "relative L2 of the surrogate against the classical solver, when a request asks for it",
            boundaries=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            tag_keys=MODEL_TAGS,
        )

        self.answers = BufferedCounter(
            "pdeserve_answers",
            "answered samples (Rollout: per state) by the path that produced them: surrogate, refined, "
            "classical (refined / all = the refined fraction)",
            tag_keys=(*MODEL_TAGS, "method", "path"),
        )
        self.escalations = BufferedCounter(
            "pdeserve_escalations",
            "samples of a request with max_error first answered by the surrogate whose estimate missed it, "
            "answered again by a classical path",
            tag_keys=MODEL_TAGS,
        )
        self.estimated_error = metrics.Histogram(
            "pdeserve_estimated_relative_l2",
            "estimated relative L2 error of each answered sample, for calibrated models (Rollout: of each "
            "state, accumulated since the request's states)",
            boundaries=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            tag_keys=(*MODEL_TAGS, "method"),
        )

    def flush(self) -> None:
        """Hand every counter's counts since the last flush to Ray, and the gauges' values again."""
        for counter in (self.requests, self.answers, self.forward_passes, self.escalations):
            counter.flush()
        self.load_seconds.flush()

    def answered(
        self, method: str, model: str, version: str, paths: Iterable[str], errors: Iterable[float]
    ) -> None:
        """Count a request's answered samples by ``paths`` and record their estimated ``errors``."""
        for path in paths:
            self.answers.add((model, version, method, path))
        tags = {"model": model, "version": version, "method": method}
        for error in errors:
            self.estimated_error.observe(error, tags=tags)

    def request(self, method: str, model: str, version: str, code: grpc.StatusCode, started: float) -> None:
        """Count one finished inference request, whatever its outcome, and its latency since ``started``
        (``time.perf_counter()`` when it entered the replica); ``model`` and ``version`` are labels
        (:func:`model_labels`)."""
        self.requests.add((model, version, method, code.name))
        tags = {"model": model, "version": version, "method": method}
        self.latency.observe((time.perf_counter() - started) * 1e3, tags=tags)
