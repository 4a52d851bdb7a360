"""Rollout accuracy of a next-state Navier-Stokes model along its horizon, against the classical solver.

Usage: ``python bench/rollout.py [--repo models] [--model ns-fno] [--data data/ns64.h5] [--samples 8]
[--steps 1,5,10,20,40]``. Takes the first ``--samples`` held-out trajectories of the model's training
file (its last ``n_test`` samples), feeds the model their first ``input_steps`` states, rolls it forward
(each prediction joins the input window, as the server's Rollout does) and compares the state after each
listed number of steps with the pseudo-spectral solution of the same initial vorticity, solved at the
data's resolution with the largest stable time step to the last listed step. Prints the one-step error
on every held-out trajectory, a table of relative L2 (mean and max over samples) per step, and writes
JSON (default ``bench/results/rollout.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from common import write_results

from pdeserve.datagen.dataset import load_dataset
from pdeserve.datagen.navier_stokes import navier_stokes_reference
from pdeserve.operators import load_model
from pdeserve.operators.pairs import operator_pairs


def relative_l2(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample ``||prediction - target|| / ||target||`` of ``(sample, *grid)`` arrays."""
    axes = tuple(range(1, target.ndim))
    return np.sqrt(((prediction - target) ** 2).sum(axes) / (target**2).sum(axes))


def rollout(model, window: list[np.ndarray], steps: int) -> list[np.ndarray]:
    """``steps`` predicted states, each fed back as the newest state of the input window."""
    states = list(window)
    for _ in range(steps):
        predicted = model.predict(dict(zip(model.input_names, states[-len(window) :], strict=True)))
        states.extend(predicted[name] for name in model.output_names)
    return states[len(window) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="models")
    parser.add_argument("--model", default="ns-fno")
    parser.add_argument("--data", default="data/ns64.h5")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", default="1,5,10,20,40")
    parser.add_argument("--out", default="bench/results/rollout.json")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]

    model = load_model(args.repo, args.model)
    data = load_dataset(args.data)
    if data.fingerprint() != model.card.dataset.fingerprint:
        raise SystemExit(f"{args.data} is not the data {args.model} v{model.version} was trained on")
    k, n_test = model.card.time_map.input_steps, model.card.dataset.n_test
    pairs = operator_pairs(data, model.card.time_map)
    held_out = slice(data.n_samples - n_test, data.n_samples)
    one_step = relative_l2(
        model.predict(dict(zip(model.input_names, pairs.x[held_out].transpose(1, 0, 2, 3), strict=True)))[
            model.output_names[0]
        ],
        pairs.y[held_out, 0],
    )
    picked = slice(held_out.start, held_out.start + args.samples)
    window = [pairs.x[picked, i] for i in range(k)]

    interval = data.parameters.record_every
    horizon = (k - 1 + max(steps)) * interval
    params = dataclasses.replace(data.parameters, final_time=horizon, time_step=1.0)
    params = dataclasses.replace(params, time_step=params.max_stable_time_step(data.attrs["resolution"]))
    started = time.perf_counter()
    reference = navier_stokes_reference(params, data.inputs["w0"][picked])  # (B, T, r, r), t = 1 .. horizon
    solve_seconds = time.perf_counter() - started
    predicted = rollout(model, window, max(steps))
    rows = []
    for step in steps:
        errors = relative_l2(predicted[step - 1], reference[:, k - 1 + step - 1])
        rows.append(
            {
                "step": step,
                "time": (k - 1 + step) * interval,
                "mean": float(errors.mean()),
                "max": float(errors.max()),
            }
        )
    print(
        f"{args.model} v{model.version}: one-step relative L2 on {n_test} held-out trajectories "
        f"{one_step.mean():.4f} (max {one_step.max():.4f})"
    )
    print(
        f"rollout from the states at t = 0..{(k - 1) * interval:g} of {args.samples} held-out trajectories "
        f"(reference: time step {params.time_step:g}, {solve_seconds:.0f} s)"
    )
    print("step  t     relative L2 mean  max")
    for row in rows:
        print(f"{row['step']:<5} {row['time']:<5g} {row['mean']:<17.4f} {row['max']:.4f}")
    write_results(
        args.out,
        {
            "model": args.model,
            "version": model.version,
            "one_step_mean": float(one_step.mean()),
            "one_step_max": float(one_step.max()),
            "n_test": n_test,
            "samples": args.samples,
            "reference_time_step": params.time_step,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
