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
    """

    max_request_bytes: int = 64 * 2**20
    auth_token: str = ""
    max_batch_size: int = 32
    batch_wait_s: float = 0.002
