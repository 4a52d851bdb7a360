"""BatchGate: requests that arrive while a batch is in flight enter the batcher together, a batch that
leaves holds the gate briefly for its clients' next requests (never a lone client's), and no caller
(finished, failed or cancelled) can leave the gate shut; a stacked batch runs as forward passes of
bounded size that answer what one pass does. The live batching test is in test_serving_features.py,
the live bounds in test_bounds.py."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pdeserve.serving.batching import MAX_HOLD_S, BatchGate, micro_batches


class Batcher:
    """A stand-in for ``@serve.batch``: records which requests were inside together and which the gate
    admitted alone; each call finishes when the test releases it."""

    def __init__(self, gate: BatchGate) -> None:
        self.gate = gate
        self.entered: list[int] = []
        self.alone: list[int] = []
        self.release = asyncio.Event()

    async def call(self, i: int, fail: bool = False, then=None) -> int:
        """Request ``i``; ``then()`` runs as soon as it leaves the gate, before any other task runs."""

        async def inside(alone: bool) -> int:
            self.entered.append(i)
            if alone:
                self.alone.append(i)
            await self.release.wait()
            if fail:
                raise RuntimeError(f"request {i} failed")
            return i

        try:
            return await self.gate.run(inside)
        finally:
            if then is not None:
                then()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_idle_gate_admits_at_once_and_newcomers_enter_together_when_the_batch_leaves() -> None:
    async def scenario() -> None:
        gate = BatchGate(hold_fraction=0)
        batcher = Batcher(gate)
        first = asyncio.create_task(batcher.call(0))
        await _settle()
        assert batcher.entered == [0] and gate.inside == 1
        later = [asyncio.create_task(batcher.call(i)) for i in range(1, 6)]
        await _settle()
        assert batcher.entered == [0]  # waiting at the gate while request 0 is inside
        batcher.release.set()
        batcher.release = asyncio.Event()  # requests 1-5 stay inside until released again
        assert await first == 0
        await _settle()
        assert batcher.entered == [0, 1, 2, 3, 4, 5] and gate.inside == 5  # all five entered at once
        assert batcher.alone == [0]
        batcher.release.set()
        assert await asyncio.gather(*later) == [1, 2, 3, 4, 5]
        assert gate.inside == 0

    asyncio.run(scenario())


def test_a_failed_or_cancelled_caller_never_leaves_the_gate_shut() -> None:
    async def scenario() -> None:
        gate = BatchGate(hold_fraction=0)
        batcher = Batcher(gate)
        # Request 2 is admitted when request 0 leaves and cancelled before it can enter.
        admitted_then_cancelled: asyncio.Task | None = None
        failing = asyncio.create_task(
            batcher.call(0, fail=True, then=lambda: admitted_then_cancelled.cancel())
        )
        await _settle()
        gave_up = asyncio.create_task(batcher.call(1))  # cancelled while waiting
        admitted_then_cancelled = asyncio.create_task(batcher.call(2))
        waiting = asyncio.create_task(batcher.call(3))
        await _settle()
        gave_up.cancel()
        await _settle()
        batcher.release.set()
        with pytest.raises(RuntimeError, match="request 0 failed"):
            await failing
        assert await waiting == 3
        for task in (gave_up, admitted_then_cancelled):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert gate.inside == 0
        assert batcher.entered == [0, 3]
        # The gate is open: a new request enters at once.
        assert await batcher.call(4) == 4

    asyncio.run(scenario())


async def _two_inside(gate: BatchGate, batcher: Batcher) -> list[asyncio.Task]:
    """Requests 1 and 2 inside as one batch (request 0 went through alone first)."""
    first = asyncio.create_task(batcher.call(0))
    await _settle()
    pair = [asyncio.create_task(batcher.call(i)) for i in (1, 2)]
    await _settle()
    batcher.release.set()
    batcher.release = asyncio.Event()
    await first
    await _settle()
    assert gate.inside == 2
    return pair


def test_a_batch_that_leaves_holds_the_gate_until_its_clients_are_back() -> None:
    async def scenario() -> None:
        gate = BatchGate(hold_fraction=0)
        batcher = Batcher(gate)
        pair = await _two_inside(gate, batcher)
        gate.hold_fraction = 1.0  # from now on, hold up to the time a batch spent inside (>= 0.2 s)
        waiting = asyncio.create_task(batcher.call(3))
        await asyncio.sleep(0.2)
        batcher.release.set()
        batcher.release = asyncio.Event()
        assert await asyncio.gather(*pair) == [1, 2]
        # One is waiting and the batch of two that left may come back: held until there are three.
        back = [asyncio.create_task(batcher.call(4))]
        await _settle()
        assert batcher.entered == [0, 1, 2] and gate.inside == 0
        back.append(asyncio.create_task(batcher.call(5)))
        await _settle()
        assert sorted(batcher.entered[3:]) == [3, 4, 5] and gate.inside == 3  # one batch of three
        assert batcher.alone == [0]
        batcher.release.set()
        assert await asyncio.gather(waiting, *back) == [3, 4, 5]

    asyncio.run(scenario())


def test_a_caller_that_gives_up_during_a_hold_neither_prolongs_it_nor_keeps_the_gate_shut() -> None:
    async def scenario() -> None:
        gate = BatchGate(hold_fraction=0)
        batcher = Batcher(gate)
        pair = await _two_inside(gate, batcher)
        gate.hold_fraction = 1.0
        gave_up = asyncio.create_task(batcher.call(3))
        await asyncio.sleep(0.1)
        batcher.release.set()
        batcher.release = asyncio.Event()
        await asyncio.gather(*pair)
        gave_up.cancel()
        await _settle()
        back = [asyncio.create_task(batcher.call(i)) for i in (4, 5)]
        await _settle()
        assert sorted(batcher.entered[3:]) == [4, 5] and gate.inside == 2  # the pair's two are back
        batcher.release.set()
        assert await asyncio.gather(*back) == [4, 5]
        # A hold that ends with nobody but a cancelled caller waiting leaves the gate open.
        batcher.release = asyncio.Event()
        lone = asyncio.create_task(batcher.call(6))
        await _settle()
        waiter = asyncio.create_task(batcher.call(7))
        await asyncio.sleep(0.1)
        batcher.release.set()
        assert await lone == 6
        waiter.cancel()
        await asyncio.sleep(MAX_HOLD_S + 0.05)
        assert gate.inside == 0
        assert await batcher.call(8) == 8 and batcher.alone[-1] == 8

    asyncio.run(scenario())


async def _held_for(batcher: Batcher, first: int, second: int, inside_s: float) -> float:
    """Request ``first`` spends ``inside_s`` inside while ``second`` waits and nobody else comes; how
    long ``second`` is held after ``first`` leaves."""
    loop = asyncio.get_running_loop()
    batcher.release = asyncio.Event()
    leaving = asyncio.create_task(batcher.call(first))
    await _settle()
    held = asyncio.create_task(batcher.call(second))
    await asyncio.sleep(inside_s)
    batcher.release.set()
    batcher.release = asyncio.Event()
    await leaving
    left_at = loop.time()
    await _settle()
    assert batcher.entered[-1] == first  # held: it came before the leave, so it is no returning client
    while batcher.entered[-1] != second:
        await asyncio.sleep(0.005)
    waited = loop.time() - left_at
    batcher.release.set()
    assert await held == second
    return waited


def test_the_hold_ends_after_its_fraction_of_the_batch_time_capped_and_a_lone_client_never_waits() -> None:
    async def scenario() -> None:
        gate = BatchGate(hold_fraction=0.25)
        batcher = Batcher(gate)
        # A lone client: each request fills the quota of its own last batch (one) by itself, so it
        # enters at once although that batch spent 0.1 s inside (a hold of up to 25 ms).
        for i in range(3):
            task = asyncio.create_task(batcher.call(i))
            await _settle()
            assert batcher.entered[-1] == i
            await asyncio.sleep(0.1)
            batcher.release.set()
            batcher.release = asyncio.Event()
            assert await task == i
        waited = await _held_for(batcher, 10, 11, inside_s=0.16)
        assert 0.035 < waited < MAX_HOLD_S, waited  # a quarter of the >= 0.16 s the batch spent inside
        assert batcher.alone == [0, 1, 2, 10, 11]  # the held one came alone: a group of one
        # However long a batch spent inside, the hold ends after MAX_HOLD_S.
        gate.hold_fraction = 1.0
        waited = await _held_for(batcher, 12, 13, inside_s=0.3)
        assert MAX_HOLD_S * 0.8 < waited < MAX_HOLD_S + 0.04, waited

    asyncio.run(scenario())


def test_micro_batches_cover_a_batch_in_order_within_the_point_limit() -> None:
    assert micro_batches(10, 100, max_points=300) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert micro_batches(4, 100, max_points=400) == [slice(0, 4)]
    # A sample above the limit runs alone.
    assert micro_batches(3, 1000, max_points=300) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert micro_batches(1024, 64 * 64) == [slice(i, i + 256) for i in range(0, 1024, 256)]  # MAX_PASS_POINTS


def test_a_split_forward_pass_answers_what_one_pass_does(bundled_repo) -> None:
    from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
    from pdeserve.operators import load_model

    model = load_model(bundled_repo, "darcy-fno")
    rng = np.random.default_rng(4)
    fields = np.stack([darcy_sample(DarcyParameters(), 64, rng)["a"] for _ in range(12)]).astype(np.float32)
    stacked, _ = model.validate({"a": fields})
    parts = micro_batches(len(stacked), 64 * 64, max_points=5 * 64 * 64)
    assert [p.stop - p.start for p in parts] == [5, 5, 2]
    split = np.concatenate([model.forward(stacked[p]) for p in parts])
    np.testing.assert_allclose(split, model.forward(stacked), atol=1e-6, rtol=0)
