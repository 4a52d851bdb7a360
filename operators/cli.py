"""``pdeserve train``, ``eval``, ``models list|rollback`` and ``datagen retrain``.

``datagen retrain`` lives here, not in ``pdeserve.datagen.cli``: it trains, and datagen must not import
operators (DESIGN.md). The top-level parser (``pdeserve.serving.cli``) adds it to the ``datagen``
command with :func:`add_datagen_subcommands`; the standalone ``datagen`` script therefore has no
``retrain`` (it only generates, lists and inspects data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

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

RETRAIN_EXAMPLES = """examples:
  pdeserve datagen retrain --repo models --model darcy-fno --n 200 --epochs 10
  pdeserve datagen retrain --repo models --model darcy-fno --data data/darcy64.h5   # model without lineage
  pdeserve datagen retrain --repo models --model burgers-fno --n 100 --viscosity 0.05
  pdeserve datagen retrain --repo models --model ns-fno --n 50 --ray-address auto --from-scratch --epochs 100
exit status: 0 published, 1 error, 2 usage, 3 refused (regression on an old held-out set; nothing published)
"""

MODELS_EXAMPLES = """examples:
  pdeserve models list --repo models
  pdeserve models list --repo models darcy-fno
  pdeserve models rollback darcy-fno --to 1 --repo models
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
    recipe_fields = {key for architecture in ARCHITECTURES.values() for key in architecture.recipe}
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
        if field in recipe_fields:  # None: the model's recipe decides, then TrainingSettings' default
            text += f" (default: the model's recipe, else {getattr(defaults, field)})"
        train.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), help=text)
    for flag, field, choices, text in (
        ("--scheduler", "scheduler", SCHEDULERS, "learning-rate schedule"),
        ("--loss", "loss", LOSSES, "relative L2 or relative H1 training loss"),
        ("--device", "device", ("auto", "cpu", "cuda"), "auto: CUDA if present"),
        ("--amp", "amp", ("auto", "on", "off"), "mixed precision (auto: on with CUDA)"),
    ):
        if field in recipe_fields:
            text += f" (default: the model's recipe, else {getattr(defaults, field)})"
        train.add_argument(flag, dest=field, choices=choices, default=getattr(defaults, field), help=text)
    train.set_defaults(**dict.fromkeys(recipe_fields))
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

    models = sub.add_parser(
        "models",
        help="list a repository's models and versions; roll a model back",
        epilog=MODELS_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    actions = models.add_subparsers(dest="models_command", metavar="{list,rollback}")
    actions.required = True
    listing = actions.add_parser(
        "list",
        help="every version with its origin, held-out error and data; * marks the served one",
        epilog=MODELS_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    listing.add_argument("name", nargs="?", help="only this model")
    listing.add_argument("--repo", required=True, help="model repository folder")
    listing.set_defaults(func=_models_list)
    rollback = actions.add_parser(
        "rollback",
        help="serve an older version again (republished as the next version)",
        description="Publish VERSION's files again as the next version, so requests that name no "
        "version get its weights; versions stay immutable and the lineage says rollback_of.",
        epilog=MODELS_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    rollback.add_argument("name", help="model name")
    rollback.add_argument("--to", required=True, metavar="VERSION", help="the version to serve again")
    rollback.add_argument("--repo", required=True, help="model repository folder")
    rollback.set_defaults(func=_models_rollback)


def add_datagen_subcommands(datagen: argparse.ArgumentParser) -> None:
    """Add ``retrain`` to the ``datagen`` command that ``pdeserve.datagen.cli.add_subcommands`` filled.

    Every PDE family's options are accepted (``--viscosity``, ``--alpha``, ...); only those given
    override the model's recorded parameters, and one that the model's family lacks is an error.
    """
    from pdeserve.datagen.families import FAMILIES
    from pdeserve.operators.retrain import FINE_TUNE_LR_FACTOR, RetrainOptions

    sub = next(a for a in datagen._actions if isinstance(a, argparse._SubParsersAction))
    sub.metavar = sub.metavar.rstrip("}") + ",retrain}"
    defaults = RetrainOptions(repo="", name="")
    retrain = sub.add_parser(
        "retrain",
        help="generate more data for a published model, fine-tune it, publish it if it does not regress",
        description="Generate N samples with the PDE and parameters in the model's lineage, fine-tune "
        "the newest version on old + new training data, evaluate parent and candidate on every "
        "held-out set, and publish the next version only if no old held-out error grows by more than "
        "--max-regression (relative).",
        epilog=RETRAIN_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    retrain.add_argument("--repo", required=True, help="model repository folder")
    retrain.add_argument("--model", required=True, metavar="NAME", help="model to retrain (newest version)")
    retrain.add_argument("--n", type=int, default=defaults.n, help="new samples to generate")
    retrain.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    retrain.add_argument(
        "--lr",
        type=float,
        help=f"learning rate (default: the parent's, times {FINE_TUNE_LR_FACTOR:g} when fine-tuning)",
    )
    retrain.add_argument(
        "--from-scratch", action="store_true", help="train a fresh model of the same architecture"
    )
    retrain.add_argument(
        "--max-regression",
        type=float,
        default=defaults.max_regression,
        help="refuse if the error on an old held-out set grows by more than this fraction "
        "(negative: demand an improvement)",
    )
    retrain.add_argument(
        "--seed", type=int, help="seed of the new data (default: above every seed in the lineage)"
    )
    retrain.add_argument(
        "--data", help="the training file of a version published before lineage was recorded"
    )
    retrain.add_argument("--workers", type=int, default=1, help="solver processes (or Ray workers)")
    retrain.add_argument(
        "--ray-address", help="generate on Ray: 'auto' or HOST:PORT joins a cluster, 'local' starts one"
    )
    retrain.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=defaults.device, help="auto: CUDA if present"
    )
    retrain.add_argument("--quiet", action="store_true", help="no progress bars")
    options = retrain.add_argument_group("PDE options (override the model's recorded parameters)")
    families: dict[str, list[str]] = {}
    for family in FAMILIES.values():
        scratch = argparse.ArgumentParser(add_help=False)
        family.add_options(scratch)  # the same options, types and choices as `datagen <pde>`
        for action in scratch._actions:
            if action.dest not in families:
                options.add_argument(
                    *action.option_strings,
                    dest=action.dest,
                    type=action.type,
                    choices=action.choices,
                    default=argparse.SUPPRESS,  # absent = keep the recorded value
                    help=action.help,
                )
            families.setdefault(action.dest, []).append(family.name)
    for action in options._group_actions:
        action.help = f"{action.help} ({', '.join(families[action.dest])})"
    retrain.set_defaults(func=_retrain, pde_options=sorted(families))


def _train(args: argparse.Namespace) -> None:
    import shutil

    from pdeserve.datagen.dataset import load_dataset
    from pdeserve.operators.distributed import Distributed
    from pdeserve.operators.pairs import TimeMap
    from pdeserve.operators.registry import get_architecture
    from pdeserve.operators.repository import ModelRepository, check_name
    from pdeserve.operators.retrain import train_lineage
    from pdeserve.operators.settings import TrainingSettings
    from pdeserve.operators.training import publish, train

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
    surrogate.config["lineage"] = train_lineage(
        args.data, data, surrogate.config, args.repo, getattr(args, "command_line", [])
    )
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


def _retrain(args: argparse.Namespace) -> int:
    from pdeserve.operators.retrain import EXIT_REFUSED, RetrainOptions, retrain

    options = RetrainOptions(
        repo=args.repo,
        name=args.model,
        n=args.n,
        overrides={k: getattr(args, k) for k in args.pde_options if hasattr(args, k)},
        epochs=args.epochs,
        learning_rate=args.lr,
        from_scratch=args.from_scratch,
        max_regression=args.max_regression,
        seed=args.seed,
        data=args.data,
        workers=args.workers,
        ray_address=args.ray_address,
        device=args.device,
        progress=not args.quiet,
        command=getattr(args, "command_line", []),
    )
    result = retrain(options, log=print)
    print(f"held-out relative L2, parent v{result.parent} -> candidate (mean over each set's samples):")
    for h in result.held_out:
        verdict = "new data, not gated" if h.new else "ok"
        if h.regressed(args.max_regression):
            verdict = f"REFUSED (limit {args.max_regression:+.1%})"
        print(
            f"  {h.path} ({h.n_samples} held out): {h.parent:.4f} -> {h.candidate:.4f} "
            f"({h.change:+.1%}) {verdict}"
        )
    if result.version is None:
        worse = sum(h.regressed(args.max_regression) for h in result.held_out)
        print(
            f"pdeserve: refused: the candidate's error grew by more than {args.max_regression:+.1%} on "
            f"{worse} old held-out set(s); nothing published ({args.model} stays at v{result.parent})",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    print(f"published {args.model} version {result.version} (parent {result.parent}) to {args.repo}")
    return 0


def _models_list(args: argparse.Namespace) -> None:
    from pdeserve.operators.checkpoint import read_config
    from pdeserve.operators.repository import ModelRepository

    repo = ModelRepository(args.repo)
    if args.name:
        repo.resolve(args.name)  # unknown model: one clear error
    names = [args.name] if args.name else repo.names()
    if not names:
        raise LookupError(f"no published models in {args.repo}")
    for name in names:
        versions = repo.versions(name)
        print(f"{name} (* = served to requests that name no version)")
        print(f"  {'version':<9}{'published':<27}{'held-out rel L2':<17}{'datasets':<10}origin")
        for version in versions:
            folder = repo.root / name / version
            config = read_config(folder)
            metrics = (
                json.loads((folder / "metrics.json").read_text())
                if (folder / "metrics.json").is_file()
                else {}
            )
            lineage = config.get("lineage") or {}
            error = metrics.get("test_relative_l2")
            marker = "*" if version == versions[-1] else " "
            print(
                f"  {version + marker:<9}{lineage.get('published_at', config['created_at']):<27}"
                f"{'-' if error is None else f'{error:.4f}':<17}"
                f"{len(lineage.get('datasets', [])) or '?':<10}{_origin(lineage)}"
            )


def _origin(lineage: dict) -> str:
    """How a version came about, from its lineage."""
    mode = lineage.get("mode")
    if mode == "rollback":
        return f"rollback of {lineage['rollback_of']} (replacing {lineage['replaces']})"
    if mode == "fine-tune":
        return f"fine-tuned from {lineage['parent']}"
    if mode == "from-scratch":
        return f"retrained from scratch, parent {lineage['parent']}"
    if mode == "train":
        return "trained"
    return "trained (published before lineage was recorded)"


def _models_rollback(args: argparse.Namespace) -> None:
    from pdeserve.operators.repository import ModelRepository

    version = ModelRepository(args.repo).rollback(args.name, args.to, getattr(args, "command_line", []))
    print(
        f"published {args.name} version {version}: version {args.to}'s weights, now served to requests "
        "that name no version"
    )
