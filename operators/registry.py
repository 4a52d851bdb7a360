"""The model registry: one place that lists the architectures and builds each from recorded arguments.

A model's JSON config holds ``{"architecture": name, "arguments": {...}}``; ``build_model`` turns that
back into a ``torch.nn.Module`` without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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
    learning_rates : mapping
        Peak learning rate by grid dimension where the entry needs another than the trainer's default
        (``TrainingSettings.learning_rate``) under the schedules pdeserve runs.
    """

    name: str
    config_path: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    learning_rates: Mapping[int, float] = field(default_factory=dict)

    @property
    def config(self) -> type:
        module, _, attribute = self.config_path.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def default_arguments(self, ndim: int, boundary: str) -> dict[str, Any]:
        """Arguments for a grid of ``ndim`` dimensions with ``boundary`` conditions
        (``"periodic"``, ``"dirichlet"`` or ``"neumann"``); ``ValueError`` if the model does not fit it."""
        return {**self.config.grid_defaults(ndim, boundary), **self.defaults}

    def learning_rate(self, ndim: int, default: float) -> float:
        """The peak learning rate for a grid of ``ndim`` dimensions (``default`` unless the entry has
        its own)."""
        return self.learning_rates.get(ndim, default)


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
        "mgno", "pdeserve.operators.mgno:MgNOConfig", "multigrid neural operator (He et al. 2024)"
    ),
    "galerkin": Architecture(
        "galerkin",
        "pdeserve.operators.galerkin:GalerkinConfig",
        "Galerkin Transformer, linear attention (Cao 2021)",
        # The paper's peak 1e-3 comes after a 1e4-fold OneCycle warm-up over thousands of steps with
        # gradient clipping. Without them, 1e-3 blows up the 2D encoder's query projections (the only
        # ones without a LayerNorm) through its 6 residual layers: Darcy 64x64 stayed at the mean field
        # (0.258) in 9 epochs where 3e-4 reached 0.068 (bench/accuracy.py). In 1D 1e-3 trains well.
        learning_rates={2: 3e-4},
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


def build_model(name: str, arguments: Mapping[str, Any]) -> torch.nn.Module:
    """Build architecture ``name`` from its recorded arguments."""
    return make_config(name, arguments).build()
