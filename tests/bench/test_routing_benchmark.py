"""The routing benchmark: its quick mode end to end, and its oracle's and summaries' arithmetic."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from bench_scripts import load, run_quick

from pdeserve.operators.surrogate import load_model

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {"darcy", "burgers"}
LEVELS = [0.1, 0.03, 0.01, 0.003]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    return run_quick("routing", tmp_path_factory.mktemp("routing"))


def rows(results: dict):
    for family, result in results["families"].items():
        for row in result["levels"]:
            yield family, result, row


def test_quick_mode_reports_every_family_and_level(quick) -> None:
    results, _ = quick
    assert set(results["families"]) == FAMILIES
    assert results["grpc"]["measured"] is False and results["grpc"]["why_not"]
    for family, result in results["families"].items():
        assert [row["max_error"] for row in result["levels"]] == LEVELS, family
        assert result["ledger"]["coverage"] == 0.9 and result["ledger"]["n_samples"] >= 9, family
        assert result["ledger_origin"].startswith(("the card of", "measured here")), family
    # a bundled model whose newest card has a ledger is routed by that ledger, as the server routes it
    darcy = results["families"]["darcy"]
    version = darcy["provenance"]["source"].rsplit(" v", 1)[1]
    card = load_model(ROOT / "models", "darcy-fno", version).card
    if card.ledger is None:
        assert darcy["ledger_origin"].startswith("measured here"), darcy["ledger_origin"]
    else:
        assert darcy["ledger_origin"] == f"the card of models/darcy-fno v{version}"
        assert darcy["ledger"] == json.loads(json.dumps(dataclasses.asdict(card.ledger)))
    for family, result, row in rows(results):
        n = result["samples"]
        for side in ("router", "always_surrogate", "oracle", "surrogate_first"):
            summary = row[side]
            if summary is None:  # no classical path reaches the level
                assert side == "oracle" and row["oracle_path"] is None, (family, row["max_error"])
                continue
            assert summary["answers"] + summary["refusals"] == n, (family, side)
            assert summary["silently_worse"] >= 0, (family, side)
            if summary["answers"]:
                assert 0 <= summary["coverage"] <= 1, (family, side)
                assert summary["seconds"] > 0 and summary["median_seconds"] > 0, (family, side)
                assert math.isclose(sum(summary["mix"].values()), 1.0), (family, side)
            else:
                assert summary["coverage"] is None and summary["median_seconds"] is None, (family, side)
        # (a) always answers, and (b)'s path meets the level on nine samples in ten by construction
        assert row["always_surrogate"]["answers"] == n, family
        if row["oracle"] is not None:
            assert row["oracle"]["coverage"] >= 0.9, (family, row["max_error"])


def test_quick_mode_counts_agree_with_the_answers(quick) -> None:
    results, _ = quick
    for family, _, row in rows(results):
        level = row["max_error"]
        for side, outcomes in row["outcomes"].items():
            answered = [o for o in outcomes if o["path"] != "refused"]
            if not answered:
                continue
            covered = sum(o["error"] <= level for o in answered) / len(answered)
            worse = sum(
                o["error"] > level and o["estimate"] is not None and o["estimate"] <= level for o in answered
            )
            assert row[side]["coverage"] == pytest.approx(covered), (family, side)
            assert row[side]["silently_worse"] == worse, (family, side)
            assert all(math.isfinite(o["error"]) and o["error"] >= 0 for o in answered), (family, side)


def test_a_level_no_ledger_path_reaches_is_refused_before_any_work(quick) -> None:
    results, _ = quick
    refused = set()
    for family, result, row in rows(results):
        router = row["router"]
        if row["ledger_route"] is None:
            assert router["refusals"] == result["samples"] and router["answers"] == 0, family
            refused.add((family, row["max_error"]))
        else:
            assert router["refusals"] == 0, (family, row["max_error"])
    # The ledger measures every path against a reference solved twice as finely, so it records the
    # reference's own error: darcy-fno's 64-node answers are about 1% off (the coefficient is known at
    # the nodes only), and the tiny Burgers model's paths sit on the 64-point input's floor (about 4%).
    assert {("darcy", 0.003), ("burgers", 0.01), ("burgers", 0.003)} <= refused


def allowed_misses(n: int, share: float = 0.9, risk: float = 0.05) -> int:
    """The fewest answers above the level, of ``n``, that a coverage of exactly ``share`` exceeds with a
    probability below ``risk`` (binomial): 6 of 30, 2 of 6."""
    tail = 1.0
    for k in range(n + 1):
        tail -= math.comb(n, k) * (1 - share) ** k * share ** (n - k)  # P(misses > k)
        if tail < risk:
            return k
    return n


def test_routed_answers_keep_the_ledgers_coverage_up_to_sampling_noise(quick) -> None:
    """The ledger's promise: at least 90% of a level's answers within it (so up to one in ten may be
    above it while its check claims the level: silently worse). On 30 and 6 samples a level keeps it
    unless more answers miss than a coverage of exactly 0.9 would with probability 5%."""
    results, _ = quick
    for family, _, row in rows(results):
        router = row["router"]
        if not router["answers"]:
            continue
        missed = sum(
            o["error"] > row["max_error"] for o in row["outcomes"]["router"] if o["path"] != "refused"
        )
        assert router["silently_worse"] <= missed <= allowed_misses(router["answers"]), (
            family,
            row["max_error"],
            router,
        )


def test_allowed_misses_is_the_binomial_bound() -> None:
    assert [allowed_misses(n) for n in (1, 6, 10, 30)] == [1, 2, 3, 6]


def test_quick_mode_plots_every_family(quick) -> None:
    _, images = quick
    for family in FAMILIES:
        png = images / f"routing-{family}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", family


def candidate(routing, key: str, seconds: float, errors: list[float]):
    entry = routing.LedgerEntry("rung", key, {}, 0.0, 0.0, seconds)
    return routing.Candidate(key, entry, (seconds, 9 * seconds, seconds), tuple(errors))


def test_oracle_takes_the_cheapest_path_within_the_level_on_nine_samples_in_ten() -> None:
    routing = load("routing")
    ten = [0.001] * 9
    paths = [
        candidate(routing, "coarse", 1e-3, [*ten[:8], 0.05, 0.05]),  # 8 of 10 within 0.01
        candidate(routing, "middle", 2e-3, [*ten, 0.05]),  # 9 of 10
        candidate(routing, "fine", 5e-3, [*ten, 0.001]),
        candidate(routing, "finer", 4e-3, [*ten, 0.002]),
    ]
    assert routing.oracle(paths, 0.01).key == "middle"
    assert routing.oracle(paths, 0.1).key == "coarse"
    assert routing.oracle(paths, 0.01, share=1.0).key == "finer"
    assert routing.oracle(paths, 0.0015, share=1.0).key == "fine"  # finer's last sample misses
    assert routing.oracle(paths, 1e-4) is None
    # The true-error column is the oracle's rule: a path meets a level exactly where it is at most it.
    for path in paths:
        for level in (0.0015, 0.01, 0.05):
            assert (routing.quantile(path.errors) <= level) == (routing.oracle([path], level) is not None)


def test_summary_counts_answers_silently_worse_only_where_their_estimate_claimed_the_level() -> None:
    routing = load("routing")
    outcome = routing.Outcome
    outcomes = [
        outcome("surrogate", False, 0.005, 0.02, 0.1),  # claimed within, is not: silently worse
        outcome("rung:direct", True, 0.0, 0.004, 0.3),  # escalated, within
        outcome("rung:direct", True, 0.02, 0.03, 0.2),  # claimed above: worse, not silently
        outcome("surrogate", False, None, 0.5, 0.2),  # no estimate: not silently either
        outcome(routing.REFUSED, False, None, math.nan, math.nan),
    ]
    summary = routing.summarise(outcomes, 0.01)
    assert (summary.answers, summary.refusals, summary.escalations) == (4, 1, 2)
    assert summary.silently_worse == 1
    assert summary.coverage == pytest.approx(0.25)
    assert summary.seconds == pytest.approx(0.2) and summary.median_seconds == pytest.approx(0.2)
    assert summary.mix == {"surrogate": 0.5, "rung:direct": 0.5}
    assert summary.max_error == 0.5
    assert routing.summarise([outcomes[-1]], 0.01).coverage is None
