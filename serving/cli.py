"""The ``pdeserve`` command: ``datagen`` (with ``retrain``), ``train``, ``eval``, ``models``, ``serve``
and ``solve``.

Heavy imports (torch, Ray) happen inside the subcommands, so ``--help`` and ``datagen`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pdeserve.datagen import cli as datagen_cli
from pdeserve.datagen.cli import CliParser, HelpFormatter, run_command
from pdeserve.operators import cli as operators_cli

DEFAULT_PORT = 9000

SERVE_EXAMPLES = """examples:
  pdeserve serve --repo models
  pdeserve serve --repo models --grpc-port 9000 --address auto   # join a running Ray cluster
"""

SOLVE_EXAMPLES = """examples:
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input a.npy --out u.npy
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input data/darcy64.h5 --reference
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
    serve.add_argument(
        "--max-request-mb", type=float, default=64.0, help="larger requests get RESOURCE_EXHAUSTED"
    )
    serve.add_argument("--max-batch-size", type=int, default=32, help="most requests per forward pass")
    serve.add_argument(
        "--max-queued-requests",
        type=int,
        default=256,
        help="requests waiting beyond the replica's 64 in flight; more get UNAVAILABLE at once",
    )
    serve.add_argument(
        "--auth-token-env",
        metavar="VAR",
        help="require the token in this environment variable as 'authorization' metadata",
    )
    serve.set_defaults(func=_serve)

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
    solve.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    solve.set_defaults(func=_solve)


def _serve(args: argparse.Namespace) -> None:
    import os

    from pdeserve.serving.options import ServingOptions
    from pdeserve.serving.server import serve_forever

    token = ""
    if args.auth_token_env:
        token = os.environ.get(args.auth_token_env, "")
        if not token:
            raise ValueError(f"--auth-token-env {args.auth_token_env}: that environment variable is empty")
    options = ServingOptions(
        max_request_bytes=int(args.max_request_mb * 2**20),
        auth_token=token,
        max_batch_size=args.max_batch_size,
        max_queued_requests=args.max_queued_requests,
    )
    serve_forever(
        args.repo,
        grpc_port=args.grpc_port,
        address=args.address,
        metrics_port=args.metrics_port,
        options=options,
    )


def _solve(args: argparse.Namespace) -> None:
    from pdeserve.serving.client import solve_command

    solve_command(args)


def build_parser() -> CliParser:
    parser = CliParser(prog="pdeserve", description="Neural-operator PDE solver service.")
    sub = parser.add_subparsers(dest="command", metavar="{datagen,train,eval,models,serve,solve}")
    sub.required = True
    datagen = sub.add_parser(
        "datagen",
        help="generate PDE datasets with classical solvers",
        epilog=datagen_cli.EXAMPLES,
        formatter_class=HelpFormatter,
    )
    datagen_cli.add_subcommands(datagen)
    operators_cli.add_datagen_subcommands(datagen)  # retrain trains: datagen itself cannot import operators
    operators_cli.add_subcommands(sub)
    _add_serving_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pdeserve`` script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = ["pdeserve", *argv]  # recorded in the lineage of what the command publishes
    return run_command("pdeserve", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
