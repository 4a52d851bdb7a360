"""FNO and TFNO configs: neuraloperator's ``FNO`` built from recorded arguments (torch imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdeserve.operators.resolution import ResolutionRule

if TYPE_CHECKING:
    import torch


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
        Tensor factorisation of the spectral weights (None: dense FNO; "tucker": TFNO).
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

    @classmethod
    def grid_defaults(cls, ndim: int, boundary: str) -> dict[str, Any]:
        """Arguments for an ``ndim``-dimensional grid: the papers' 1D Burgers widths in 1D, and no
        domain padding on periodic grids (the FFT is already periodic there)."""
        if ndim not in (1, 2, 3):
            raise ValueError(f"FNO supports 1D, 2D and 3D grids, not {ndim}D")
        arguments: dict[str, Any] = {"n_modes": (32,) if ndim == 1 else (12,) * ndim}
        if ndim == 1:
            arguments["hidden_channels"] = 64
        if boundary == "periodic":
            arguments["domain_padding"] = 0.0
        return arguments

    def build(self) -> torch.nn.Module:
        from neuralop.models import FNO

        from pdeserve.operators.spectral import ResolutionInvariantSpectralConv

        return FNO(
            n_modes=tuple(self.n_modes),
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            hidden_channels=self.hidden_channels,
            n_layers=self.n_layers,
            domain_padding=self.domain_padding or None,
            factorization=self.factorization,
            rank=self.rank,
            conv_module=ResolutionInvariantSpectralConv,  # right on odd grid sides (operators/spectral.py)
        )

    def resolutions(self) -> ResolutionRule:
        # Spectral convolutions need at least as many grid points as kept modes.
        return ResolutionRule(minimum=max(self.n_modes), maximum=self.max_resolution)
