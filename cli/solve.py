"""``pdeserve solve``: call a running server's Solve (or, with ``--steps``, Rollout) endpoint."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pdeserve.cli.parsing import Commands
from pdeserve.serving.options import DEFAULT_GRPC_PORT

if TYPE_CHECKING:  # the client loads with the command, not with every command's --help
    from pdeserve.datagen.dataset import LoadedDataset
    from pdeserve.protos.v1 import solver_pb2 as pb
    from pdeserve.serving.client import AnswerCheck, SolverClient

EXAMPLES = """examples:
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input a.npy --out u.npy
  pdeserve solve --target 127.0.0.1:9000 --model darcy-fno --input data/darcy64.h5 --reference
  pdeserve solve --model darcy-fno --input a.npy --tolerance 1e-6 --out u.npy   # refined to a residual
  pdeserve solve --model darcy-fno --input a.npy --max-error 0.05   # the cheapest path meeting 5%
  pdeserve solve --model ns-fno --input data/ns64.h5 --steps 40 --out trajectory.npy   # Rollout stream
  pdeserve solve --target solver.example.org:443 --tls --model darcy-fno --input a.npy   # via a TLS ingress
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
        help=".npy of shape (R, R) or (B, R, R) for the model's single input, .npz of its inputs, "
        "or a pdeserve HDF5 dataset (its input fields are sent, its outputs compared; for a model of "
        "several states, a trajectory's first states are sent)",
    )
    solve.add_argument("--out", help="write the output: .npy (single output field) or .npz")
    solve.add_argument(
        "--reference",
        action="store_true",
        help="also run the classical solver on the server and report the surrogate's error",
    )
    solve.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="relative residual every answer must meet, in (0, 1]: answers above it are refined on the "
        "server (default 0: the surrogate's answers, each with its error estimate)",
    )
    solve.add_argument(
        "--steps",
        type=int,
        help="roll a time-dependent model forward this many states (the Rollout stream), printing each "
        "as it arrives; --out stacks them on a leading step axis",
    )
    solve.add_argument(
        "--max-error",
        type=float,
        default=0.0,
        help="the relative L2 error the answer may have: the server answers by the cheapest path its "
        "ledger predicts to meet it (surrogate, classical ladder rung or reference); with --steps, the "
        "largest estimated error a state may carry, a sample above it continuing with the classical "
        "solver's states (default 0: no limit)",
    )
    solve.add_argument(
        "--method",
        choices=("auto", "surrogate", "classical"),
        default="auto",
        help="with --max-error: which paths may answer (default auto: the cheapest)",
    )
    solve.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds (whole stream)")
    solve.add_argument(
        "--application", default="", help="Ray Serve application to route to, when a cluster runs several"
    )
    solve.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS (to a TLS-terminating ingress or load balancer in front of the server), "
        "verifying its certificate against the system's roots",
    )
    solve.add_argument(
        "--tls-root-cert",
        metavar="PEM",
        type=Path,
        help="verify the server's certificate against this PEM file instead (a private CA or a "
        "self-signed certificate); implies --tls",
    )
    solve.add_argument(
        "--token-env",
        metavar="VAR",
        default="PDESERVE_AUTH_TOKEN",
        help="send the token this environment variable holds, when set, as 'authorization' metadata",
    )
    solve.set_defaults(func=_solve)


