"""MgNO (He, Liu, Xu, ICLR 2024): a neural operator whose linear part is one multigrid V-cycle.

Each layer is ``u <- GELU(MgConv(u) + Conv1x1(u))``. ``MgConv`` treats its input as the right-hand side
``f`` of a linear system and runs one multi-channel V-cycle on it:

- smoothing on every level: ``u <- u + S(f - A u)`` with learned 3x3 convolutions ``A`` (channels of
  ``u`` to channels of ``f``) and ``S`` (back); the very first step, on the finest level, is ``u = S f``;
- restriction to the next coarser level by learned 3x3 stride-2 convolutions: ``u <- Pi u`` and
  ``f <- R (f - A u)`` (the residual, with its own learned ``A``);
- prolongation back up by a learned 4x4 stride-2 transposed convolution, added to the finer level's ``u``.

No operator is shared between levels or layers. There is no lifting network (the first layer reads the
input fields as its ``f``), and the head is a 1x1 convolution.

Boundary conditions enter only through how every convolution pads its input: ``"zeros"`` (Dirichlet),
``"circular"`` (periodic), ``"reflect"`` (Neumann). Every operator pads with that mode, the
transposed-convolution prolongation included (``torch.nn.ConvTranspose2d`` itself only pads with
zeros), so for example a periodic MgNO commutes exactly with grid shifts by multiples of
``2 ** (levels - 1)``.

The config is importable without torch; the modules are defined on first ``build()``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdeserve.operators.resolution import ResolutionRule

if TYPE_CHECKING:
    import torch

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
BOUNDARY_PADDING = {"periodic": "circular", "dirichlet": "zeros", "neumann": "reflect"}


def default_pre_smoothing(levels: int) -> tuple[int, ...]:
    """The paper's smoothing schedule: one step per level, two on the coarsest.

    Parameters
    ----------
    levels : int
        Number of grid levels of the V-cycle (at least 1).

    Returns
    -------
    tuple of int
        Smoothing steps per level, finest first.
    """
    return (1,) * (levels - 1) + (2,)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MgNOConfig:
    """Multigrid Neural Operator (He, Liu, Xu 2024) on 2D grids.

    The defaults (24 channels, 4 layers, 5 levels, residual restriction) give 531,037 parameters,
    close to the paper's 0.57M Darcy model (24 channels, 4 layers, 6 levels, ``f`` restricted without
    the residual as in the public code: 572,662 here). Five levels suit 64..256 grids: the coarsest
    grid is 4x4 at 64 and 16x16 at 256.

    Parameters
    ----------
    in_channels : int
        Number of input fields; the first layer's right-hand side ``f`` has this many channels.
    out_channels : int
        Number of output fields (channels of the 1x1 head).
    channels : int
        Channels of ``u`` in every V-cycle, and of ``f`` after the first layer (the paper's
        ``num_channel_u``: 24 for Darcy, 32 for Navier-Stokes).
    n_layers : int
        Number of MgNO layers ``u <- GELU(MgConv(u) + Conv1x1(u))``.
    levels : int
        Grid levels of each V-cycle, the finest included. Grid sides must be divisible by
        ``2 ** (levels - 1)``.
    pre_smoothing : tuple of int
        Smoothing steps ``u <- u + S(f - A u)`` per level, finest first, one entry per level. The finest
        level needs at least one (its first step is ``u = S f``); coarser levels may have none. Empty
        (the default) means the paper's schedule, one step per level and two on the coarsest; it is
        resolved on construction, so a recorded config always holds the explicit tuple.
    residual_restriction : bool
        Restrict the residual ``f - A u`` (with a learned ``A`` per level) rather than ``f`` itself.
        The paper's algorithm restricts the residual; the public code's Darcy runs (and the paper's
        0.57M count) restrict ``f``.
    padding_mode : str
        How every convolution pads, i.e. the boundary condition: ``"zeros"`` (Dirichlet),
        ``"circular"`` (periodic), ``"reflect"`` (Neumann, mirrored about the edge node) or
        ``"replicate"`` (Neumann, mirrored about the edge face).
    max_resolution : int
        Largest grid side served.
    """

    in_channels: int = 1
    out_channels: int = 1
    channels: int = 24
    n_layers: int = 4
    levels: int = 5
    pre_smoothing: tuple[int, ...] = ()
    residual_restriction: bool = True
    padding_mode: str = "zeros"
    max_resolution: int = 1024

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "channels", "n_layers", "levels", "max_resolution"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"MgNO {name} must be a positive integer, got {value!r}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(
                f"MgNO padding_mode must be one of {', '.join(PADDING_MODES)}, got {self.padding_mode!r}"
            )
        if not isinstance(self.residual_restriction, bool):
            raise ValueError(
                f"MgNO residual_restriction must be true or false, got {self.residual_restriction!r}"
            )
        smoothing = tuple(self.pre_smoothing) or default_pre_smoothing(self.levels)
        if len(smoothing) != self.levels:
            raise ValueError(
                f"MgNO pre_smoothing needs one entry per level ({self.levels}), got {len(smoothing)}: "
                f"{list(smoothing)}"
            )
        if not all(_is_int(n) and n >= 0 for n in smoothing) or smoothing[0] < 1:
            raise ValueError(
                "MgNO pre_smoothing entries must be non-negative integers, at least 1 on the finest "
                f"level, got {list(smoothing)}"
            )
        # Frozen dataclass: resolve the schedule in place, so that equal models have equal configs.
        object.__setattr__(self, "pre_smoothing", smoothing)
        minimum = self.resolutions().minimum
        if minimum > self.max_resolution:
            raise ValueError(
                f"MgNO with {self.levels} levels needs grid sides of at least {minimum}, "
                f"more than max_resolution={self.max_resolution}"
            )

    @classmethod
    def grid_defaults(cls, ndim: int, boundary: str) -> dict[str, Any]:
        """Arguments for an ``ndim``-dimensional grid with ``boundary`` conditions.

        Parameters
        ----------
        ndim : int
            Number of spatial dimensions; MgNO is 2D only.
        boundary : str
            ``"periodic"``, ``"dirichlet"`` or ``"neumann"``; picks the padding mode.

        Returns
        -------
        dict
            ``{"padding_mode": ...}``.

        Raises
        ------
        ValueError
            If the grid is not 2D or the boundary condition is unknown.
        """
        if ndim != 2:
            raise ValueError(f"MgNO supports 2D grids only, not {ndim}D")
        if boundary not in BOUNDARY_PADDING:
            raise ValueError(f"unknown boundary condition {boundary!r}; known: {', '.join(BOUNDARY_PADDING)}")
        return {"padding_mode": BOUNDARY_PADDING[boundary]}

    def build(self) -> torch.nn.Module:
        """A freshly initialised ``MgNO`` module with these arguments."""
        return _modules().MgNO(self)

    def resolutions(self) -> ResolutionRule:
        """Grids the model accepts: sides divisible by ``2 ** (levels - 1)``.

        With reflect padding the coarsest grid needs at least two points per side (a one-point grid has
        nothing to mirror), so the smallest side doubles.
        """
        multiple = 2 ** (self.levels - 1)
        minimum = 2 * multiple if self.padding_mode == "reflect" else multiple
        return ResolutionRule(minimum=minimum, maximum=self.max_resolution, multiple=multiple)


@functools.cache
def _modules() -> Any:
    """The torch modules, defined on first use: importing this module (the registry, the CLI) must not
    import torch."""
    import types

    from torch import nn
    from torch.nn import functional as F

    def conv3x3(c_in: int, c_out: int, mode: str, stride: int = 1) -> nn.Conv2d:
        # For modes other than "zeros" torch pads explicitly with ``mode`` and convolves with padding 0;
        # for "zeros" its implicit padding is the same thing. No bias: A, S, Pi and R are linear maps,
        # as in multigrid (and the paper's Darcy code).
        return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, padding_mode=mode, bias=False)

    class Prolongation(nn.Module):
        """Learned 4x4 stride-2 transposed convolution from an n x m grid to 2n x 2m.

        Parameters
        ----------
        channels : int
            Channels of ``u``.
        padding_mode : str
            How the coarse grid is padded before the transposed convolution.
        """

        def __init__(self, channels: int, padding_mode: str) -> None:
            super().__init__()
            self.mode = "constant" if padding_mode == "zeros" else padding_mode
            # ConvTranspose2d can only pad with zeros, so one ghost cell per side is added here and
            # padding=3 crops the wider output back to 2n: fine point j still reads coarse points
            # (j + 1 - k) / 2, exactly as kernel 4, stride 2, padding 1 does on the unpadded grid.
            self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=3, bias=False)

        def forward(self, u: torch.Tensor) -> torch.Tensor:
            """Prolongate ``u`` of shape (batch, channels, n, m) to (batch, channels, 2n, 2m)."""
            return self.up(F.pad(u, (1, 1, 1, 1), mode=self.mode))

    class Smoother(nn.Module):
        """One smoothing step ``u <- u + S(f - A u)``, or ``u = S f`` when it is the V-cycle's first.

        Parameters
        ----------
        u_channels, f_channels : int
            Channels of the iterate ``u`` and of the right-hand side ``f``.
        padding_mode : str
            Padding of both convolutions.
        first : bool
            The first step, which starts from ``u = 0`` and so has no ``A``.
        """

        def __init__(self, u_channels: int, f_channels: int, padding_mode: str, first: bool) -> None:
            super().__init__()
            self.S = conv3x3(f_channels, u_channels, padding_mode)
            self.A = None if first else conv3x3(u_channels, f_channels, padding_mode)

        def forward(self, u: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
            """The new iterate from ``u`` (None before the first step) and right-hand side ``f``."""
            if self.A is None:
                return self.S(f)
            return u + self.S(f - self.A(u))

    class Restriction(nn.Module):
        """Transfer ``(u, f)`` to the next coarser grid: ``(Pi u, R (f - A u))``, or ``(Pi u, R f)``.

        Parameters
        ----------
        u_channels, f_channels : int
            Channels of ``u`` and ``f``.
        padding_mode : str
            Padding of the convolutions.
        residual : bool
            Restrict the residual ``f - A u`` (with a learned ``A``) instead of ``f``.
        """

        def __init__(self, u_channels: int, f_channels: int, padding_mode: str, residual: bool) -> None:
            super().__init__()
            self.Pi = conv3x3(u_channels, u_channels, padding_mode, stride=2)
            self.R = conv3x3(f_channels, f_channels, padding_mode, stride=2)
            self.A = conv3x3(u_channels, f_channels, padding_mode) if residual else None

        def forward(self, u: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The coarse ``(u, f)``, each side halved."""
            r = f if self.A is None else f - self.A(u)
            return self.Pi(u), self.R(r)

    class MgConv(nn.Module):
        """One multi-channel V-cycle mapping a right-hand side ``f`` to an approximate solution ``u``.

        Parameters
        ----------
        f_channels : int
            Channels of the input ``f``.
        u_channels : int
            Channels of the output ``u``.
        pre_smoothing : tuple of int
            Smoothing steps per level, finest first (the finest level's first step is ``u = S f``).
        padding_mode : str
            Padding of every convolution.
        residual_restriction : bool
            Restrict the residual ``f - A u`` rather than ``f``.
        """

        def __init__(
            self,
            f_channels: int,
            u_channels: int,
            pre_smoothing: tuple[int, ...],
            padding_mode: str,
            residual_restriction: bool,
        ) -> None:
            super().__init__()
            self.smoothers = nn.ModuleList(
                nn.ModuleList(
                    Smoother(u_channels, f_channels, padding_mode, first=level == 0 and step == 0)
                    for step in range(steps)
                )
                for level, steps in enumerate(pre_smoothing)
            )
            coarse = range(len(pre_smoothing) - 1)
            self.restrictions = nn.ModuleList(
                Restriction(u_channels, f_channels, padding_mode, residual_restriction) for _ in coarse
            )
            self.prolongations = nn.ModuleList(Prolongation(u_channels, padding_mode) for _ in coarse)

        def forward(self, f: torch.Tensor) -> torch.Tensor:
            """V-cycle on ``f`` of shape (batch, f_channels, H, W); returns (batch, u_channels, H, W)."""
            iterates = []
            u = None
            # Down the V: smooth, then hand the iterate and the (residual) right-hand side down.
            for level, steps in enumerate(self.smoothers):
                if level > 0:
                    u, f = self.restrictions[level - 1](u, f)
                for step in steps:
                    u = step(u, f)
                iterates.append(u)
            # Up the V: each coarser solution corrects the finer level's iterate.
            u = iterates[-1]
            for level in range(len(iterates) - 2, -1, -1):
                u = iterates[level] + self.prolongations[level](u)
            return u

    class MgNO(nn.Module):
        """The network: ``n_layers`` of ``u <- GELU(MgConv(u) + Conv1x1(u))``, then a 1x1 head.

        Parameters
        ----------
        config : MgNOConfig
            Validated architecture arguments.
        """

        def __init__(self, config: MgNOConfig) -> None:
            super().__init__()
            self.multiple = 2 ** (config.levels - 1)
            # No lifting: the first V-cycle reads the input fields as its right-hand side.
            widths = [config.in_channels] + [config.channels] * (config.n_layers - 1)
            self.cycles = nn.ModuleList(
                MgConv(
                    width,
                    config.channels,
                    config.pre_smoothing,
                    config.padding_mode,
                    config.residual_restriction,
                )
                for width in widths
            )
            self.pointwise = nn.ModuleList(nn.Conv2d(width, config.channels, 1) for width in widths)
            self.head = nn.Conv2d(config.channels, config.out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Map (batch, in_channels, H, W) to (batch, out_channels, H, W).

            Raises
            ------
            ValueError
                If ``x`` is not 4D or H or W is not divisible by ``2 ** (levels - 1)``.
            """
            if x.ndim != 4 or x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
                raise ValueError(
                    f"MgNO expects (batch, channels, H, W) with H and W divisible by {self.multiple}, "
                    f"got shape {tuple(x.shape)}"
                )
            u = x
            for cycle, pointwise in zip(self.cycles, self.pointwise, strict=True):
                u = F.gelu(cycle(u) + pointwise(u))
            return self.head(u)

    return types.SimpleNamespace(
        MgNO=MgNO, MgConv=MgConv, Smoother=Smoother, Restriction=Restriction, Prolongation=Prolongation
    )
