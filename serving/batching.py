"""Admission to ``@serve.batch``: requests that arrive while a batch is in flight join the next one together.

Since ray-project/ray#53096 (concurrent batches), a ``@serve.batch`` queue forms its next batch as soon as the
previous one is handed off, not when it finishes: with no wait, each request that arrives during a
forward pass becomes a batch of its own or nearly so and queues for the pass after it; a wait long
enough to gather them adds that wait to every batch-1 request.
``BatchGate`` restores opportunistic batching: while any request is inside the batcher, newcomers wait
at the gate, and when the last one leaves, all of them enter at once and form one batch (up to the
batcher's ``max_batch_size``). A request to an idle gate starts at once, and the gate tells its caller
that it is alone, since nobody can join its batch: the caller may skip the batcher's queue.

Closed-loop clients (each sends its next request when the last is answered) split into cohorts that
never merge again: a straggler that missed a batch runs alone while the others wait, then they run while
it waits, and the cohorts keep taking turns. So when a batch leaves, the gate stays shut for a short
hold, until as many new requests as that batch had have arrived (its clients coming back with their
next requests), for at most ``hold_fraction`` of the time the batch spent inside and never more than
``MAX_HOLD_S``. A lone client fills its own quota of one at once and never waits.
Other newcomers during a hold wait up to its end: the hold pays off for closed-loop clients, and costs
open-loop traffic at most that fraction of a pass.

However many requests a batch stacks, each forward pass covers at most ``MAX_PASS_POINTS`` grid points
(``micro_batches``): one large request cannot exhaust a replica's memory and fail every request
stacked with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
# Returning clients take a few ms; a batch that spent long inside (queued behind a model load, say)
# must not hold the next one for a tenth of that.
MAX_HOLD_S = 0.05
# Most grid points (samples x points per sample) of one forward pass: a network's activations grow
# with them (tens of channels per point), so a stacked batch runs as passes of at most this many.
MAX_PASS_POINTS = 2**20


def micro_batches(samples: int, points_per_sample: int, max_points: int = MAX_PASS_POINTS) -> list[slice]:
    """Consecutive slices of a batch of ``samples`` with at most ``max_points`` grid points each (a
    sample larger than that alone in its slice).

    Parameters
    ----------
    samples : int
        Samples in the stacked batch.
    points_per_sample : int
        Grid points of one sample.
    max_points : int
        Most grid points of one slice.
    """
    per_pass = max(1, max_points // max(1, points_per_sample))
    return [slice(start, min(start + per_pass, samples)) for start in range(0, samples, per_pass)]


class BatchGate:
    """Lets requests into a batcher one batch at a time (see the module docstring).

    Single event loop only (a replica's): the counters are plain attributes.

    Parameters
    ----------
    hold_fraction : float
        Longest hold after a batch leaves, as a fraction of the time it spent inside (at most
        ``MAX_HOLD_S``), in [0, 1]; 0 admits the waiting requests at once.
    """

    def __init__(self, hold_fraction: float = 0.1) -> None:
        if not 0 <= hold_fraction <= 1:
            raise ValueError(f"hold_fraction must be in [0, 1], got {hold_fraction}")
        self.hold_fraction = hold_fraction
        self.inside = 0  # requests admitted to the batcher and not yet answered
        self._waiting: list[asyncio.Future[None]] = []
        self._group = 0  # requests admitted together last time
        self._group_admitted_at = 0.0
        self._hold: asyncio.TimerHandle | None = None  # set while the gate holds for a fuller batch
        self._awaited = 0  # arrivals that end the hold early

    async def run(self, call: Callable[[bool], Awaitable[T]]) -> T:
        """Await ``call(alone)`` (which submits one request to the batcher) once the gate admits it;
        ``alone`` is true when no other admitted request is inside."""
        if self.inside or self._hold is not None:
            admitted = asyncio.get_running_loop().create_future()
            self._waiting.append(admitted)
            if self._hold is not None:
                self._awaited -= 1
                if self._awaited <= 0:
                    self._admit()
            try:
                await admitted
            except asyncio.CancelledError:
                # Cancelled after being admitted (and counted): give the place back, or nobody would.
                if admitted.done() and not admitted.cancelled():
                    self._leave()
                raise
        else:
            self._start_group(1)
        try:
            # Alone in the gate's count; a batch whose callers were all cancelled may still be
            # computing, but passes take turns on the replica's torch thread either way.
            return await call(self.inside == 1)
        finally:
            self._leave()

    def _start_group(self, size: int) -> None:
        self.inside += size
        self._group = size
        self._group_admitted_at = asyncio.get_running_loop().time()

    def _leave(self) -> None:
        self.inside -= 1
        if self.inside:
            return
        if self.hold_fraction == 0:
            self._admit()
            return
        loop = asyncio.get_running_loop()
        self._awaited = self._group
        hold_s = min(self.hold_fraction * (loop.time() - self._group_admitted_at), MAX_HOLD_S)
        self._hold = loop.call_later(hold_s, self._admit)

    def _admit(self) -> None:
        """End any hold and admit every caller still waiting, as one group."""
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        waiting, self._waiting = self._waiting, []
        live = [admitted for admitted in waiting if not admitted.done()]  # cancelled callers are done
        for admitted in live:
            admitted.set_result(None)
        if live:
            self._start_group(len(live))
