"""What a ``pdeserve serve`` process owns on its machine: its ports before Ray starts, its processes after.

Ray runs its daemons in the server's process group but each actor in a group of its own, and Ray
Serve's HAProxy is a child of one of those actors. A SIGTERM to the server's group (``kill -TERM
-PGID``, a terminal's job control, ``make``) stops the daemons at once, the actors die with them, and
HAProxy, which nobody signalled, lives on holding the gRPC and HTTP ports. The server therefore adopts
orphaned descendants (Linux's child subreaper) and ends whatever of them is left once Ray is down.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

PROC = Path("/proc")
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
TCP_TABLES = ("net/tcp", "net/tcp6")


# The ports Ray Serve gives its ingress replicas' own gRPC and HTTP servers on a node (direct ingress), the
# lowest free one of a range each; these are its defaults, and environment variables move them.
SERVE_REPLICA_PORTS = {"gRPC": range(40000, 41001), "HTTP": range(30000, 31001)}
# Two local instances on one machine would share those ranges, and gRPC's wildcard bind succeeds on one IP
# stack when the other stack's port is taken: a replica of the second instance then starts on a port a
# replica of the first one holds, and the requests meant for it reach the other server's replica (seen:
# one server answering NOT_FOUND for the other's model). So each local pdeserve instance claims a block of
# each range for itself, held by a lock file for the life of the process; block 0, where Serve starts,
# stays for Ray Serve applications that are not pdeserve's.
REPLICA_PORT_BLOCK = 100
CLAIMED_BLOCK_VARIABLE = "PDESERVE_REPLICA_PORT_BLOCK"
# Behind HAProxy, Serve also runs a fallback proxy on the head node (what HAProxy answers with until the
# replicas are registered, e.g. right after the start) on fixed ports, 9500 (gRPC) and 8500 (HTTP): a second
# local instance's fallback proxy "binds" them on the other IP stack, and its requests reach the first
# instance's proxy (seen: a server answering NOT_FOUND for its own model, listing the other's). So the last
# two ports of each block of the HTTP range (below the kernel's ephemeral ports, unlike the gRPC range) are
# the instance's fallback proxy's, gRPC then HTTP; a block whose two are taken is passed over.
FALLBACK_PROXY_VARIABLES = ("RAY_SERVE_FALLBACK_PROXY_GRPC_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")
_claimed_block: IO | None = None
_claimed_environment: dict[str, str] = {}


def replica_port_variables(servers: str) -> tuple[str, str]:
    """The environment variables of the first and last replica port of ``servers`` (gRPC, HTTP)."""
    return tuple(f"RAY_SERVE_DIRECT_INGRESS_{end}_{servers.upper()}_PORT" for end in ("MIN", "MAX"))


def replica_port_ranges() -> dict[str, range]:
    """Ray Serve's replica port ranges as this process's environment sets them (its defaults otherwise)."""
    ranges = {}
    for servers, default in SERVE_REPLICA_PORTS.items():
        low, high = replica_port_variables(servers)
        ranges[servers] = range(
            int(os.environ.get(low, default.start)), int(os.environ.get(high, default.stop - 1)) + 1
        )
    return ranges


def ensure_outside_replica_ports(ports: Mapping[str, int]) -> None:
    """``ValueError`` for a port of ``ports`` (what it serves -> port) that Ray Serve could give a replica
    of this server or of another one on the machine."""
    for role, port in ports.items():
        spans = [*SERVE_REPLICA_PORTS.items(), *replica_port_ranges().items()]  # Serve's, and this server's
        for servers, span in spans:
            if port in span:
                raise ValueError(
                    f"{role} port {port} is among the ports Ray Serve gives its replicas' {servers} servers "
                    f"({span.start}-{span.stop - 1}); choose a port outside them"
                )


def claim_instance_block() -> dict[str, str]:
    """The environment that gives a local Ray instance's replicas and fallback proxy a block of ports no
    other pdeserve server on this machine holds (see ``REPLICA_PORT_BLOCK`` and
    ``FALLBACK_PROXY_VARIABLES``): this process's block once it holds one, empty when an operator set
    the replicas' ranges (a fallback proxy port an operator set is kept too). ``PortInUseError`` when
    every block is held."""
    global _claimed_block, _claimed_environment
    variables = [v for servers in SERVE_REPLICA_PORTS for v in replica_port_variables(servers)]
    inherited = CLAIMED_BLOCK_VARIABLE in os.environ  # a block of the process that started this one
    if _claimed_block is not None:
        return dict(_claimed_environment)
    if not inherited and any(v in os.environ for v in variables):
        return {}
    folder = Path(tempfile.gettempdir()) / "pdeserve-replica-ports"
    folder.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):  # every user's servers share the blocks, as they share the ports
        folder.chmod(0o1777)
    blocks = min(len(span) for span in SERVE_REPLICA_PORTS.values()) // REPLICA_PORT_BLOCK
    for block in range(1, blocks):
        try:
            descriptor = os.open(folder / f"block-{block}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # another user's lock file this user may not open: count the block as held
            continue
        with contextlib.suppress(OSError):
            os.fchmod(descriptor, 0o666)
        lock = os.fdopen(descriptor, "r+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        environment = {CLAIMED_BLOCK_VARIABLE: str(block)}
        fallback = len(FALLBACK_PROXY_VARIABLES)
        for servers, span in SERVE_REPLICA_PORTS.items():
            low, high = replica_port_variables(servers)
            first = span.start + block * REPLICA_PORT_BLOCK
            # Serve gives replicas ports from MIN up to MAX, MAX excluded.
            environment |= {
                low: str(first),
                high: str(first + REPLICA_PORT_BLOCK - fallback * (servers == "HTTP")),
            }
        http = SERVE_REPLICA_PORTS["HTTP"]
        after = http.start + (block + 1) * REPLICA_PORT_BLOCK
        fallback_ports = dict(zip(FALLBACK_PROXY_VARIABLES, range(after - fallback, after), strict=True))
        if not all(port_is_free(port) for port in fallback_ports.values()):
            lock.close()
            continue
        for variable, port in fallback_ports.items():
            operator = os.environ.get(variable, "")
            if not operator.isdigit() or int(operator) in http:  # unset, or a block's: not an operator's
                environment[variable] = str(port)
        _claimed_block = lock  # held for the life of this process (and of the processes it forks)
        _claimed_environment = environment
        return dict(environment)
    raise PortInUseError(
        f"all {blocks - 1} blocks of Ray Serve's replica ports on this machine are held by other pdeserve "
        "servers; stop one of them"
    )


class PortInUseError(OSError):
    """A port the server needs is taken; the message names the port and, when visible, its holder."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, as gRPC and HAProxy bind, so a
    connection in TIME_WAIT does not count; listening too, which a socket merely bound refuses)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def socket_inodes(port: int, proc: Path = PROC) -> set[str]:
    """Inodes of this network namespace's TCP sockets bound to local ``port`` (``/proc/net/tcp{,6}``)."""
    inodes = set()
    for table in TCP_TABLES:
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def open_files(process: Path) -> set[str]:
    """What the file descriptors of ``process`` (a ``/proc/PID`` folder) point to; empty when it is gone
    or not ours to inspect."""
    links = set()
    with contextlib.suppress(OSError):
        for fd in (process / "fd").iterdir():
            with contextlib.suppress(OSError):  # closed since it was listed
                links.add(os.readlink(fd))
    return links


