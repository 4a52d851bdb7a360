"""``pdeserve train`` and ``pdeserve eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json

from pdeserve.datagen.cli import HelpFormatter

TRAIN_EXAMPLES = """examples:
  pdeserve train --data data/darcy64.h5 --model fno --repo models --name darcy-fno
  pdeserve train --data data/darcy64.h5 --model fno --repo models --name darcy-fno \\
      --epochs 500 --scheduler step --step-size 100 --arg hidden_channels=32 --arg n_modes=[24,24]
"""

EVAL_EXAMPLES = """examples:
  pdeserve eval --repo models --name darcy-fno --data data/darcy64-test.h5
  pdeserve eval --repo models --name darcy-fno:1 --data data/darcy128.h5
"""


def _argument(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``eval`` on the ``pdeserve`` subcommand set."""
    from pdeserve.operators.registry import ARCHITECTURES
    from pdeserve.operators.settings import TrainingSettings

    defaults = TrainingSettings()
    train = sub.add_parser(
        "train",
        help="train a neural operator and publish it to a model repository",
        description="Train a neural operator on a pdeserve dataset, evaluate it on the "
        "held-out split and publish it as the next version in the model repository.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    train.add_argument("--data", required=True, help="HDF5 dataset from `pdeserve datagen`")
    train.add_argument("--model", required=True, choices=sorted(ARCHITECTURES), help="architecture")
    train.add_argument("--repo", required=True, help="model repository folder")
    train.add_argument("--name", required=True, help="model name, e.g. darcy-fno")
    train.add_argument(
        "--arg",
        action="append",
        type=_argument,
        default=[],
        metavar="KEY=VALUE",
        help="architecture argument (JSON value), repeatable, e.g. hidden_channels=64",
    )
    for flag, field, kind, text in (
        ("--epochs", "epochs", int, "passes over the training split"),
        ("--batch-size", "batch_size", int, "samples per optimisation step"),
        ("--lr", "learning_rate", float, "Adam learning rate"),
        ("--weight-decay", "weight_decay", float, "Adam weight decay"),
        ("--step-size", "step_size", int, "epochs between drops of the step schedule"),
        ("--gamma", "gamma", float, "factor of each drop of the step schedule"),
        ("--test-fraction", "test_fraction", float, "held-out fraction (the last samples of the file)"),
        ("--seed", "seed", int, "seeds initialisation and shuffling"),
    ):
        train.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), help=text)
    train.add_argument("--scheduler", choices=("cosine", "step"), default=defaults.scheduler, help="schedule")
    train.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=defaults.device, help="auto: CUDA if present"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval",
        help="relative L2 error of a published model on a dataset",
        epilog=EVAL_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    ev.add_argument("--repo", required=True, help="model repository folder")
    ev.add_argument(
        "--name", required=True, metavar="NAME[:VERSION]", help="model (newest version by default)"
    )
    ev.add_argument("--data", required=True, help="HDF5 dataset with the model's input and output fields")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> None:
    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.repository import check_name
    from pdeserve.operators.settings import TrainingSettings
    from pdeserve.operators.training import publish, train

    check_name(args.name)
    settings = TrainingSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingSettings)}
    )
    data = load_dataset(args.data)
    surrogate, metrics = train(data, args.model, dict(args.arg), settings, progress=not args.quiet)
    version = publish(args.repo, args.name, surrogate)
    print(
        f"published {args.name} version {version} to {args.repo}: held-out relative L2 "
        f"{metrics['test_relative_l2']:.4f} (mean predictor {metrics['baseline_mean_relative_l2']:.4f}), "
        f"{metrics['train_seconds']:.0f} s"
    )


def _eval(args: argparse.Namespace) -> None:
    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.surrogate import load_model
    from pdeserve.operators.training import evaluate

    name, _, version = args.name.partition(":")
    surrogate = load_model(args.repo, name, version or None)
    data = load_dataset(args.data)
    missing = [
        f
        for f in (*surrogate.input_names, *surrogate.output_names)
        if f not in data.inputs and f not in data.outputs
    ]
    if missing or data.attrs["pde"] != surrogate.config["pde"]:
        raise ValueError(
            f"{args.data} ({data.attrs['pde']}) does not hold the fields of {name} "
            f"({surrogate.config['pde']}: {surrogate.input_names} -> {surrogate.output_names})"
        )
    metrics = evaluate(surrogate, data)
    if args.json:
        print(json.dumps({"model": name, "version": surrogate.version, **metrics}))
    else:
        sides = "x".join(str(s) for s in next(iter(data.inputs.values())).shape[1:])
        print(
            f"{name} v{surrogate.version} on {args.data} ({int(metrics['n_samples'])} samples at {sides}): "
            f"relative L2 mean {metrics['relative_l2']:.4f}, median {metrics['relative_l2_median']:.4f}, "
            f"max {metrics['relative_l2_max']:.4f}"
        )
