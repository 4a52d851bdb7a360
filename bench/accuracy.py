"""Accuracy of every registered operator on the same Darcy and Burgers data under one wall-clock budget.

Usage: ``python bench/accuracy.py [--budget 120] [--models fno,tfno,mgno,galerkin] [--device auto]``.
Small settings by default (this CPU, minutes); the papers' full settings are listed in the README and
need a GPU. Each model first trains one epoch to time it, then trains ``budget / epoch time`` epochs
with its paper's recipe (optimiser schedule, batch size); all are scored by relative L2 on the same
held-out samples. Prints a table and writes JSON (default ``bench/results/accuracy.json``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import resolve_device, write_results

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, LoadedDataset, load_dataset, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.operators.registry import ARCHITECTURES, get_architecture
from pdeserve.operators.training import train


def datasets(folder: Path, args: argparse.Namespace) -> dict[str, LoadedDataset]:
    darcy = GenerationRequest(
        get_family("darcy"), DarcyParameters(), args.n, args.darcy_resolution, seed=args.seed
    )
    burgers = GenerationRequest(
        get_family("burgers"),
        BurgersParameters(solve_resolution=args.burgers_solve_resolution),
        args.n,
        args.burgers_resolution,
        seed=args.seed,
    )
    return {
        f"darcy {args.darcy_resolution}": load_dataset(write_dataset(darcy, folder / "d.h5", progress=False)),
        f"burgers {args.burgers_resolution}": load_dataset(
            write_dataset(burgers, folder / "b.h5", workers=args.workers, progress=False)
        ),
    }


def run(data: LoadedDataset, model: str, budget: float, device: str) -> dict[str, float] | str:
    architecture = get_architecture(model)  # trains with its paper's recipe (the registry's)
    try:
        probe, _ = train(
            data, model, {}, architecture.training_settings(epochs=1, device=device), progress=False
        )
    except ValueError as exc:  # the model does not fit this grid (e.g. MgNO in 1D)
        return str(exc)
    epoch_seconds = sum(e.seconds for e in probe.card.history)
    epochs = max(1, int(budget / epoch_seconds))
    started = time.perf_counter()
    surrogate, metrics = train(
        data, model, {}, architecture.training_settings(epochs=epochs, device=device), progress=False
    )
    return {
        "test_relative_l2": metrics["test_relative_l2"],
        "epochs": epochs,
        "seconds": time.perf_counter() - started,
        "parameters": surrogate.parameter_count(),
        "baseline_mean_relative_l2": metrics["baseline_mean_relative_l2"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per model and dataset")
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--n", type=int, default=300, help="samples per dataset (10%% held out)")
    parser.add_argument("--darcy-resolution", type=int, default=64)
    parser.add_argument("--burgers-resolution", type=int, default=256)
    parser.add_argument("--burgers-solve-resolution", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench/results/accuracy.json")
    args = parser.parse_args()
    device, device_name = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as folder:
        data = datasets(Path(folder), args)
    results: dict[str, dict[str, object]] = {}
    for label, dataset in data.items():
        for model in args.models.split(","):
            results.setdefault(label, {})[model] = run(dataset, model, args.budget, device)
            print(label, model, results[label][model], flush=True)
    print(f"\nrelative L2 on held-out samples, {args.budget:.0f} s of training each, {device_name}")
    print(f"{'dataset':14s} {'model':9s} {'rel L2':>8s} {'epochs':>7s} {'params':>9s}")
    for label, row in results.items():
        for model, result in row.items():
            if isinstance(result, str):
                print(f"{label:14s} {model:9s} {'n/a':>8s}  ({result})")
            else:
                print(
                    f"{label:14s} {model:9s} {result['test_relative_l2']:8.4f} {result['epochs']:7d} "
                    f"{result['parameters']:9d}"
                )
    write_results(args.out, {"device": device_name, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
