"""Free ports for the servers the tests start.

Picked where nothing else on the machine takes a port on its own: below the kernel's ephemeral range
(which ``bind(0)`` and every outgoing connection draw from, and so do the random ports of Ray's daemons,
of every test's Ray instance), above the ports Ray gives its workers (10002-19999) and outside those Ray
Serve gives its replicas (30000-31000, 40000-41000). A port picked from the ephemeral range could be taken
by another process between the pick and the server's bind, most often when two pytest workers each run
Ray."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

from pdeserve.serving.lifecycle import SERVE_REPLICA_PORTS


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


TEST_PORTS = range(20000, min(SERVE_REPLICA_PORTS["HTTP"].start, _ephemeral_start()))


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports of ``TEST_PORTS``, chosen at random (held together while picked, so none
    is picked twice)."""
    if len(TEST_PORTS) < 100:
        raise RuntimeError(f"no room for test ports below the ephemeral range ({TEST_PORTS}); widen it")
    pick = random.SystemRandom()
    ports: list[int] = []
    with contextlib.ExitStack() as held:
        for _ in range(100 * n):
            if len(ports) == n:
                break
            port = pick.choice(TEST_PORTS)
            probe = held.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    if len(ports) < n:
        raise RuntimeError(f"fewer than {n} free ports in {TEST_PORTS}")
    return ports


def free_port() -> int:
    """One free port of ``TEST_PORTS``."""
    return free_ports(1)[0]
