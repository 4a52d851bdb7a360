"""The model registry: one place that lists the architectures and builds each from recorded arguments.

A model's JSON config holds ``{"architecture": name, "arguments": {...}}``; ``build_model`` turns that
back into a ``torch.nn.Module`` without unpickling anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ResolutionRule:
    """Grid sides a model accepts: every side in ``[minimum, maximum]`` and divisible by ``multiple``."""

    minimum: int
    maximum: int
    multiple: int = 1

    def check(self, sides: tuple[int, ...]) -> str | None:
        """None if ``sides`` are accepted, else a message saying what is expected."""
        if all(self.minimum <= s <= self.maximum and s % self.multiple == 0 for s in sides):
            return None
        rule = f"between {self.minimum} and {self.maximum}"
        if self.multiple > 1:
            rule += f" and divisible by {self.multiple}"
        return f"every grid side must be {rule}"


@dataclass(frozen=True)
class FNOConfig:
    """Fourier Neural Operator (Li et al. 2021) as implemented by neuraloperator's ``FNO``.

    Parameters
    ----------
    in_channels, out_channels : int
        Number of input and output fields (set from the dataset).
    n_modes : tuple of int
        Fourier modes kept per dimension (neuraloperator counts both signs: 24 = the paper's 12).
    hidden_channels : int
        Width of the Fourier layers.
    n_layers : int
        Number of Fourier layers.
    domain_padding : float
        Fraction of each side zero-padded before the FFT, for non-periodic problems (paper: 9/85).
    factorization : str or None
        Tensor factorisation of the spectral weights (None: dense FNO; "Tucker": TFNO).
    rank : float
        Factorisation rank when ``factorization`` is set.
    max_resolution : int
        Largest grid side served.
    """

    in_channels: int = 1
    out_channels: int = 1
    n_modes: tuple[int, ...] = (12, 12)
    hidden_channels: int = 32
    n_layers: int = 4
    domain_padding: float = 0.125
    factorization: str | None = None
    rank: float = 1.0
    max_resolution: int = 1024

    def build(self) -> torch.nn.Module:
        from neuralop.models import FNO

        return FNO(
            n_modes=tuple(self.n_modes),
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            hidden_channels=self.hidden_channels,
            n_layers=self.n_layers,
            domain_padding=self.domain_padding or None,
            factorization=self.factorization,
            rank=self.rank,
        )

    def resolutions(self) -> ResolutionRule:
        # Spectral convolutions need at least as many grid points as kept modes.
        return ResolutionRule(minimum=max(self.n_modes), maximum=self.max_resolution)


@dataclass(frozen=True)
class Architecture:
    """A registry entry.

    Parameters
    ----------
    name : str
        Registry key (``--model``).
    config : type
        Frozen dataclass with the constructor arguments; it has ``build()`` and ``resolutions()``.
    description : str
        One line for ``--help``.
    defaults : mapping
        Per-architecture overrides of the config defaults used by ``pdeserve train``.
    """

    name: str
    config: type
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {
    "fno": Architecture("fno", FNOConfig, "Fourier Neural Operator (neuraloperator FNO)"),
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
