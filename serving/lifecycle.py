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
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path

PROC = Path("/proc")
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
TCP_TABLES = ("net/tcp", "net/tcp6")


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
