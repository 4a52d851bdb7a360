"""`pdeserve serve` as an operator runs it: a real process (Ray, Serve, HAProxy) stopped with SIGTERM to its
process group, as systemd and `docker stop` do, and a start refused when a port is taken."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_ports

from pdeserve.serving.client import SolverClient, SolverError
from pdeserve.serving.lifecycle import (
    descendants,
    ensure_ports_free,
    port_holders,
    port_is_free,
)
from pdeserve.serving.server import HAPROXY_PORTS

STOP_BOUND_S = 90  # Ray's own shutdown plus the sweep of what it leaves; generous for a busy 2-core machine


def serve_command(repo: Path, grpc_port: int, http_port: int, metrics_port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pdeserve.cli",
        "serve",
        "--repo",
        str(repo),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
    ]


def session_processes(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a process started with ``start_new_session`` and all it
    spawned, wherever they were reparented)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as ``/proc/net/tcp`` writes them) of IPv4 sockets listening on ``port``."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return {r[1].split(":")[0] for r in rows if int(r[1].split(":")[1], 16) == port and r[3] == "0A"}


def wait_serving(
    target: str, server: subprocess.Popen, bound_s: float = 300, log: Path | None = None
) -> None:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        said = log.read_text()[-2000:] if log else ""
        assert server.poll() is None, f"pdeserve serve exited with {server.returncode}: {said}"
        try:
            with SolverClient(target, timeout=5, retries=0) as client:
                if client.health() == "SERVING":
                    return
        except SolverError:
            pass
        time.sleep(1)
    raise AssertionError(f"{target} not serving after {bound_s} s")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_to_the_process_group_frees_the_ports_and_leaves_no_process(
    bundled_repo, grpc_target, tmp_path
):
    """Beside the test session's server (another local instance, serving other models): each answers
    for its own models only."""
    repo = tmp_path / "models"
    shutil.copytree(bundled_repo / "darcy-fno", repo / "darcy-fno")
    ports = dict(zip(("gRPC", "HTTP", "metrics"), free_ports(3), strict=True))
    # HAProxy's own ports moved too: the test session's server holds the defaults.
    haproxy = dict(zip(HAPROXY_PORTS, free_ports(2), strict=True))
    environment = {**os.environ, **{HAPROXY_PORTS[role][0]: str(port) for role, port in haproxy.items()}}
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            serve_command(repo, *ports.values()),
            start_new_session=True,  # its own process group and session, as under systemd or make
            stdout=subprocess.DEVNULL,
            stderr=output,
            env=environment,
        )
    try:
        wait_serving(f"127.0.0.1:{ports['gRPC']}", server, log=log)
        # At once: until its replicas are registered HAProxy answers through Serve's fallback proxy.
        with SolverClient(f"127.0.0.1:{ports['gRPC']}") as client:
            assert [m.name for m in client.list_models()] == ["darcy-fno"]
        with SolverClient(grpc_target) as client:
            session_models = [m.name for m in client.list_models()]
        assert "darcy-fno" in session_models and len(session_models) > 1
        ports |= haproxy
        held = {role: port for role, port in ports.items() if not port_is_free(port)}
        assert held == ports  # the check below means something: all were in use while serving
        loopback = "0100007F"  # 127.0.0.1: without a token, the service is not on the network
        assert listening_addresses(ports["gRPC"]) == listening_addresses(ports["HTTP"]) == {loopback}
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(timeout=STOP_BOUND_S) == 0
        deadline = time.monotonic() + 10
        while session_processes(server.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in session_processes(server.pid)}
        assert left == {}
        assert {role: port for role, port in ports.items() if not port_is_free(port)} == {}
        with SolverClient(grpc_target) as client:  # the other server serves on, its own models
            assert [m.name for m in client.list_models()] == session_models
    finally:
        for pid in session_processes(server.pid):  # leave nothing behind when the test fails
            os.kill(pid, signal.SIGKILL)


def test_a_taken_port_fails_the_start_at_once_with_one_line_naming_it(bundled_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            serve_command(bundled_repo, *free_ports(1), port, *free_ports(1)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"HTTP port {port} is already in use by pid {os.getpid()} (" in lines[0]
    assert "ray" not in (result.stdout + result.stderr).lower()  # refused before Ray started


@pytest.mark.parametrize("port", [40000, 41000, 30500])
def test_a_port_ray_serve_gives_its_replicas_fails_the_start_at_once_with_one_line(bundled_repo, port):
    """A replica of this server (or of another on the machine) could be given it."""
    result = subprocess.run(
        serve_command(bundled_repo, port, *free_ports(2)), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"gRPC port {port} is among the ports Ray Serve gives its replicas' " in lines[0]
    assert "ray::" not in result.stderr and "Started a local Ray instance" not in result.stderr


CLAIM = (
    "import json, sys; from pdeserve.serving.lifecycle import claim_instance_block; "
    "print(json.dumps(claim_instance_block()), flush=True); sys.stdin.read()"
)


def test_each_local_instance_claims_a_block_of_replica_ports_that_no_other_holds(tmp_path):
    """Held while its process lives, its last ports its fallback proxy's; a process started by a
    claiming one claims its own; an operator's ranges and fallback ports win."""
    claimed_here = ("RAY_SERVE_DIRECT", "RAY_SERVE_FALLBACK", "PDESERVE_REPLICA")
    base = {k: v for k, v in os.environ.items() if not k.startswith(claimed_here)}
    base["TMPDIR"] = str(tmp_path)  # the lock files of this test only

    def claim(environment):
        process = subprocess.Popen(
            [sys.executable, "-c", CLAIM],
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return process, json.loads(process.stdout.readline())

    def block_ports(block: int) -> dict[str, str]:
        """A claimed block's environment (Serve excludes a range's MAX)."""
        grpc_first, http_first = 40000 + 100 * block, 30000 + 100 * block
        return {
            "PDESERVE_REPLICA_PORT_BLOCK": str(block),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_first),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_first + 100),
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_first),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_first + 98),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(http_first + 98),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(http_first + 99),
        }

    # Blocks are numbered from 1; one whose fallback ports a server on this machine holds is passed over.
    first, claimed = claim(base)
    held = int(claimed["PDESERVE_REPLICA_PORT_BLOCK"])
    assert claimed == block_ports(held)
    second, other = claim(base | claimed)  # as a server started from a claiming process inherits them
    assert int(other["PDESERVE_REPLICA_PORT_BLOCK"]) > held
    assert other == block_ports(int(other["PDESERVE_REPLICA_PORT_BLOCK"]))
    third, operator = claim(base | {"RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "45000"})
    assert operator == {}
    fourth, kept = claim(base | {"RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "9600"})
    assert "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT" not in kept
    fifth, inherited = claim(base | kept | {"RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "9600"})
    assert "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT" not in inherited  # the operator's, kept by the parent too
    assert inherited["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] != kept["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"]
    first.communicate("")
    with socket.socket() as taken:  # the first one's block, free again, but its fallback port taken
        taken.bind(("127.0.0.1", int(claimed["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"])))
        taken.listen()
        sixth, passed = claim(base)
        assert passed["PDESERVE_REPLICA_PORT_BLOCK"] != str(held)
    seventh, again = claim(base)
    assert again == claimed  # the first one's block, free again once it ended
    for process in (second, third, fourth, fifth, sixth, seventh):
        process.communicate("")


def test_the_holder_of_a_port_is_named_from_proc():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free(port, "127.0.0.1")  # every interface includes this one
        assert (os.getpid(), Path("/proc/self/comm").read_text().strip()) in port_holders(port)
        with pytest.raises(OSError, match=f"^metrics port {port} is already in use by pid {os.getpid()} "):
            ensure_ports_free({"gRPC": free_ports(1)[0], "metrics": port})
    assert port_is_free(port)


def test_descendants_follow_the_process_tree():
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not descendants(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in descendants(os.getpid())  # the shell, in a session of its own
        assert len(descendants(child.pid)) == 1  # and its sleep
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