def _read_inputs(path: Path, info: pb.ModelInfo) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs to send and, for a dataset file, the outputs it holds (to compare with)."""
    names = [f.name for f in info.inputs]
    if path.suffix == ".npy":
        if len(names) != 1:
            raise ValueError(f"model {info.name} has inputs {names}: pass an .npz or a dataset file")
        return {names[0]: np.load(path, allow_pickle=False)}, {}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}, {}
    data = _dataset_loader(path)(path)
    if all(n in data.inputs for n in names):
        return {n: data.inputs[n] for n in names}, data.outputs
    window = _state_window(data, names)
    if window is None:
        raise ValueError(
            f"model {info.name} reads {names}; {path.name} has inputs {sorted(data.inputs)}: "
            "pass the model's inputs in an .npz"
        )
    return window


def _dataset_loader(path: Path) -> Callable[[Path], LoadedDataset]:
    """What reads ``path`` as a pdeserve HDF5 dataset; one clear error on an install without the server
    extra (h5py and the data layer), such as the client-only one, which reads .npy and .npz only."""
    try:
        from pdeserve.datagen.dataset import load_dataset
    except ModuleNotFoundError as exc:
        if (exc.name or "pdeserve").startswith("pdeserve"):
            raise  # a module of pdeserve itself: a broken install, not a missing extra
        raise RuntimeError(
            f"reading {path.name} as a pdeserve HDF5 dataset needs h5py and pdeserve's server extra "
            f"({exc.name} is not installed): pip install 'pdeserve[server]', or pass the inputs as "
            ".npy or .npz"
        ) from None
    return load_dataset


def _state_window(
    data: LoadedDataset, names: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """For a model of several states (``w@t=0``, ``w@t=1``, ...): the first ``len(names)`` states of a
    trajectory dataset's samples as its inputs, and the state after them as the output to compare
    with; None when the dataset's states are not the model's."""
    from pdeserve.operators.pairs import TimeMap, operator_pairs

    if not any(f.dims[:1] == ("t",) for f in data.family.outputs):
        return None
    try:
        pairs = operator_pairs(data, TimeMap(len(names), 1))
    except ValueError:  # too few stored states for the window
        return None
    if [f.name for f in pairs.inputs] != names:
        return None
    inputs = {name: pairs.x[:, i] for i, name in enumerate(names)}
    return inputs, {f.name: pairs.y[:, i] for i, f in enumerate(pairs.outputs)}


def _write_outputs(out: Path, outputs: Mapping[str, np.ndarray]) -> None:
    if out.suffix == ".npy" and len(outputs) == 1:
        np.save(out, next(iter(outputs.values())))
    else:
        np.savez(out.with_suffix(".npz"), **outputs)
    print(f"  wrote {out}")


def _rollout_command(args: argparse.Namespace, client: SolverClient, inputs: dict[str, np.ndarray]) -> None:
    """``pdeserve solve --steps N``: stream the states, one line each; ``--out`` stacks them on a
    leading step axis."""
    states: dict[str, list[np.ndarray]] = {}
    for state in client.rollout(args.model, inputs, args.steps, args.version, args.max_error):
        when = f" t={state.time:g}" if state.time is not None else ""
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in state.outputs.items())
        estimates = [c.estimated_relative_l2 for c in state.checks if c.estimated_relative_l2 is not None]
        estimate = f", estimated relative L2 {max(estimates):.3g}" if estimates else ""
        classical = sum(c.path == "classical" for c in state.checks)
        fallback = f", {classical} of {len(state.checks)} from the classical solver" if classical else ""
        print(f"step {state.step}{when}: {shapes}{estimate}{fallback}", flush=True)
        for name, array in state.outputs.items():
            states.setdefault(name, []).append(array)
    if args.out:
        _write_outputs(Path(args.out), {name: np.stack(arrays) for name, arrays in states.items()})


def _check_line(i: int, check: AnswerCheck) -> str:
    """One sample's check as a line: the estimate (or the indicator), the path and its refinement."""
    if check.estimated_relative_l2 is not None:
        estimate = f"estimated relative L2 {check.estimated_relative_l2:.3g} ({check.coverage:.0%} coverage)"
    elif check.indicator is not None:
        estimate = f"indicator {check.indicator:.3g} (model not calibrated: no estimate)"
    else:
        estimate = "no estimate for this model"
    line = f"  sample {i}: {estimate}, path {check.path}" + (f" ({check.rung})" if check.rung else "")
    if check.residual is not None:
        line += f", residual {check.residual:.3g}"
    if check.refine_iterations:
        line += f" after {check.refine_iterations} iterations in {check.refine_ms:.1f} ms"
    return line


def _solve(args: argparse.Namespace) -> None:
    """``pdeserve solve``."""
    from pdeserve.serving.client import AnswerCheck, SolverClient
    from pdeserve.serving.tensors import from_tensor

    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    if args.steps is not None and args.reference:
        raise ValueError("--reference checks a single Solve; it does not apply to --steps")
    if args.method != "auto" and not args.max_error:
        raise ValueError("--method chooses the paths that meet --max-error; it needs --max-error")
    if args.steps is not None and args.tolerance:
        raise ValueError("--tolerance refines a single Solve's answers; it does not apply to --steps")
    if path.suffix not in (".npy", ".npz"):
        _dataset_loader(path)  # before connecting: an install that cannot read the file says so first
    token = os.environ.get(args.token_env, "").strip() or None
    root_certificates = args.tls_root_cert.read_bytes() if args.tls_root_cert else None
    with SolverClient(
        args.target,
        timeout=args.timeout,
        token=token,
        application=args.application,
        tls=args.tls,
        root_certificates=root_certificates,
    ) as client:
        info = client.get_model(args.model, args.version)
        inputs, truth = _read_inputs(path, info)
        if args.steps is not None:
            _rollout_command(args, client, inputs)
            return
        response = client.solve_response(
            args.model,
            inputs,
            args.version,
            reference=args.reference,
            tolerance=args.tolerance,
            max_error=args.max_error,
            method=args.method,
        )
    outputs = {name: from_tensor(t, name) for name, t in response.outputs.items()}
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items())
    print(f"{response.model} v{response.version}: {shapes} in {response.inference_ms:.1f} ms")
    for i, check in enumerate(response.checks):
        print(_check_line(i, AnswerCheck.from_message(check)))
    if not response.grid_validated:
        print("  the grid is not in the model's validated range of sides, or the model has none")
    if response.out_of_range_inputs:
        print(f"  inputs outside their training range: {', '.join(response.out_of_range_inputs)}")
    for name, error in response.reference_relative_l2.items():
        print(f"  relative L2 of {name} against the classical solver (server-side): {error:.4f}")
    for name, array in outputs.items():
        if name in truth and truth[name].shape == array.shape:
            # torch: only a dataset file holds outputs, and reading one took the server extra anyway
            from pdeserve.operators.evaluation import relative_l2

            batched = array.ndim == len(info.outputs[0].shape) + 1
            pred, true = (array, truth[name]) if batched else (array[None], truth[name][None])
            print(
                f"  relative L2 of {name} against {path.name}: "
                f"{relative_l2(pred[:, None], true[:, None]):.4f}"
            )
    if args.out:
        _write_outputs(Path(args.out), outputs)
