"""Training throughput: pdeserve's trainer next to neuraloperator's own ``Trainer``, same FNO, same data.

Usage: ``python bench/training.py [--n 220] [--resolution 64] [--epochs 5] [--repeats 2] [--device auto]``.
Both train the same architecture (built from the same recorded arguments and seed) with Adam, batch 20
and relative L2 loss on the same normalised training split; the runs are interleaved and the best of
``--repeats`` is kept for each. Prints samples per second and the ratio; writes JSON
(default ``bench/results/training.json``). On CUDA pdeserve trains with AMP, neuraloperator in float32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import resolve_device, write_results

from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, LoadedDataset, load_dataset, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.operators.pairs import operator_pairs
from pdeserve.operators.registry import make_config
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import channel_normalizer
from pdeserve.operators.training import channel_stats, split, train

ARGUMENTS = {"n_modes": [12, 12], "hidden_channels": 32, "n_layers": 4, "domain_padding": 0.125}


def ours(data: LoadedDataset, epochs: int, device: str) -> float:
    settings = TrainingSettings(epochs=epochs, batch_size=20, test_fraction=0.1, seed=0, device=device)
    _, metrics = train(data, "fno", ARGUMENTS, settings, progress=False)
    return metrics["samples_per_second"]


def theirs(data: LoadedDataset, epochs: int, device: str) -> float:
    """neuraloperator's Trainer on the same split, normalisers and model."""
    from neuralop.data.datasets.tensor_dataset import TensorDataset
    from neuralop.data.transforms.data_processors import DefaultDataProcessor
    from neuralop.losses import LpLoss
    from neuralop.training import Trainer

    torch.manual_seed(0)
    pairs = operator_pairs(data)
    train_part, _, test_part = split(len(pairs.x), 0.1)
    x, y = torch.from_numpy(pairs.x[train_part]), torch.from_numpy(pairs.y[train_part])
    processor = DefaultDataProcessor(
        channel_normalizer(channel_stats(pairs.x[train_part]), 2),
        channel_normalizer(channel_stats(pairs.y[train_part]), 2),
    ).to(device)
    loader = torch.utils.data.DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    test = torch.utils.data.DataLoader(
        TensorDataset(torch.from_numpy(pairs.x[test_part]), torch.from_numpy(pairs.y[test_part])),
        batch_size=20,
    )
    model = make_config("fno", {**ARGUMENTS, "in_channels": 1, "out_channels": 1}).build().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss = LpLoss(d=2, p=2, reduction="mean")
    trainer = Trainer(
        model=model,
        n_epochs=epochs,
        device=device,
        data_processor=processor,
        eval_interval=epochs,
        verbose=False,
    )
    started = time.perf_counter()
    trainer.train(loader, {"test": test}, optimizer, scheduler, training_loss=loss, eval_losses={"l2": loss})
    return len(x) * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=220)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench/results/training.json")
    args = parser.parse_args()
    device, device_name = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as folder:
        request = GenerationRequest(get_family("darcy"), DarcyParameters(), args.n, args.resolution, seed=0)
        data = load_dataset(write_dataset(request, Path(folder) / "darcy.h5", progress=False))
    results: dict[str, list[float]] = {"pdeserve": [], "neuraloperator": []}
    for _ in range(args.repeats):
        results["pdeserve"].append(ours(data, args.epochs, device))
        results["neuraloperator"].append(theirs(data, args.epochs, device))
    best = {k: max(v) for k, v in results.items()}
    ratio = best["pdeserve"] / best["neuraloperator"]
    print(
        f"FNO training on Darcy {args.resolution}x{args.resolution}, {device} ({device_name}), "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, values in results.items():
        print(
            f"  {name:15s} best {best[name]:8.1f} samples/s  (runs: {', '.join(f'{v:.1f}' for v in values)})"
        )
    print(f"  ratio pdeserve / neuraloperator: {ratio:.2f}")
    write_results(
        args.out, {"device": device_name, "args": vars(args), "runs": results, "best": best, "ratio": ratio}
    )


if __name__ == "__main__":
    main()
