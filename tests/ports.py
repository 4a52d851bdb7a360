"""Free ports for servers the tests start: outside the ports Ray Serve gives its replicas, where a
replica of the session's Ray instance (or of the server itself) could take one first."""

from __future__ import annotations

import contextlib
import socket

from pdeserve.serving.lifecycle import SERVE_REPLICA_PORTS


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports outside Ray Serve's replica port ranges (held together while picked, so
    none is picked twice)."""
    ports: list[int] = []
    with contextlib.ExitStack() as held:
        while len(ports) < n:
            probe = held.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            if not any(port in span for span in SERVE_REPLICA_PORTS.values()):
                ports.append(port)
    return ports


def free_port() -> int:
    """One free port outside Ray Serve's replica port ranges."""
    return free_ports(1)[0]
