"""Counters add up in the replica and reach Ray at a flush, with the same series; no access log."""

from __future__ import annotations

import time
from types import SimpleNamespace

import grpc
import pytest

from pdeserve.serving import metrics as pdeserve_metrics


class Recorded:
    """A stand-in for a ``ray.serve.metrics`` metric that keeps every record it gets."""

    def __init__(self, name: str, description: str = "", *args, tag_keys=(), **kwargs) -> None:
        self.name, self.tag_keys, self.records = name, tag_keys, []

    def _record(self, value=1.0, tags=None) -> None:
        assert set(tags) == set(self.tag_keys), (self.name, tags)
        self.records.append((value, dict(tags)))

    inc = observe = set = _record


@pytest.fixture
def recorded(monkeypatch) -> pdeserve_metrics.Metrics:
    fake = SimpleNamespace(Counter=Recorded, Histogram=Recorded, Gauge=Recorded)
    monkeypatch.setattr(pdeserve_metrics, "metrics", fake)
    return pdeserve_metrics.Metrics()


def ray_records(counter: pdeserve_metrics.BufferedCounter) -> list:
    return counter._counter.records


def test_counters_reach_ray_only_at_a_flush_summed_per_series(recorded):
    started = time.perf_counter()
    for _ in range(5):
        recorded.request("Solve", "darcy-fno", "2", grpc.StatusCode.OK, started)
        recorded.answered("Solve", "darcy-fno", "2", ["surrogate", "surrogate", "refined"], [0.01, 0.02])
    recorded.request("Solve", "darcy-fno", "2", grpc.StatusCode.INVALID_ARGUMENT, started)
    recorded.forward_passes.inc(3, tags={"model": "darcy-fno", "version": "2"})
    recorded.forward_passes.inc(tags={"model": "darcy-fno", "version": "2"})

    # Histograms record each value at once; counters not at all before the flush.
    assert len(recorded.latency.records) == 6 and len(recorded.estimated_error.records) == 10
    assert [ray_records(c) for c in (recorded.requests, recorded.answers, recorded.forward_passes)] == [
        []
    ] * 3
    assert recorded.requests.pending() == {
        ("darcy-fno", "2", "Solve", "OK"): 5,
        ("darcy-fno", "2", "Solve", "INVALID_ARGUMENT"): 1,
    }

    recorded.flush()
    assert sorted(ray_records(recorded.requests), key=lambda r: r[0]) == [
        (1, {"model": "darcy-fno", "version": "2", "method": "Solve", "code": "INVALID_ARGUMENT"}),
        (5, {"model": "darcy-fno", "version": "2", "method": "Solve", "code": "OK"}),
    ]
    assert sorted(ray_records(recorded.answers), key=lambda r: r[0]) == [
        (5, {"model": "darcy-fno", "version": "2", "method": "Solve", "path": "refined"}),
        (10, {"model": "darcy-fno", "version": "2", "method": "Solve", "path": "surrogate"}),
    ]
    assert ray_records(recorded.forward_passes) == [(4, {"model": "darcy-fno", "version": "2"})]

    # A flush hands over only what came since the last one.
    recorded.flush()
    assert len(ray_records(recorded.requests)) == 2 and recorded.requests.pending() == {}
    recorded.request("ModelInfer", "darcy-fno", "2", grpc.StatusCode.OK, started)
    recorded.flush()
    assert ray_records(recorded.requests)[-1] == (
        1,
        {"model": "darcy-fno", "version": "2", "method": "ModelInfer", "code": "OK"},
    )


def test_bad_increments_fail_at_the_call_and_a_refused_record_does_not_stop_the_flush(recorded, caplog):
    counter = recorded.forward_passes
    with pytest.raises(ValueError, match="positive"):
        counter.inc(0, tags={"model": "m", "version": "1"})
    with pytest.raises(ValueError, match="version"):
        counter.inc(1, tags={"model": "m"})
    with pytest.raises(ValueError, match="labels"):
        counter.add(("m",))
    assert counter.pending() == {}

    counter.add(("bad", "1"))
    counter.add(("good", "1"), 2)
    refuse = counter._counter.inc

    def inc(value, tags):
        if tags["model"] == "bad":
            raise TypeError("refused")
        refuse(value, tags)

    counter._counter.inc = inc
    with caplog.at_level("ERROR", logger="pdeserve"):
        recorded.flush()
    assert ray_records(counter) == [(2, {"model": "good", "version": "1"})]
    assert counter.pending() == {} and "pdeserve_forward_passes" in caplog.text


def test_the_solver_deployment_writes_no_access_log():
    from pdeserve.serving.app import SolverService, app_builder, build_app
    from pdeserve.serving.serve_config import serve_config

    assert SolverService.logging_config["enable_access_log"] is False
    # Both ways the deployment is built: `pdeserve serve` (build_app) and a Serve config (app_builder).
    for app in (build_app("models"), app_builder({"repo": "/models"})):
        config = app._bound_deployment.logging_config
        assert (config["enable_access_log"], config["log_level"]) == (False, "INFO")
    # A logging_config in the Serve config's deployment would replace the code's whole one.
    (deployment,) = serve_config()["applications"][0]["deployments"]
    assert "logging_config" not in deployment
