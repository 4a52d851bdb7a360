"""``pdeserve retrain``, also ``pdeserve datagen retrain`` and ``datagen retrain``: one command, three names.

Generate more data with a published model's PDE, fine-tune it, gate the candidate on every old
held-out set and publish it only if none regresses.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from pdeserve.cli.parsing import Commands

EXAMPLES = """examples:
  pdeserve retrain --repo models --model darcy-fno --n 200 --epochs 10
  pdeserve datagen retrain --repo models --model darcy-fno --n 200 --epochs 10   # the same command
  pdeserve datagen retrain --repo models --model darcy-fno --data data/darcy64.h5   # model without lineage
  pdeserve datagen retrain --repo models --model burgers-fno --n 100 --viscosity 0.05
  pdeserve datagen retrain --repo models --model ns-fno --n 50 --ray-address auto --from-scratch --epochs 100
exit status: 0 published, 1 error, 2 usage, 3 refused (regression on an old held-out set; nothing published)
"""


class _OptionRecorder(argparse.ArgumentParser):
    """A parser that keeps the actions added to it, in order, to copy them elsewhere."""

    def __init__(self) -> None:
        super().__init__(add_help=False)
        self.added: list[argparse.Action] = []

    def add_argument(self, *args, **kwargs) -> argparse.Action:  # type: ignore[override]
        action = super().add_argument(*args, **kwargs)
        self.added.append(action)
        return action


@dataclass
class _PdeOption:
    """A PDE option as the first family that has it defines it, and every family that has it."""

    action: argparse.Action
    families: list[str] = field(default_factory=list)


def _pde_options() -> dict[str, _PdeOption]:
    """Every PDE family's options (those of ``datagen <pde>``), by destination, each listed once."""
    from pdeserve.datagen.families import families

    options: dict[str, _PdeOption] = {}
    for family in families().values():
        recorder = _OptionRecorder()
        family.add_options(recorder)
        for action in recorder.added:
            options.setdefault(action.dest, _PdeOption(action)).families.append(family.name)
    return options


def add_retrain_command(commands: Commands) -> None:
    """Add ``retrain`` to ``commands`` (those of ``pdeserve`` or of ``datagen``).

    Every PDE family's options are accepted (``--viscosity``, ``--alpha``, ...); only those given
    override the model's recorded parameters, and one that the model's family lacks is an error.
    """
    from pdeserve.operators.retrain import FINE_TUNE_LR_FACTOR, RetrainOptions

    defaults = RetrainOptions(repo="", name="")
    retrain = commands.add(
        "retrain",
        help="generate more data for a published model, fine-tune it, publish it if it does not regress",
        description="Generate N samples with the PDE and parameters in the model's lineage, fine-tune "
        "the newest version on old + new training data, evaluate parent and candidate on every "
        "held-out set, and publish the next version only if no old held-out error grows by more than "
        "--max-regression (relative).",
        epilog=EXAMPLES,
    )
    retrain.add_argument("--repo", required=True, help="model repository folder")
    retrain.add_argument("--model", required=True, metavar="NAME", help="model to retrain (newest version)")
    retrain.add_argument("--n", type=int, default=defaults.n, help="new samples to generate")
    retrain.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    retrain.add_argument(
        "--validation-samples",
        type=int,
        default=defaults.validation_samples,
        metavar="N",
        help="fresh samples per grid side of the resolution sweep recorded in the card (0: no sweep)",
    )
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
    group = retrain.add_argument_group("PDE options (override the model's recorded parameters)")
    pde_options = _pde_options()
    for dest, option in pde_options.items():
        group.add_argument(
            *option.action.option_strings,
            dest=dest,
            type=option.action.type,
            choices=option.action.choices,
            default=argparse.SUPPRESS,  # absent = keep the recorded value
            help=f"{option.action.help} ({', '.join(option.families)})",
        )
    retrain.set_defaults(func=_retrain, pde_options=sorted(pde_options))


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
        command=args.command_line,
        validation_samples=args.validation_samples,
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
