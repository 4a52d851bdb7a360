"""Admission to ``@serve.batch``: requests that arrive while a batch is in flight join the next one together.

Since ray-project/ray#53096 (concurrent batches), a ``@serve.batch`` queue forms its next batch as soon as the
previous one is handed off, not when it finishes: with no wait, each request that arrives during a
forward pass becomes a batch of its own and queues for the pass after it (16 clients got batches of 1-2
here, bench/serving.py); a wait long enough to gather them adds that wait to every batch-1 request.
``BatchGate`` restores opportunistic batching: while any request is inside the batcher, newcomers wait
at the gate, and when the last one leaves, all of them enter at once and form one batch (up to the
batcher's ``max_batch_size``). An idle server still starts a lone request at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class BatchGate:
    """Lets requests into a batcher one batch at a time (see the module docstring).

    Single event loop only (a replica's): the counters are plain attributes.
    """

    def __init__(self) -> None:
        self.inside = 0  # requests admitted to the batcher and not yet answered
        self._waiting: list[asyncio.Future[None]] = []

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` (which submits one request to the batcher) once the gate admits it."""
        if self.inside:
            admitted = asyncio.get_running_loop().create_future()
            self._waiting.append(admitted)
            try:
                await admitted
            except asyncio.CancelledError:
                # Cancelled after being admitted (and counted): give the place back, or nobody would.
                if admitted.done() and not admitted.cancelled():
                    self._leave()
                raise
        else:
            self.inside += 1
        try:
            return await call()
        finally:
            self._leave()

    def _leave(self) -> None:
        self.inside -= 1
        if self.inside or not self._waiting:
            return
        waiting, self._waiting = self._waiting, []
        for admitted in waiting:
            if not admitted.done():  # a caller that gave up while waiting has a cancelled future
                admitted.set_result(None)
                self.inside += 1
