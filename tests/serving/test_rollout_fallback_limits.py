"""A rollout's classical fallback is bounded in time: past the stream's limit it is answered
DEADLINE_EXCEEDED, and the solve left on the replica's check threads stops within a pass."""

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pdeserve.operators import estimates, load_model
from pdeserve.serving.checks import Checker
from pdeserve.serving.errors import DeadlineExceeded

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def ns_card():
    return load_model(MODELS, "ns-fno").card


def _rollouts(card, samples: int, side: int, passes: int) -> list[estimates.RolloutCheck]:
    """Checks of rollouts from smooth states on ``side`` points after ``passes`` passes."""
    grid = np.linspace(0.0, 1.0, side, endpoint=False)
    start = np.sin(2 * np.pi * grid)[:, None] * np.cos(2 * np.pi * grid)[None, :]
    window = {name: start for name in card.input_names}
    checks = [estimates.start_rollout(card, window) for _ in range(samples)]
    return [estimates.RolloutCheck(c.coarse, c.start, passes) for c in checks]


def test_a_set_stop_ends_the_classical_solve_between_passes(ns_card):
    (check,) = _rollouts(ns_card, 1, 64, 40)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(estimates.RolloutStopped):
        estimates.classical_pass(ns_card, check, stop)  # 41 passes to catch up: stopped on the way
    stop.set()
    with pytest.raises(estimates.RolloutStopped):
        estimates.classical_pass(ns_card, check, stop)


def test_a_fallback_past_the_time_limit_is_refused_and_its_threads_freed(ns_card):
    checker = Checker()
    rollouts = _rollouts(ns_card, 2, 32, 5000)
    outputs = {ns_card.output_names[0]: np.zeros((2, 32, 32))}
    stop = threading.Event()

    async def run() -> None:
        await checker.check_rollout_pass(ns_card, rollouts, outputs, True, 1e-9, stop, seconds=0.5)

    with pytest.raises(DeadlineExceeded, match="classical fallback included"):
        asyncio.run(run())
    stop.set()  # what the stream does when it ends
    started = time.perf_counter()
    # Both check threads were catching up 5001 passes at 32 x 32 (20 s or more each); both take new
    # work within a pass of the stop.
    for future in [checker._pool.submit(time.sleep, 0) for _ in range(2)]:
        future.result(timeout=30)
    freed_s = time.perf_counter() - started
    assert freed_s < 5.0, freed_s
