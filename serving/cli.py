"""The ``pdeserve`` command: ``datagen`` (with ``retrain``), ``train``, ``eval``, ``models``, ``serve``,
``serve-config`` and ``solve``.

Heavy imports (torch, Ray) happen inside the subcommands, so ``--help`` and ``datagen`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pdeserve.datagen import cli as datagen_cli
from pdeserve.datagen.cli import CliParser, HelpFormatter, run_command
from pdeserve.operators import cli as operators_cli
from pdeserve.serving.options import ServingOptions
from pdeserve.serving.serve_config import ReplicaScaling

DEFAULT_PORT = 9000

SERVE_EXAMPLES = """examples:
  pdeserve serve --repo models
  pdeserve serve --repo models --grpc-port 9000 --address auto   # join a running Ray cluster
  pdeserve serve --repo models --replica-cpus 4   # the replica's torch computes on 4 cores
"""

SERVE_CONFIG_EXAMPLES = """examples:
  pdeserve serve-config > serve.yaml && serve deploy serve.yaml   # on a Ray cluster with /models
  pdeserve serve-config --repo /mnt/models --max-replicas 4 --replica-gpus 1
  pdeserve serve-config --helm --out helm/pdeserve/files/serve-config.yaml   # make helm-config
"""

SOLVE_EXAMPLES = """examples:
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input a.npy --out u.npy
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input data/darcy64.h5 --reference
  pdeserve solve --model ns-fno --input w0.npy --steps 20 --out trajectory.npy   # Rollout stream
