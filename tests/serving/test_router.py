"""The router's plan: the cheapest path of a ledger whose recorded error meets max_error, escalation,
methods, bounds and refusals; and the ledger's round trip through a model card."""

import json

import pytest

from pdeserve.operators.card import Ledger, LedgerEntry, ModelCard
from pdeserve.operators.repository import ModelRepository, read_card
from pdeserve.serving import router

SURROGATE = LedgerEntry("surrogate", "", {}, 0.03, 0.02, 0.008)
COARSE = LedgerEntry("rung", "direct LDL^T, grid 17", {"grid": 17}, 0.05, 0.037, 0.0008)
MIDDLE = LedgerEntry("rung", "direct LDL^T, grid 33", {"grid": 33}, 0.022, 0.016, 0.002)
FINE = LedgerEntry("rung", "direct LDL^T, grid 64", {"grid": 64}, 1e-12, 1e-12, 0.012)
REFERENCE = LedgerEntry("reference", "", {}, 0.001, 0.0005, 0.02)
LEDGER = Ledger(64, 0.9, 30, (SURROGATE, COARSE, MIDDLE, FINE, REFERENCE))


def test_auto_takes_the_cheapest_path_that_meets_max_error():
    assert router.plan(0.06, "auto", LEDGER).entry == COARSE
    assert router.plan(0.04, "auto", LEDGER).entry == MIDDLE
    assert router.plan(0.01, "auto", LEDGER).entry == FINE


def test_the_surrogate_answers_when_it_is_cheapest_and_escalates_to_the_cheapest_classical_path():
    ledger = Ledger(64, 0.9, 30, (LedgerEntry("surrogate", "", {}, 0.03, 0.02, 0.0001), MIDDLE, FINE))
    route = router.plan(0.04, "auto", ledger)
    assert route.entry.path == "surrogate" and route.escalation == MIDDLE
    assert router.plan(0.025, "auto", ledger).entry == MIDDLE  # the surrogate's quantile misses it


def test_methods_restrict_the_first_path():
    route = router.plan(0.04, "surrogate", LEDGER)
    assert route.entry == SURROGATE and route.escalation == MIDDLE
    assert router.plan(0.06, "classical", LEDGER).entry == COARSE


def test_measured_costs_replace_the_ledgers():
    costs = {router.path_key(COARSE): 1.0}
    assert router.plan(0.06, "auto", LEDGER, costs).entry == MIDDLE


def test_a_path_not_run_yet_is_costed_as_the_paths_that_ran_compare_with_the_ledger():
    # A ledger measured on a busy machine: grid 8 recorded 7.8 ms, grid 16 8.1 ms; grid 16 answered at
    # 4.4 ms here, so grid 8, never run, is expected at about half its recorded cost and is tried.
    grid8 = LedgerEntry("rung", "grid 8", {"grid": 8}, 0.05, 0.03, 0.0078)
    grid16 = LedgerEntry("rung", "grid 16", {"grid": 16}, 0.0064, 0.004, 0.0081)
    ledger = Ledger(64, 0.9, 30, (grid8, grid16))
    route = router.plan(0.1, "auto", ledger, {router.path_key(grid16): 0.0044})
    assert route.entry == grid8 and route.predicted_seconds == pytest.approx(0.0078 * 0.0044 / 0.0081)
    assert router.plan(0.1, "auto", ledger).entry == grid8
    assert router.plan(0.1, "auto", ledger, {router.path_key(grid8): 0.009}).entry == grid16
    # The surrogate's cost per sample falls with the batch; a classical solve's does not follow it.
    surrogate = LedgerEntry("surrogate", "", {}, 0.03, 0.02, 0.005)
    grid17 = LedgerEntry("rung", "grid 17", {"grid": 17}, 0.05, 0.03, 0.004)
    ledger = Ledger(64, 0.9, 30, (surrogate, grid17))
    assert router.plan(0.06, "auto", ledger, {router.path_key(surrogate): 0.0004}).entry == surrogate


def test_no_classical_work_beyond_the_bounds():
    # Not even the surrogate: an answer whose estimate misses could not be replaced.
    for max_error in (0.06, 0.01):
        with pytest.raises(router.NoRoute, match="limits"):
            router.plan(max_error, "auto", LEDGER, classical=False)


def test_an_error_no_path_reaches_is_refused_with_the_best_reachable():
    with pytest.raises(router.NoRoute, match=r"0\.03 \(surrogate\)"):
        router.plan(0.01, "surrogate", LEDGER)
    floor = Ledger(64, 0.9, 30, (SURROGATE, COARSE, LedgerEntry("reference", "", {}, 0.004, 0.002, 0.02)))
    with pytest.raises(router.NoRoute, match=r"0\.004 \(reference\)"):
        router.plan(0.001, "auto", floor)


def test_costs_are_a_bounded_moving_average():
    costs = router.Costs()
    ledger = COARSE.seconds  # the average starts from the ledger's cost
    costs.update("m", "1", COARSE, 1.5 * ledger * 10, 10)
    first = 0.8 * ledger + 0.2 * 1.5 * ledger
    assert costs.of("m", "1") == {router.path_key(COARSE): pytest.approx(first)}
    costs.update("m", "1", COARSE, 1000.0, 10)  # one slow answer moves it by at most MAX_STEP
    second = 0.8 * first + 0.2 * router.MAX_STEP * first
    assert costs.of("m", "1") == {router.path_key(COARSE): pytest.approx(second)}
    for i in range(router.MAX_COSTS + 5):
        costs.update("m", str(i + 2), COARSE, 1.0, 1)
    assert costs.of("m", "1") == {} and len(costs._seconds) == router.MAX_COSTS


def test_the_ledger_round_trips_through_a_card_and_is_omitted_when_unset(bundled_repo):
    card = read_card(ModelRepository(bundled_repo).resolve("darcy-fno", None)[1]).replace(ledger=None)
    assert "ledger" not in json.loads(card.to_json())
    again = ModelCard.from_json(card.replace(ledger=LEDGER).to_json())
    assert again.ledger == LEDGER
