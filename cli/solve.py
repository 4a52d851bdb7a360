"""``pdeserve solve``: call a running server's Solve (or, with ``--steps``, Rollout) endpoint."""

from __future__ import annotations

import argparse

from pdeserve.cli.parsing import Commands
from pdeserve.serving.options import DEFAULT_GRPC_PORT

EXAMPLES = """examples:
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input a.npy --out u.npy
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input data/darcy64.h5 --reference
  pdeserve solve --model ns-fno --input w0.npy --steps 20 --out trajectory.npy   # Rollout stream
"""


def add_solve_command(commands: Commands) -> None:
    """Add ``solve``."""
    solve = commands.add("solve", help="call a running server's Solve endpoint", epilog=EXAMPLES)
    solve.add_argument("--target", default=f"127.0.0.1:{DEFAULT_GRPC_PORT}", help="HOST:PORT of the server")
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


def _solve(args: argparse.Namespace) -> None:
    from pdeserve.serving.client import solve_command

    solve_command(args)
