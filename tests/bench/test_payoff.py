"""The payoff benchmark: its quick mode end to end, and its equal-accuracy arithmetic."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from bench_scripts import load, run_quick

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {"darcy", "burgers", "navier-stokes", "helmholtz"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    return run_quick("payoff", tmp_path_factory.mktemp("payoff"))


def test_quick_mode_reports_every_family(quick) -> None:
    results, _ = quick
    assert set(results["families"]) == FAMILIES
    for family, result in results["families"].items():
        assert len(result["resolutions"]) >= 2, family
        assert result["surrogate"]["generation_seconds"] > 0, family
        assert result["surrogate"]["training_seconds"] > 0, family


def test_quick_mode_errors_times_and_fronts(quick) -> None:
    results, _ = quick
    for family, result in results["families"].items():
        for row in result["resolutions"]:
            surrogate = row["surrogate"]
            assert math.isfinite(surrogate["error"]) and surrogate["error"] > 0, family
            assert surrogate["batch1_seconds"] > 0 and surrogate["best_batch_seconds"] > 0, family
            for point in row["points"]:
                assert math.isfinite(point["error"]) and point["seconds"] > 0, (family, point)
            front = row["front"]
            assert len(front) >= 1, family
            costs = [min(p["seconds"], p["batched_seconds"] or math.inf) for p in front]
            errors = [p["error"] for p in front]
            assert costs == sorted(costs), family
            assert all(b < a for a, b in itertools.pairwise(errors)), (family, errors)
            assert errors[0] < row["trivial_error"], family


def test_quick_mode_speedup_and_break_even(quick) -> None:
    results, _ = quick
    for family, result in results["families"].items():
        for row in result["resolutions"]:
            for side in ("batch1", "best_batch"):
                verdict = row[side]
                assert verdict["speedup"] >= 0 and math.isfinite(verdict["speedup"]), family
                assert verdict["bound"] in ("interpolated", "upper", "lower", "no skill"), family
                # no skill exactly when the surrogate is no better than the trivial answer
                assert 0 < row["trivial_error"] <= 1, family
                no_skill = row["surrogate"]["error"] >= row["trivial_error"]
                assert (verdict["bound"] == "no skill") == no_skill, family
                assert verdict["break_even"] == "never" or verdict["break_even"] > 0, family
                # break-even is "never" exactly when the classical front is at least as fast
                assert (verdict["break_even"] == "never") == (verdict["speedup"] <= 1), family


def test_quick_mode_plots_every_family(quick) -> None:
    _, images = quick
    for family in FAMILIES:
        png = images / f"payoff-{family}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", family


def point(payoff, seconds: float, error: float):
    return payoff.Point("m", 8, None, seconds, None, error)


def test_front_keeps_only_points_no_cheaper_point_beats() -> None:
    payoff = load("payoff")
    points = [
        point(payoff, 1.0, 0.1),
        point(payoff, 2.0, 0.2),
        point(payoff, 4.0, 0.01),
        point(payoff, 0.5, 0.3),
    ]
    front = payoff.front(points, lambda p: p.seconds)
    assert [(p.seconds, p.error) for p in front] == [(0.5, 0.3), (1.0, 0.1), (4.0, 0.01)]


def test_equal_accuracy_interpolates_in_log_log_and_counts_break_even() -> None:
    payoff = load("payoff")
    curve = [point(payoff, 1e-3, 1e-1), point(payoff, 1e-1, 1e-3)]
    # error 1e-2 is half-way in log error: time 1e-2 (half-way in log time)
    verdict = payoff.equal_accuracy(curve, lambda p: p.seconds, 1e-2, 2e-3, overhead=80.0)
    assert verdict.bound == "interpolated"
    assert verdict.classical_seconds == pytest.approx(1e-2)
    assert verdict.speedup == pytest.approx(5.0)
    assert verdict.break_even == pytest.approx(80.0 / 8e-3)


def test_equal_accuracy_bounds_outside_the_front_and_never() -> None:
    payoff = load("payoff")
    curve = [point(payoff, 1e-3, 1e-1), point(payoff, 1e-1, 1e-3)]
    worse = payoff.equal_accuracy(curve, lambda p: p.seconds, 0.5, 2e-3, overhead=10.0)
    assert (worse.bound, worse.classical_seconds, worse.break_even) == ("upper", 1e-3, "never")
    assert worse.speedup == pytest.approx(0.5)
    better = payoff.equal_accuracy(curve, lambda p: p.seconds, 1e-4, 2e-3, overhead=10.0)
    assert (better.bound, better.classical_seconds) == ("lower", 1e-1)
    assert better.break_even == pytest.approx(10.0 / (1e-1 - 2e-3))


def test_no_skill_and_answers_worse_than_zero() -> None:
    payoff = load("payoff")
    points = [point(payoff, 1e-3, 1.5), point(payoff, 1e-2, 0.5), point(payoff, 1e-1, 0.05)]
    # the cheapest answer is worse than answering zero: not on the front
    assert [p.error for p in payoff.front(points, lambda p: p.seconds)] == [0.5, 0.05]
    none = payoff.equal_accuracy(points, lambda p: p.seconds, 1.0, 1e-4, overhead=1.0)
    assert (none.bound, none.speedup, none.break_even) == ("no skill", 0.0, "never")
    # skill, but no classical answer better than zero: the costliest point bounds the classical time
    useless = [point(payoff, 1e-3, 1.5), point(payoff, 1e-2, 1.2)]
    bounded = payoff.equal_accuracy(useless, lambda p: p.seconds, 0.3, 1e-3, overhead=1.0)
    assert (bounded.bound, bounded.classical_seconds) == ("lower", 1e-2)
    assert bounded.speedup == pytest.approx(10.0)


def test_answers_no_better_than_the_mean_field_have_no_skill() -> None:
    payoff = load("payoff")
    points = [point(payoff, 1e-3, 0.5), point(payoff, 1e-2, 0.2)]
    assert [p.error for p in payoff.front(points, lambda p: p.seconds, trivial=0.4)] == [0.2]
    verdict = payoff.equal_accuracy(points, lambda p: p.seconds, 0.45, 1e-4, overhead=1.0, trivial=0.4)
    assert (verdict.bound, verdict.speedup, verdict.break_even) == ("no skill", 0.0, "never")
