"""Settings of the pdeserve Serve application (importable without torch or Ray)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# Ports of a pdeserve server: one place for the CLI, the local server, Serve configs and the chart.
DEFAULT_GRPC_PORT = 9000
DEFAULT_HTTP_PORT = 8000
DEFAULT_METRICS_PORT = 8080
# How long the application may fail its health check before `pdeserve serve` exits non-zero, so that a
# supervisor (systemd, Docker's restart policy, Kubernetes) restarts it: Serve restarts a killed
# controller, proxy or replica on its own, within seconds when the machine has the memory.
DEFAULT_UNHEALTHY_EXIT_S = 60.0


@dataclass(frozen=True)
class ServingOptions:
    """Per-application settings (recorded in the Serve config, so local and KubeRay runs agree).

    Parameters
    ----------
    max_request_bytes : int
        Largest ``SolveRequest`` accepted; larger ones get RESOURCE_EXHAUSTED.
    auth_token : str
        Shared secret expected in the ``authorization`` metadata (``Bearer TOKEN`` or ``TOKEN``);
        empty turns authentication off unless ``auth_token_env`` names one.
    auth_token_env : str
        Name of an environment variable holding that secret on the replicas' nodes (e.g. set from a
        Kubernetes Secret), read when a replica starts: a Serve config names the variable, never the
        secret, since it is stored in plain text.
    max_batch_size : int
        Most requests stacked into one forward pass.
    batch_wait_s : float
        0 (the default): a lone request starts at once and a batch is every request that arrived while
        the previous forward pass ran (serving/batching.py), which fills batches under load and costs
        batch-1 latency nothing. Above 0: ``@serve.batch``'s own behaviour, each batch waiting up to
        this long for company after its first request.
    batch_hold_fraction : float
        With ``batch_wait_s`` 0: when a batch has been answered, the next one waits until as many new
        requests as that batch had have arrived (its clients coming back), for at most this fraction of
        that batch's time in the batcher (and 50 ms); 0 never holds. Keeps closed-loop clients in one
        batch instead of cohorts that take turns (serving/batching.py); a lone client never waits.
    max_ongoing_requests : int
        Requests a replica works on at once (Ray Serve's ``max_ongoing_requests``); at least
        ``max_batch_size``, or batches can never fill.
    max_queued_requests : int
        Requests waiting for a replica beyond that; more are refused at once (UNAVAILABLE from Ray
        Serve's proxy) instead of queueing without bound. -1 means no bound.
    """

    max_request_bytes: int = 64 * 2**20
    auth_token: str = field(default="", repr=False)  # a secret: never in a repr, so never in a log
    auth_token_env: str = ""
    max_batch_size: int = 32
    batch_wait_s: float = 0.0
    batch_hold_fraction: float = 0.1
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.batch_hold_fraction <= 1:
            raise ValueError(f"batch_hold_fraction must be in [0, 1], got {self.batch_hold_fraction}")
        if not self.batch_wait_s >= 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {self.batch_wait_s}")

    def resolved_auth_token(self, environ: Mapping[str, str] = os.environ) -> str:
        """The token requests must carry ("" for none): ``auth_token``, else the variable
        ``auth_token_env`` names, which must then be set and non-empty (a replica refuses to start
        open when its operator asked for authentication)."""
        if self.auth_token and self.auth_token_env:
            raise ValueError("give auth_token or auth_token_env, not both")
        if not self.auth_token_env:
            return self.auth_token
        token = environ.get(self.auth_token_env, "").strip()
        if not token:
            raise ValueError(f"auth_token_env: environment variable {self.auth_token_env} is unset or empty")
        return token


def listen_host(options: ServingOptions, host: str | None = None) -> str:
    """Where a local server listens: ``host`` when given, else every interface (``0.0.0.0``) when its
    calls need a token, else this machine only (``127.0.0.1``), so that an unauthenticated server is
    never reachable from the network by default."""
    if host:
        return host
    return "0.0.0.0" if options.auth_token or options.auth_token_env else "127.0.0.1"


# Ray Serve's size limit of a gRPC message its ingress server receives or sends (2 GiB by default),
# read from the environment of the process that runs the server.
GRPC_MESSAGE_SIZE_VARIABLE = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


def replica_environment(options: ServingOptions) -> dict[str, str]:
    """Environment of the replicas: their gRPC ingress (Serve's direct ingress, on by default in
    pdeserve) refuses a message above ``max_request_bytes`` with RESOURCE_EXHAUSTED before reading it
    into memory (Serve's own limit is 2 GiB). The limit bounds answers too: the servicer refuses a
    request whose answer would be above it (a model with many output channels at the point limits)
    before its forward pass, and the gRPC server refuses anything larger it would send."""
    return {GRPC_MESSAGE_SIZE_VARIABLE: str(options.max_request_bytes)}
