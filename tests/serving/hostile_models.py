"""A model repository for hostile-input tests: the bundled Darcy model beside small untrained models of
the other PDE families (their answers are noise, but their inputs go through the same validation, and
their estimates and reference solves through the same classical solvers as trained ones)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.families import get_family
from pdeserve.datagen.helmholtz import HelmholtzParameters
from pdeserve.datagen.navier_stokes import NavierStokesParameters
from pdeserve.operators.card import TimeMap
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.surrogate import Surrogate
from pdeserve.operators.training import prepare, publish
from pdeserve.operators.validation import fresh_samples

DARCY = "darcy-fno"
# name -> (family, parameters, grid side, time map, FNO modes)
SMALL = {
    "helmholtz-small": ("helmholtz", HelmholtzParameters(omega=300.0), 33, None, [4, 4]),
    "burgers-small": ("burgers", BurgersParameters(), 64, TimeMap(1, 1), [4]),
    "ns-small": (
        "navier-stokes",
        NavierStokesParameters(final_time=2.0, record_every=1.0, time_step=5e-3),
        32,
        TimeMap(1, 1),
        [4, 4],
    ),
}


def build_repository(root: Path, bundled_repo: Path, bundled_version: str) -> Path:
    """``root`` holding version 1 of the bundled model (its ``bundled_version``) and of each of
    :data:`SMALL`, untrained (seeded, so their outputs are the same on every run)."""
    shutil.copytree(bundled_repo / DARCY / bundled_version, root / DARCY / "1")
    for name, (pde, params, side, time_map, modes) in SMALL.items():
        data = fresh_samples(get_family(pde), params.for_resolution(side), side, 2, seed=3)
        run = prepare(
            data,
            "fno",
            {"n_modes": modes, "hidden_channels": 4, "n_layers": 1},
            TrainingSettings(test_fraction=0.5),
            time_map,
        )
        torch.manual_seed(0)
        publish(root, name, Surrogate(name, "1", run.card, run.config.build().eval()))
    return root
