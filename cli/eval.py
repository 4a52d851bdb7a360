"""``pdeserve eval``: the relative L2 error of a published model on datasets."""

from __future__ import annotations

import argparse
import json

from pdeserve.cli.parsing import Commands

EXAMPLES = """examples:
  pdeserve eval --repo models --name darcy-fno --data data/darcy64-test.h5
  pdeserve eval --repo models --name darcy-fno:1 --data data/darcy64.h5 --data data/darcy128.h5
  pdeserve eval --repo models --name darcy-fno --data data/darcy64.h5 --plot darcy-fno.png
"""


def add_eval_command(commands: Commands) -> None:
    """Add ``eval``."""
    evaluate = commands.add(
        "eval", help="relative L2 error of a published model on a dataset", epilog=EXAMPLES
    )
    evaluate.add_argument("--repo", required=True, help="model repository folder")
    evaluate.add_argument(
        "--name", required=True, metavar="NAME[:VERSION]", help="model (newest version by default)"
    )
    evaluate.add_argument(
        "--data",
        required=True,
        action="append",
        help="HDF5 dataset with the model's fields, repeatable (one row per file: e.g. one per resolution)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON (one line per file)")
    evaluate.add_argument(
        "--plot", metavar="PNG", help="input / truth / prediction / error of the first file"
    )
    evaluate.add_argument("--samples", type=int, default=3, help="samples in the --plot figure")
    evaluate.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> None:
    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.evaluation import evaluate, plot_predictions
    from pdeserve.operators.surrogate import load_model

    name, _, version = args.name.partition(":")
    surrogate = load_model(args.repo, name, version or None)
    trained = "x".join(str(side) for side in surrogate.card.training_resolution)
    for i, path in enumerate(args.data):
        data = load_dataset(path)
        metrics = evaluate(surrogate, data)
        sides = "x".join(str(side) for side in next(iter(data.inputs.values())).shape[1:])
        if args.json:
            print(json.dumps({"model": name, "version": surrogate.version, "data": path, **metrics}))
        else:
            print(
                f"{name} v{surrogate.version} (trained at {trained}) on {path} "
                f"({int(metrics['n_samples'])} samples at {sides}): relative L2 mean "
                f"{metrics['relative_l2']:.4f}, median {metrics['relative_l2_median']:.4f}, "
                f"max {metrics['relative_l2_max']:.4f}"
            )
        if args.plot and i == 0:
            plot_predictions(surrogate, data, args.plot, args.samples)
            print(f"figure written to {args.plot}")