"""


def _add_serving_subcommands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC with Ray Serve",
        description="Start Ray (in-process by default) and the pdeserve Ray Serve "
        "application behind Ray Serve's gRPC proxy; runs until Ctrl-C.",
        epilog=SERVE_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    serve.add_argument("--repo", required=True, help="model repository folder")
    serve.add_argument("--grpc-port", type=int, default=DEFAULT_PORT, help="port of the gRPC proxy")
    serve.add_argument(
        "--address",
        default="local",
        help="'local' starts Ray in this process; 'auto' or HOST:PORT joins a cluster",
    )
    serve.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics of a local Ray")
    _add_serving_options(serve)
    _add_replica_cpus(serve)
    serve.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="replicas of the service; on CPUs, N replicas of --replica-cpus 1 serve more solutions/s "
        "than one replica of N CPUs, which answers a lone request sooner",
    )
    serve.set_defaults(func=_serve)

    config = sub.add_parser(
        "serve-config",
        help="print the Ray Serve config of `pdeserve serve` (YAML), or the Helm chart's copy",
        description="The Serve config (proxies, servicer functions, the application and its "
        "autoscaling) that `pdeserve serve` runs, for `serve deploy` or a RayService's serveConfigV2.",
        epilog=SERVE_CONFIG_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    config.add_argument("--repo", default="/models", help="model repository path on the Ray nodes")
    config.add_argument("--grpc-port", type=int, default=DEFAULT_PORT, help="port of the gRPC proxy")
    config.add_argument("--http-port", type=int, default=8000, help="port of the HTTP proxy")
    config.add_argument("--host", default="0.0.0.0", help="address the HTTP proxy binds")
    _add_serving_options(config)
    scaling = ReplicaScaling()
    config.add_argument("--min-replicas", type=int, default=scaling.min_replicas, help="autoscaling floor")
    config.add_argument("--max-replicas", type=int, default=scaling.max_replicas, help="autoscaling ceiling")
    config.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=scaling.target_ongoing_requests,
        help="requests in flight per replica the autoscaler aims for",
    )
    _add_replica_cpus(config)
    config.add_argument("--replica-gpus", type=float, default=scaling.num_gpus, help="GPUs per replica")
    config.add_argument(
        "--helm",
        action="store_true",
        help="the Helm chart's template: fields the chart's values set become {{ .Values... }}",
    )
    config.add_argument("--out", help="write to this file instead of standard output")
    config.set_defaults(func=_serve_config)

    solve = sub.add_parser(
        "solve",
        help="call a running server's Solve endpoint",
        epilog=SOLVE_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    solve.add_argument("--target", default=f"127.0.0.1:{DEFAULT_PORT}", help="HOST:PORT of the server")
    solve.add_argument("--model", required=True, help="model name")
    solve.add_argument("--version", default="", help="model version (default: newest)")
    solve.add_argument(
        "--input",
        required=True,
        help=".npy of shape (R, R) or (B, R, R) for the model's single input, "
        "or a pdeserve HDF5 dataset (its input fields are sent, its outputs compared)",
    )
    solve.add_argument("--out", help="write the output: .npy (single output field) or .npz")
    solve.add_argument(
        "--reference",
        action="store_true",
        help="also run the classical solver on the server and report the surrogate's error",
    )
    solve.add_argument(
        "--steps",
        type=int,
        help="roll a time-dependent model forward this many states (the Rollout stream), printing each "
        "as it arrives; --out stacks them on a leading step axis",
    )
    solve.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds (whole stream)")
    solve.add_argument(
        "--application", default="", help="Ray Serve application to route to, when a cluster runs several"
    )
    solve.add_argument(
        "--token-env",
        metavar="VAR",
        default="PDESERVE_AUTH_TOKEN",
        help="send the token this environment variable holds, when set, as 'authorization' metadata",
    )
    solve.set_defaults(func=_solve)


def _add_serving_options(parser: argparse.ArgumentParser) -> None:
    """``ServingOptions`` flags, shared by ``serve`` and ``serve-config`` so both describe one config."""
    parser.add_argument(
        "--max-request-mb", type=float, default=64.0, help="larger requests get RESOURCE_EXHAUSTED"
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="most requests per forward pass")
    parser.add_argument(
        "--batch-hold-fraction",
        type=float,
        default=ServingOptions.batch_hold_fraction,
        help="after a batch, wait up to this fraction of its time for its clients' next requests "
        "(0: never; keeps closed-loop clients in one batch)",
    )
    parser.add_argument(
        "--max-queued-requests",
        type=int,
        default=256,
        help="requests waiting beyond the replica's 64 in flight; more get UNAVAILABLE at once",
    )
    parser.add_argument(
        "--auth-token-env",
        metavar="VAR",
        default="",
        help="require the token this environment variable holds (on the replicas' nodes) "
        "as 'authorization' metadata",
    )


def _add_replica_cpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replica-cpus",
        type=float,
        default=ReplicaScaling.num_cpus,
        help="CPUs each replica reserves; its torch runs that many threads",
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

    if args.replicas < 1:  # before Ray starts
        raise ValueError(f"--replicas must be at least 1, got {args.replicas}")
    options = _serving_options(args)
    if args.address == "local":  # the replicas inherit this environment: refuse a missing token now
        options.resolved_auth_token()
    serve_forever(
        args.repo,
        grpc_port=args.grpc_port,
        address=args.address,
        metrics_port=args.metrics_port,
        options=options,
        replica_cpus=args.replica_cpus,
        replicas=args.replicas,
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


def _solve(args: argparse.Namespace) -> None:
    from pdeserve.serving.client import solve_command

    solve_command(args)


def _add_datagen_subcommands(datagen: argparse.ArgumentParser) -> None:
    datagen_cli.add_subcommands(datagen)
    operators_cli.add_datagen_subcommands(datagen)  # retrain trains: datagen itself cannot import operators


def build_parser() -> CliParser:
    parser = CliParser(prog="pdeserve", description="Neural-operator PDE solver service.")
    sub = parser.add_subparsers(
        dest="command", metavar="{datagen,train,eval,models,serve,serve-config,solve}"
    )
    sub.required = True
    datagen = sub.add_parser(
        "datagen",
        help="generate PDE datasets with classical solvers",
        epilog=datagen_cli.EXAMPLES,
        formatter_class=HelpFormatter,
    )
    _add_datagen_subcommands(datagen)
    operators_cli.add_subcommands(sub)
    _add_serving_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pdeserve`` script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = ["pdeserve", *argv]  # recorded in the lineage of what the command publishes
    return run_command("pdeserve", args.func, args)


def datagen_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``datagen`` script, equal to ``pdeserve datagen`` (``retrain`` included)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = CliParser(
        prog="datagen",
        description="Generate PDE datasets with classical solvers (the same as `pdeserve datagen`).",
        epilog=datagen_cli.EXAMPLES,
        formatter_class=HelpFormatter,
    )
    _add_datagen_subcommands(parser)
    args = parser.parse_args(argv)
    args.command_line = ["datagen", *argv]
    return run_command("datagen", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
