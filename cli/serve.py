"""``pdeserve serve`` and ``pdeserve serve-config``: run the Ray Serve application, or print its config.

Both take the same serving flags, so the config printed is the config ``serve`` runs.
"""

from __future__ import annotations

import argparse
import sys

from pdeserve.cli.parsing import Commands
from pdeserve.serving.options import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_UNHEALTHY_EXIT_S,
    ServingOptions,
    listen_host,
)
from pdeserve.serving.serve_config import ReplicaScaling, local_scaling, machine_cpus

SERVE_EXAMPLES = """examples:
  pdeserve serve --repo models   # 127.0.0.1:9000, replicas and CPUs from this machine
  pdeserve serve --repo models --grpc-port 9000 --address auto   # join a running Ray cluster
  pdeserve serve --repo models --replicas 1 --replica-cpus 4   # one replica, torch on 4 cores
  PDESERVE_AUTH_TOKEN=$(openssl rand -hex 32) pdeserve serve --repo models \\
      --auth-token-env PDESERVE_AUTH_TOKEN   # with a token: every interface
"""

SERVE_CONFIG_EXAMPLES = """examples:
  pdeserve serve-config > serve.yaml && serve deploy serve.yaml   # on a Ray cluster with /models
  pdeserve serve-config --repo /mnt/models --max-replicas 4 --replica-gpus 1
  pdeserve serve-config --helm --out helm/pdeserve/files/serve-config.yaml   # make helm-config
"""


def add_serve_commands(commands: Commands) -> None:
    """Add ``serve`` and ``serve-config``."""
    scaling = ReplicaScaling()
    serve = commands.add(
        "serve",
        help="serve a model repository over gRPC with Ray Serve",
        description="Start Ray (in-process by default) and the pdeserve Ray Serve "
        "application behind Ray Serve's gRPC proxy; runs until Ctrl-C.",
        epilog=SERVE_EXAMPLES,
    )
    serve.add_argument("--repo", required=True, help="model repository folder")
    serve.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="port of the gRPC proxy")
    serve.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help="port of Serve's HTTP proxy (the gRPC one needs it)",
    )
    serve.add_argument(
        "--host",
        help="address the gRPC and HTTP ports listen on (default: 0.0.0.0, every interface, when calls need "
        "a token (--auth-token-env), else 127.0.0.1, this machine only)",
    )
    serve.add_argument(
        "--address",
        default="local",
        help="'local' starts Ray in this process; 'auto' or HOST:PORT joins a cluster",
    )
    serve.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="Prometheus metrics of a local Ray"
    )
    _add_serving_options(serve)
    serve.add_argument(
        "--replica-cpus",
        type=float,
        help="CPUs each replica reserves; its torch runs that many threads (default: the machine's CPUs "
        "over the replicas)",
    )
    serve.add_argument(
        "--replicas",
        type=int,
        help="replicas of the service (default: one per CPU this process may use, its affinity and "
        "cgroup quota counted, at least one); on CPUs, N replicas of 1 CPU serve "
        "more solutions/s than one replica of N CPUs, which answers a lone request sooner",
    )
    serve.add_argument(
        "--unhealthy-exit-after",
        type=float,
        default=DEFAULT_UNHEALTHY_EXIT_S,
        metavar="SECONDS",
        help="exit non-zero (code 3) once the application has failed its health check this long, so "
        "that a supervisor restarts it (Serve restarts a lost controller, proxy or replica on its own "
        "meanwhile)",
    )
    serve.set_defaults(func=_serve)

    config = commands.add(
        "serve-config",
        help="print the Ray Serve config of `pdeserve serve` (YAML), or the Helm chart's copy",
        description="The Serve config (proxies, servicer functions, the application and its "
        "autoscaling) that `pdeserve serve` runs, for `serve deploy` or a RayService's serveConfigV2.",
        epilog=SERVE_CONFIG_EXAMPLES,
    )
    config.add_argument("--repo", default="/models", help="model repository path on the Ray nodes")
    config.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="port of the gRPC proxy")
    config.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="port of the HTTP proxy")
    config.add_argument("--host", default="0.0.0.0", help="address the HTTP proxy binds")
    _add_serving_options(config)
    config.add_argument("--min-replicas", type=int, default=scaling.min_replicas, help="autoscaling floor")
    config.add_argument("--max-replicas", type=int, default=scaling.max_replicas, help="autoscaling ceiling")
    config.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=scaling.target_ongoing_requests,
        help="requests in flight per replica the autoscaler aims for",
    )
    config.add_argument(
        "--replica-cpus",
        type=float,
        default=scaling.num_cpus,
        help="CPUs each replica reserves; its torch runs that many threads",
    )
    config.add_argument("--replica-gpus", type=float, default=scaling.num_gpus, help="GPUs per replica")
    config.add_argument(
        "--helm",
        action="store_true",
        help="the Helm chart's template: fields the chart's values set become {{ .Values... }}",
    )
    config.add_argument("--out", help="write to this file instead of standard output")
    config.set_defaults(func=_serve_config)


