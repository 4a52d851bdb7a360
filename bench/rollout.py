"""Rollout accuracy of a next-state Navier-Stokes model along its horizon, against the classical solver.

Usage: ``python bench/rollout.py [--repo models] [--model ns-fno] [--data data/ns64.h5] [--samples 8]
[--steps 1,5,10,20,40]``. Takes the first ``--samples`` held-out trajectories of the model's training
file (its last ``n_test`` samples), feeds the model their first ``input_steps`` states, rolls it forward
(each prediction joins the input window, as the server's Rollout does) and compares the state after each
listed number of steps with the pseudo-spectral solution of the same initial vorticity, solved at the
data's resolution with the largest stable time step to the last listed step. Prints the one-step error
on every held-out trajectory, a table of relative L2 (mean and max over samples) per step, and writes
JSON (default ``bench/results/rollout.json``).

Payoff along the rollout (McGreivy & Hakim's rule: equal accuracy, against a strong classical method):
the classical side is the payoff benchmark's Navier-Stokes ladder (``bench/payoff.py``: CNAB2
pseudo-spectral on 8, 16 and 32 points per side with every step of 1e-3 ... 3.2e-2 its stability check
admits over one record interval; one that fails over the horizon is never as accurate), started
from the same last exact state the surrogate's window ends with and run to the last listed step; the
surrogate rolls each trajectory out alone (batch 1) and all of them together (batched). Both run on
one torch thread, interleaved trajectory by trajectory. At each listed step: the cheapest classical
configuration whose mean error is at most the surrogate's, its time to that step (its time to the last
step times the fraction of the horizon: the integration's cost is uniform in time), and the speedup of
the surrogate (classical time / surrogate time; below 1 the classical solver is faster). A surrogate
whose error is at or above the zero field's (1.0) has no skill there, and no speedup is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from common import write_results
from payoff import navier_stokes_methods, plans, timed

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


# The payoff benchmark's classical Navier-Stokes ladder, on grids coarser than the data's.
CLASSICAL_GRIDS = (8, 16, 32)
CLASSICAL_TIME_STEPS = next(p for p in plans(quick=False) if p.family == "navier-stokes").time_steps
# The relative L2 error of answering zero: a surrogate at or above it has no skill.
NO_SKILL = 1.0


def payoff_rows(model, params, window, reference, k: int, steps: list[int]) -> tuple[list[dict], list[dict]]:
    """The classical ladder's points and, per listed step, the surrogate against the cheapest classical
    configuration at least as accurate (see the module's docstring)."""
    interval, horizon = params.record_every, max(steps)
    r = window[0].shape[-1]
    times = interval * np.arange(1, horizon + 1)
    methods = navier_stokes_methods(params, r, CLASSICAL_GRIDS, CLASSICAL_TIME_STEPS, times)
    samples = len(window[0])
    seconds = {m: [] for m in methods}
    answers = {m: [] for m in methods}
    surrogate_seconds = []
    rollout(model, [w[:1] for w in window], 1)  # warm-up: the served pass builds its per-grid tables
    for i in range(samples):  # interleaved: one trajectory's surrogate rollout, then its classical solves
        elapsed, _ = timed(lambda i=i: rollout(model, [w[i : i + 1] for w in window], horizon))
        surrogate_seconds.append(elapsed)
        for method in methods:
            started = time.perf_counter()
            answers[method].append(method.solve(window[-1][i : i + 1].astype(np.float64))[0])
            seconds[method].append(time.perf_counter() - started)
    batched_seconds, predicted = timed(lambda: rollout(model, window, horizon))
    per_pass_ms = {"b1": float(np.median(surrogate_seconds)) / horizon * 1e3}
    per_pass_ms["best"] = min(per_pass_ms["b1"], batched_seconds / samples / horizon * 1e3)
    points = []
    for method in methods:
        started = time.perf_counter()
        method.solve(window[-1].astype(np.float64))  # all trajectories in one batch
        b1 = float(np.median(seconds[method])) * 1e3
        states = np.stack(answers[method])  # (sample, horizon, r, r)
        # A step unstable over the horizon gives NaN errors, never picked.
        with np.errstate(invalid="ignore", over="ignore"):
            errors = [float(relative_l2(states[:, s - 1], reference[:, k - 1 + s - 1]).mean()) for s in steps]
        points.append(
            {
                "grid": method.grid,
                "time_step": method.time_step,
                "ms_to_horizon": {"b1": b1, "best": min(b1, (time.perf_counter() - started) / samples * 1e3)},
                "errors": dict(zip(steps, errors, strict=True)),
            }
        )
    rows = []
    for step in steps:
        error = float(relative_l2(predicted[step - 1], reference[:, k - 1 + step - 1]).mean())
        # No skill at or above the zero field's error (1.0), as in the payoff benchmark: nothing to match.
        accurate = [p for p in points if p["errors"][step] <= error] if error < NO_SKILL else []
        row = {"step": step, "surrogate_error": error, "skill": error < NO_SKILL}
        for side in ("b1", "best"):
            cheapest = min(accurate, key=lambda p, side=side: p["ms_to_horizon"][side], default=None)
            surrogate_ms = per_pass_ms[side] * step
            row[side] = {"surrogate_ms": surrogate_ms, "classical": None, "speedup": None}
            if cheapest is not None:
                classical_ms = cheapest["ms_to_horizon"][side] * step / horizon
                row[side]["classical"] = {
                    "grid": cheapest["grid"],
                    "time_step": cheapest["time_step"],
                    "error": cheapest["errors"][step],
                    "ms": classical_ms,
                }
                row[side]["speedup"] = classical_ms / surrogate_ms
        rows.append(row)
    return points, rows


def print_payoff(rows: list[dict]) -> None:
    print("per side (b1: batch 1, best: batched): surrogate ms | cheapest classical as accurate | speedup")
    for row in rows:
        cells = []
        for side in ("b1", "best"):
            cell, c = row[side], row[side]["classical"]
            classical = (
                ("none as inaccurate" if row["skill"] else "no skill (error >= the zero field's)")
                if c is None
                else f"{c['grid']}x{c['grid']} dt {c['time_step']:g}: {c['error']:.4f} in {c['ms']:.1f} ms"
            )
            speedup = "-" if c is None else f"{cell['speedup']:.2f}x"
            cells.append(f"{side} {cell['surrogate_ms']:.1f} ms | {classical} | {speedup}")
        print(f"step {row['step']:<3} error {row['surrogate_error']:.4f}: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="models")
    parser.add_argument("--model", default="ns-fno")
    parser.add_argument("--data", default="data/ns64.h5")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", default="1,5,10,20,40")
    parser.add_argument("--out", default="bench/results/rollout.json")
    parser.add_argument("--no-payoff", action="store_true", help="errors only, no classical comparison")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    torch.set_num_threads(1)  # one thread per side, as the payoff benchmark

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
    points, payoff = ([], []) if args.no_payoff else payoff_rows(model, params, window, reference, k, steps)
    if payoff:
        print_payoff(payoff)
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
            "classical_points": points,
            "payoff": payoff,
        },
    )


if __name__ == "__main__":
    main()
