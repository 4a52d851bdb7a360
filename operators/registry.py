"""The model registry: one place that lists the architectures and builds each from recorded arguments.

A model card holds ``architecture`` and ``arguments``; ``make_config(architecture, arguments).build()``
turns them back into a ``torch.nn.Module`` without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pdeserve.operators.settings import TrainingSettings


@dataclass(frozen=True)
class Architecture:
    """A registry entry.

    Parameters
    ----------
    name : str
        Registry key (``--model``).
    config_path : str
        ``"module:Class"`` of the frozen config dataclass holding the constructor arguments. It has
        ``build()``, ``resolutions()`` and the classmethod ``grid_defaults(ndim, boundary)``. Imported
        on first use, so listing the registry does not import torch.
    description : str
        One line for ``--help``.
    defaults : mapping
        Overrides of the config's defaults that make this entry (e.g. TFNO = FNO with Tucker weights).
    recipe : mapping
        ``TrainingSettings`` fields the model trains with unless a caller sets them: its paper's
        optimiser recipe (schedule, peak learning rate, batch size, clipping).
    """

    name: str
    config_path: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> type:
        module, _, attribute = self.config_path.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def default_arguments(self, ndim: int, boundary: str) -> dict[str, Any]:
        """Arguments for a grid of ``ndim`` dimensions with ``boundary`` conditions
        (``"periodic"``, ``"dirichlet"`` or ``"neumann"``); ``ValueError`` if the model does not fit it."""
        return {**self.config.grid_defaults(ndim, boundary), **self.defaults}

    def training_settings(self, **given: Any) -> TrainingSettings:
        """The ``given`` settings, the recipe's for the fields not given, defaults for the rest."""
        return TrainingSettings(**{**self.recipe, **given})


ARCHITECTURES: dict[str, Architecture] = {
    "fno": Architecture(
        "fno", "pdeserve.operators.fno:FNOConfig", "Fourier Neural Operator (neuraloperator)"
    ),
    "tfno": Architecture(
        "tfno",
        "pdeserve.operators.fno:FNOConfig",
        "Tucker-factorised FNO (neuraloperator TFNO)",
        {"factorization": "tucker", "rank": 0.1},
    ),
    "mgno": Architecture(
        "mgno",
        "pdeserve.operators.mgno:MgNOConfig",
        "multigrid neural operator (He et al. 2024)",
        recipe={"learning_rate": 5e-4, "scheduler": "onecycle", "batch_size": 8},
    ),
    "galerkin": Architecture(
        "galerkin",
        "pdeserve.operators.galerkin:GalerkinConfig",
        "Galerkin Transformer, linear attention (Cao 2021)",
        # The paper's examples: peak 1e-3 after a 1e4-fold one-cycle warm-up, gradients clipped at 0.99.
        # Both matter in 2D: without them 1e-3 blows up the encoder's query projections (the only ones
        # without a LayerNorm) and the model stays at the mean field; the clipping alone helps, the
        # warm-up with it helps most (bench/accuracy.py measures it).
        recipe={
            "learning_rate": 1e-3,
            "scheduler": "onecycle",
            "onecycle_div": 1e4,
            "grad_clip": 0.99,
            "batch_size": 8,
        },
    ),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown model architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def make_config(name: str, arguments: Mapping[str, Any]) -> Any:
    """The validated config of architecture ``name`` from recorded (JSON) arguments."""
    config_type = get_architecture(name).config
    known = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ValueError(f"unknown {name} arguments: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
    return config_type(**values)


def config_arguments(config: Any) -> dict[str, Any]:
    """JSON-ready arguments of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
