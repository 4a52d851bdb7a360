"""BatchGate: requests that arrive while a batch is in flight enter the batcher together, and no caller
(finished, failed or cancelled) can leave the gate shut. The live batching test is in
test_serving_features.py."""

from __future__ import annotations

import asyncio

import pytest

from pdeserve.serving.batching import BatchGate


class Batcher:
    """A stand-in for ``@serve.batch``: records which requests were inside together; each call
    finishes when the test releases it."""

    def __init__(self, gate: BatchGate) -> None:
        self.gate = gate
        self.entered: list[int] = []
        self.release = asyncio.Event()

    async def call(self, i: int, fail: bool = False, then=None) -> int:
        """Request ``i``; ``then()`` runs as soon as it leaves the gate, before any other task runs."""

        async def inside() -> int:
            self.entered.append(i)
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
        gate = BatchGate()
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
        batcher.release.set()
        assert await asyncio.gather(*later) == [1, 2, 3, 4, 5]
        assert gate.inside == 0

    asyncio.run(scenario())


def test_a_failed_or_cancelled_caller_never_leaves_the_gate_shut() -> None:
    async def scenario() -> None:
        gate = BatchGate()
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
