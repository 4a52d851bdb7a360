"""Settings of the pdeserve Serve application (importable without torch or Ray)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingOptions:
    """Per-application settings (recorded in the Serve config, so local and KubeRay runs agree).

    Parameters
    ----------
    max_request_bytes : int
        Largest ``SolveRequest`` accepted; larger ones get RESOURCE_EXHAUSTED.
    auth_token : str
        Shared secret expected in the ``authorization`` metadata (``Bearer TOKEN`` or ``TOKEN``);
        empty turns authentication off.
    max_batch_size : int
        Most requests stacked into one forward pass.
    batch_wait_s : float
        Longest a request waits for others to join its batch.
    max_ongoing_requests : int
        Requests a replica works on at once (Ray Serve's ``max_ongoing_requests``); at least
        ``max_batch_size``, or batches can never fill.
    max_queued_requests : int
        Requests waiting for a replica beyond that; more are refused at once (UNAVAILABLE from Ray
        Serve's proxy) instead of queueing without bound. -1 means no bound.
    """

    max_request_bytes: int = 64 * 2**20
    auth_token: str = ""
    max_batch_size: int = 32
    batch_wait_s: float = 0.002
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
