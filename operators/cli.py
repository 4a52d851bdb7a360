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
  pdeserve train --data data/darcy64.h5 --model mgno --repo models --name darcy-mgno \\
      --loss h1 --scheduler onecycle --lr 5e-4 --batch-size 8 --val-fraction 0.1 --patience 50
  pdeserve train --data data/ns.h5 --model fno --repo models --name ns-fno --input-steps 10 --output-steps 1
  pdeserve train ... --resume            # continue an interrupted run from its last finished epoch
  torchrun --nproc_per_node 4 -m pdeserve.serving.cli train ...   # data-parallel on 4 GPUs
"""

EVAL_EXAMPLES = """examples:
  pdeserve eval --repo models --name darcy-fno --data data/darcy64-test.h5
  pdeserve eval --repo models --name darcy-fno:1 --data data/darcy64.h5 --data data/darcy128.h5
  pdeserve eval --repo models --name darcy-fno --data data/darcy64.h5 --plot darcy-fno.png
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
    from pdeserve.operators.settings import LOSSES, SCHEDULERS, TrainingSettings

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
        ("--val-fraction", "val_fraction", float, "validation fraction (just before the test samples)"),
        ("--patience", "patience", int, "stop after this many epochs without a better validation error"),
        ("--seed", "seed", int, "seeds initialisation and shuffling"),
    ):
        train.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), help=text)
    for flag, field, choices, text in (
        ("--scheduler", "scheduler", SCHEDULERS, "learning-rate schedule"),
        ("--loss", "loss", LOSSES, "relative L2 or relative H1 training loss"),
        ("--device", "device", ("auto", "cpu", "cuda"), "auto: CUDA if present"),
        ("--amp", "amp", ("auto", "on", "off"), "mixed precision (auto: on with CUDA)"),
    ):
        train.add_argument(flag, dest=field, choices=choices, default=getattr(defaults, field), help=text)
    train.add_argument(
        "--input-steps", type=int, default=1, help="trajectory data: states given to the operator"
    )
    train.add_argument(
        "--output-steps", type=int, help="trajectory data: states predicted (default: all the rest)"
    )
    train.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    train.add_argument("--tensorboard", metavar="DIR", help="also log the history for TensorBoard")
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
    ev.add_argument(
        "--data",
        required=True,
        action="append",
        help="HDF5 dataset with the model's fields, repeatable (one row per file: e.g. one per resolution)",
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON (one line per file)")
    ev.add_argument("--plot", metavar="PNG", help="input / truth / prediction / error of the first file")
    ev.add_argument("--samples", type=int, default=3, help="samples in the --plot figure")
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> None:
    import shutil

    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.distributed import Distributed
    from pdeserve.operators.pairs import TimeMap
    from pdeserve.operators.repository import ModelRepository, check_name
    from pdeserve.operators.settings import TrainingSettings
    from pdeserve.operators.training import publish, train

    check_name(args.name)
    settings = TrainingSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingSettings)}
    )
    time_map = TimeMap(args.input_steps, args.output_steps)
    data = load_dataset(args.data)
    folder = ModelRepository(args.repo).training_folder(args.name)
    if folder.exists() and not args.resume:
        shutil.rmtree(folder)  # a fresh run: the state of an older one must not leak in
    surrogate, metrics = train(
        data,
        args.model,
        dict(args.arg),
        settings,
        progress=not args.quiet,
        time_map=time_map,
        checkpoint_dir=folder,
        resume=args.resume,
        tensorboard_dir=args.tensorboard,
    )
    if not Distributed.from_environment().is_main:
        return
    version = publish(args.repo, args.name, surrogate)
    shutil.rmtree(folder, ignore_errors=True)
    print(
        f"published {args.name} version {version} to {args.repo}: held-out relative L2 "
        f"{metrics['test_relative_l2']:.4f} (mean predictor {metrics['baseline_mean_relative_l2']:.4f}), "
        f"{metrics['train_seconds']:.0f} s"
    )


def _eval(args: argparse.Namespace) -> None:
    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.evaluation import evaluate, plot_predictions
    from pdeserve.operators.surrogate import load_model

    name, _, version = args.name.partition(":")
    surrogate = load_model(args.repo, name, version or None)
    trained = "x".join(str(s) for s in surrogate.config["training_resolution"])
    for i, path in enumerate(args.data):
        data = load_dataset(path)
        metrics = evaluate(surrogate, data)
        sides = "x".join(str(s) for s in next(iter(data.inputs.values())).shape[1:])
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
