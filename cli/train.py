"""``pdeserve train``: fit a neural operator on a dataset and publish it to a model repository."""

from __future__ import annotations

import argparse
import dataclasses
import json

from pdeserve.cli.parsing import Commands

EXAMPLES = """examples:
  pdeserve train --data data/darcy64.h5 --model fno --repo models --name darcy-fno
  pdeserve train --data data/darcy64.h5 --model fno --repo models --name darcy-fno \\
      --epochs 500 --scheduler step --step-size 100 --arg hidden_channels=32 --arg n_modes=[24,24]
  pdeserve train --data data/darcy64.h5 --model mgno --repo models --name darcy-mgno \\
      --loss h1 --scheduler onecycle --lr 5e-4 --batch-size 8 --val-fraction 0.1 --patience 50
  pdeserve train --data data/ns.h5 --model fno --repo models --name ns-fno --input-steps 10 --output-steps 1
  pdeserve train ... --resume            # continue an interrupted run from its last finished epoch
  torchrun --nproc_per_node 4 -m pdeserve.cli train ...   # data-parallel on 4 GPUs
"""


def _argument(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--arg``: the value as JSON, else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_train_command(commands: Commands) -> None:
    """Add ``train``: one flag per training setting, defaulting to the model's recipe."""
    from pdeserve.operators.registry import ARCHITECTURES
    from pdeserve.operators.settings import LOSSES, SCHEDULERS, TrainingSettings

    defaults = TrainingSettings()
    recipe_fields = {key for architecture in ARCHITECTURES.values() for key in architecture.recipe}
    train = commands.add(
        "train",
        help="train a neural operator and publish it to a model repository",
        description="Train a neural operator on a pdeserve dataset, evaluate it on the "
        "held-out split and publish it as the next version in the model repository.",
        epilog=EXAMPLES,
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
    for flag, name, kind, text in (
        ("--epochs", "epochs", int, "passes over the training split"),
        ("--batch-size", "batch_size", int, "samples per optimisation step"),
        ("--lr", "learning_rate", float, "Adam (peak) learning rate"),
        ("--weight-decay", "weight_decay", float, "Adam weight decay"),
        ("--step-size", "step_size", int, "epochs between drops of the step schedule"),
        ("--gamma", "gamma", float, "factor of each drop of the step schedule"),
        ("--onecycle-div", "onecycle_div", float, "one-cycle schedule: start at lr / this"),
        ("--grad-clip", "grad_clip", float, "clip the gradient norm to this (0: off)"),
        ("--test-fraction", "test_fraction", float, "held-out fraction (the last samples of the file)"),
        ("--val-fraction", "val_fraction", float, "validation fraction (just before the test samples)"),
        ("--patience", "patience", int, "stop after this many epochs without a better validation error"),
        ("--seed", "seed", int, "seeds initialisation and shuffling"),
    ):
        if name in recipe_fields:  # None: the model's recipe decides, then TrainingSettings' default
            text += f" (default: the model's recipe, else {getattr(defaults, name)})"
        train.add_argument(flag, dest=name, type=kind, default=getattr(defaults, name), help=text)
    for flag, name, choices, text in (
        ("--scheduler", "scheduler", SCHEDULERS, "learning-rate schedule"),
        ("--loss", "loss", LOSSES, "relative L2 or relative H1 training loss"),
        ("--device", "device", ("auto", "cpu", "cuda"), "auto: CUDA if present"),
        ("--amp", "amp", ("auto", "on", "off"), "mixed precision (auto: on with CUDA)"),
    ):
        if name in recipe_fields:
            text += f" (default: the model's recipe, else {getattr(defaults, name)})"
        train.add_argument(flag, dest=name, choices=choices, default=getattr(defaults, name), help=text)
    train.set_defaults(**dict.fromkeys(recipe_fields))
    train.add_argument(
        "--input-steps", type=int, default=1, help="trajectory data: states given to the operator"
    )
    train.add_argument(
        "--output-steps", type=int, help="trajectory data: states predicted (default: all the rest)"
    )
    train.add_argument(
        "--validation-samples",
        type=int,
        default=4,
        metavar="N",
        help="fresh samples per grid side of the resolution sweep recorded in the card (0: no sweep)",
    )
    train.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    train.add_argument("--tensorboard", metavar="DIR", help="also log the history for TensorBoard")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> None:
    import shutil

    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.distributed import Distributed
    from pdeserve.operators.lineage import train_lineage
    from pdeserve.operators.pairs import TimeMap
    from pdeserve.operators.registry import get_architecture
    from pdeserve.operators.repository import ModelRepository, check_name
    from pdeserve.operators.settings import TrainingSettings
    from pdeserve.operators.training import publish, record_checks, train

    check_name(args.name)
    data = load_dataset(args.data)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingSettings)}
    settings = get_architecture(args.model).training_settings(
        **{k: v for k, v in given.items() if v is not None}
    )
    time_map = TimeMap(args.input_steps, args.output_steps)
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
    lineage = train_lineage(args.data, data, surrogate.card, args.repo, args.command_line)
    surrogate.card = record_checks(surrogate, data, args.validation_samples, settings.seed).replace(
        lineage=lineage
    )
    version = publish(args.repo, args.name, surrogate)
    shutil.rmtree(folder, ignore_errors=True)
    print(
        f"published {args.name} version {version} to {args.repo}: held-out relative L2 "
        f"{metrics['test_relative_l2']:.4f} (mean predictor {metrics['baseline_mean_relative_l2']:.4f}), "
        f"{metrics['train_seconds']:.0f} s"
    )
