"""`pdeserve serve` runs unattended: a stop signal at any moment of start-up ends everything within
Docker's 10 s grace, a lost replica is replaced while the others answer, and a Serve controller and
HAProxy killed on every restart either come back between the kills or make the server exit non-zero
within its bound, leaving no process behind; the watch itself gives up on a target that does not serve."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from ports import free_ports
from test_lifecycle import serve_command, session_processes, wait_serving

from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.lifecycle import port_is_free
from pdeserve.serving.server import EXIT_UNHEALTHY, HAPROXY_PORTS, WATCH_INTERVAL_S, watch

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")

GRACE_S = 10  # docker stop's default grace period
UNHEALTHY_EXIT_S = 20


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# Ports Ray Serve gives replicas' own HTTP and gRPC servers (its defaults): a test server's ports stay out
# of them, or another test's replica could take one between the pick and the start.


def _zombie_children(parent: int) -> list[int]:
    """Ended children of ``parent`` it has not collected (``<defunct>``)."""
    zombies = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state == "Z" and int(ppid) == parent:
            zombies.append(int(stat.parent.name))
    return zombies


def _matching(sid: int, text: str) -> list[int]:
    return [pid for pid in session_processes(sid) if text in _command_line(pid)]


class Server:
    """A `pdeserve serve` in a session of its own, on free ports (HAProxy's included)."""

    def __init__(self, repo: Path, log: Path, *extra: str) -> None:
        self.ports = dict(zip(("gRPC", "HTTP", "metrics"), free_ports(3), strict=True))
        haproxy = dict(zip(HAPROXY_PORTS, free_ports(2), strict=True))
        environment = {**os.environ, **{HAPROXY_PORTS[role][0]: str(port) for role, port in haproxy.items()}}
        self.ports |= haproxy
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [*serve_command(repo, *list(self.ports.values())[:3]), *extra],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=output,
                env=environment,
            )
        self.target = f"127.0.0.1:{self.ports['gRPC']}"

    def left(self) -> dict[int, str]:
        """Processes of its session still alive a moment after it exited, and the ports still held."""
        deadline = time.monotonic() + 3
        while session_processes(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = {pid: _command_line(pid)[:80] for pid in session_processes(self.process.pid)}
        held = {-port: role for role, port in self.ports.items() if not port_is_free(port)}
        return alive | held

    def kill_all(self) -> None:
        for pid in session_processes(self.process.pid):
            os.kill(pid, signal.SIGKILL)


def _replicas_loading(server: Server, bound_s: float = 240) -> None:
    deadline = time.monotonic() + bound_s
    while not _matching(server.process.pid, "ServeReplica") and time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()[-2000:]
        time.sleep(0.1)
    assert _matching(server.process.pid, "ServeReplica"), "no replica started"


@pytest.mark.parametrize(
    ("moment", "to_group"),
    [
        ("at once", False),
        ("while Python starts", True),
        ("while Ray starts", False),
        ("while replicas load", True),
    ],
)
def test_a_stop_signal_at_any_moment_of_start_up_ends_everything_within_the_grace_period(
    bundled_repo, tmp_path, moment, to_group
):
    server = Server(bundled_repo, tmp_path / "serve.log")
    try:
        if moment == "while Python starts":
            time.sleep(0.3)
        elif moment == "while Ray starts":
            deadline = time.monotonic() + 120
            while not _matching(server.process.pid, "gcs_server") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _matching(server.process.pid, "gcs_server"), server.log.read_text()[-2000:]
        elif moment == "while replicas load":
            _replicas_loading(server)
        signalled = time.monotonic()
        if to_group:
            os.killpg(server.process.pid, signal.SIGTERM)
        else:
            server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=3 * GRACE_S)
        took = time.monotonic() - signalled
        assert took <= GRACE_S, f"stopped {took:.1f} s after SIGTERM {moment}"
        # Before pdeserve set its handlers the signal's default action ends it (nothing started yet).
        assert code in (0, -signal.SIGTERM), server.log.read_text()[-2000:]
        assert server.left() == {}
    finally:
        server.kill_all()


def _solve(target: str) -> bool:
    a = np.full((1, 64, 64), 3.0, dtype=np.float32)
    try:
        with SolverClient(target, timeout=10, retries=0) as client:
            return client.solve("darcy-fno", {"a": a})["u"].shape == (1, 64, 64)
    except SolverError:
        return False


def _until(condition, bound_s: float, server: Server) -> float:
    """Seconds until ``condition()`` held (AssertionError past ``bound_s``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < bound_s, server.log.read_text()[-3000:]
        time.sleep(0.5)
    return time.monotonic() - started


def test_a_lost_replica_is_replaced_and_a_lost_controller_and_haproxy_recover_or_end_the_server(
    bundled_repo, tmp_path
):
    server = Server(
        bundled_repo,
        tmp_path / "serve.log",
        "--replicas",
        "2",
        "--unhealthy-exit-after",
        str(UNHEALTHY_EXIT_S),
    )
    try:
        wait_serving(server.target, server.process, log=server.log)
        _until(lambda: len(_matching(server.process.pid, "ServeReplica")) == 2, 120, server)
        assert _solve(server.target)
        # One replica killed: the other answers, and Serve replaces it.
        [victim, *_] = _matching(server.process.pid, "ServeReplica")
        os.kill(victim, signal.SIGKILL)
        _until(lambda: _solve(server.target), UNHEALTHY_EXIT_S, server)
        _until(lambda: len(_matching(server.process.pid, "ServeReplica")) >= 2, 120, server)
        assert server.process.poll() is None
        # The controller and HAProxy killed, and again on every restart, as Ray's memory monitor does
        # while memory stays short: the server says so and exits non-zero within its bound.
        killed, started = 0, time.monotonic()
        while server.process.poll() is None and time.monotonic() - started < UNHEALTHY_EXIT_S + 40:
            for pid in _matching(server.process.pid, "ServeController") + _matching(
                server.process.pid, "haproxy"
            ):
                os.kill(pid, signal.SIGKILL)
                killed += 1
            time.sleep(0.2)
        took = time.monotonic() - started
        assert killed >= 2
        bound = UNHEALTHY_EXIT_S + 2 * WATCH_INTERVAL_S + GRACE_S
        if server.process.poll() is not None:  # it ended during the kills
            assert took <= bound, f"exited after {took:.1f} s"
        else:  # Serve brought the parts back between the kills: it serves again, or gives up, in the bound
            _until(lambda: server.process.poll() is not None or _solve(server.target), bound, server)
        if server.process.poll() is not None:  # it could not serve: it said so and ended, non-zero
            assert server.process.returncode == EXIT_UNHEALTHY, server.log.read_text()[-3000:]
            assert "exiting so that a supervisor restarts it" in server.log.read_text()
        else:  # it serves, and stops cleanly
            os.killpg(server.process.pid, signal.SIGTERM)
            assert server.process.wait(timeout=3 * GRACE_S) == 0
        assert server.left() == {}
    finally:
        server.kill_all()


def test_the_watch_gives_up_on_a_target_that_does_not_serve_within_its_bound(capsys):
    port = free_ports(1)[0]  # nothing listens there
    started = time.monotonic()
    assert watch(f"127.0.0.1:{port}", unhealthy_exit_s=2.0, interval_s=0.25) is False
    assert 2.0 <= time.monotonic() - started < 10
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "pdeserve: error: the application has not served for 2 s (health check: UNAVAILABLE)"
    )