def _add_serving_options(parser: argparse.ArgumentParser) -> None:
    """``ServingOptions`` flags, shared by ``serve`` and ``serve-config`` so both describe one config."""
    defaults = ServingOptions()
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=defaults.max_request_bytes / 2**20,
        help="larger requests get RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=defaults.max_batch_size, help="most requests per forward pass"
    )
    parser.add_argument(
        "--batch-hold-fraction",
        type=float,
        default=defaults.batch_hold_fraction,
        help="after a batch, wait up to this fraction of its time for its clients' next requests "
        "(0: never; keeps closed-loop clients in one batch)",
    )
    parser.add_argument(
        "--max-queued-requests",
        type=int,
        default=defaults.max_queued_requests,
        help=f"requests waiting beyond the replica's {defaults.max_ongoing_requests} in flight; more get "
        "UNAVAILABLE at once",
    )
    parser.add_argument(
        "--auth-token-env",
        metavar="VAR",
        default=defaults.auth_token_env,
        help="require the token this environment variable holds (on the replicas' nodes) "
        "as 'authorization' metadata",
    )


def _serving_options(args: argparse.Namespace) -> ServingOptions:
    return ServingOptions(
        max_request_bytes=int(args.max_request_mb * 2**20),
        auth_token_env=args.auth_token_env,
        max_batch_size=args.max_batch_size,
        batch_hold_fraction=args.batch_hold_fraction,
        max_queued_requests=args.max_queued_requests,
    )


def _serve(args: argparse.Namespace) -> None:
    from pdeserve.serving.server import serve_forever

    if args.replicas is not None and args.replicas < 1:  # before Ray starts
        raise ValueError(f"--replicas must be at least 1, got {args.replicas}")
    if not args.unhealthy_exit_after > 0:
        raise ValueError(f"--unhealthy-exit-after must be positive, got {args.unhealthy_exit_after}")
    options = _serving_options(args)
    if args.address == "local":  # the replicas inherit this environment: refuse a missing token now
        options.resolved_auth_token()
    scaling = local_scaling(machine_cpus(), args.replicas, args.replica_cpus)
    serve_forever(
        args.repo,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        address=args.address,
        metrics_port=args.metrics_port,
        options=options,
        replica_cpus=scaling.num_cpus,
        replicas=scaling.max_replicas,
        host=listen_host(options, args.host),
        unhealthy_exit_s=args.unhealthy_exit_after,
    )


def _serve_config(args: argparse.Namespace) -> None:
    import yaml

    from pdeserve.serving.serve_config import helm_template, serve_config

    scaling = ReplicaScaling(
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests,
        num_cpus=args.replica_cpus,
        num_gpus=args.replica_gpus,
    )
    config = serve_config(
        args.repo, args.grpc_port, args.http_port, args.host, _serving_options(args), scaling
    )
    text = helm_template(config) if args.helm else yaml.safe_dump(config, sort_keys=False)
    if not args.out:
        print(text, end="")
        return
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}", file=sys.stderr)