def port_holders(port: int, proc: Path = PROC) -> list[tuple[int, str]]:
    """``(pid, command name)`` of the processes whose open files include a socket bound to ``port``
    (only processes this user may inspect: another user's show up as none)."""
    targets = {f"socket:[{inode}]" for inode in socket_inodes(port, proc)}
    holders = []
    for entry in proc.iterdir() if targets else ():
        if entry.name.isdigit() and open_files(entry) & targets:
            with contextlib.suppress(OSError):
                holders.append((int(entry.name), (entry / "comm").read_text().strip()))
    return sorted(holders)


def ensure_ports_free(ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Raise :class:`PortInUseError` naming the first taken port of ``ports`` (what it serves -> port)
    and the processes holding it."""
    for role, port in ports.items():
        if port_is_free(port, host):
            continue
        holders = port_holders(port)
        held_by = ", ".join(f"pid {pid} ({name})" for pid, name in holders) or "a process of another user"
        raise PortInUseError(
            f"{role} port {port} is already in use by {held_by}; stop it or choose another port"
        )


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where unsupported."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Live (not zombie) processes below ``pid`` in the process tree."""
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def reap_adopted(keep: int | None, proc: Path = PROC) -> list[int]:
    """Collect the exit status of this process's ended children except ``keep`` (whose owner waits for
    it): orphans it adopted, such as a HAProxy whose actor Serve restarted, would otherwise stay
    ``<defunct>`` while the server runs. Returns the pids collected."""
    me, collected = os.getpid(), []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        pid = int(stat.parent.name)
        if state == "Z" and int(ppid) == me and pid != keep:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    collected.append(pid)
    return collected


def reap_children() -> None:
    """Collect the exit status of every child that has ended (adopted orphans included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_descendants(grace_s: float = 5.0, bound_s: float = 15.0) -> list[int]:
    """SIGTERM every process still below this one (SIGKILL after ``grace_s``), until none is left or
    ``bound_s`` has passed; returns those still alive then. Orphans adopted later (a child's children,
    once it ends) are ended in turn."""
    signalled: dict[int, float] = {}
    deadline = time.monotonic() + bound_s
    while True:
        reap_children()
        left = descendants(os.getpid())
        if not left or time.monotonic() > deadline:
            return left
        now = time.monotonic()
        for pid in left:
            first = signalled.setdefault(pid, now)
            if first == now or now - first > grace_s:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if first == now else signal.SIGKILL)
        time.sleep(0.05)
