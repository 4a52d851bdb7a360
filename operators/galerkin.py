"""Galerkin Transformer (Cao, NeurIPS 2021, "Choose a Transformer: Fourier or Galerkin").

A point-wise lifting (1D) or a CNN downscaler to a coarse grid (2D), a stack of encoder layers whose
attention has no softmax and is normalised per head instead, an interpolation upscaler back to the
input grid (2D), and a spectral regressor (a few FNO-style spectral convolutions, then a point-wise head).

Two attentions (``d_k`` the head width, ``n`` the number of grid points the attention sees):

- Galerkin: LayerNorm on K and V (not Q), ``Q (K^T V) / n``; cost linear in ``n``.
- Fourier: LayerNorm on Q and K (not V), ``(Q K^T) V / n``; cost quadratic in ``n``.

Each head's Q, K and V carry the grid coordinates as ``dim`` extra columns (in front), so the output
projection maps ``d_model + n_heads * dim`` features back to ``d_model``. The model computes the uniform
grid coordinates (``linspace(0, 1, side)`` per axis) from the input's shape: inputs are only the fields.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pdeserve.operators.acceleration import truncated_spectral_conv
from pdeserve.operators.resolution import ResolutionRule

ATTENTIONS = ("galerkin", "fourier")


@dataclass(frozen=True)
class GalerkinConfig:
    """Galerkin Transformer arguments; the defaults are the paper's 1D (Burgers) model.

    ``grid_defaults(2, ...)`` gives the paper's 2D (Darcy) model: 6 layers, ``d_model`` 128, 4 heads,
    FFN 256, spectral regressor with 12 modes on 32 channels, grid coordinates fed to the regressor.

    Parameters
    ----------
    in_channels, out_channels : int
        Number of input and output fields (set from the dataset).
    dim : int
        Spatial dimensions of the grid: 1 (point-wise lifting, attention on the input grid) or 2
        (CNN downscaler, attention on a coarse grid, interpolation upscaler).
    attention : str
        ``"galerkin"`` (LayerNorm on K and V, ``Q (K^T V) / n``, linear in ``n``) or ``"fourier"``
        (LayerNorm on Q and K, ``(Q K^T) V / n``, quadratic in ``n``).
    d_model : int
        Width of the encoder (sum over heads of the head width, coordinates excluded).
    n_heads : int
        Attention heads; must divide ``d_model``.
    n_layers : int
        Encoder layers (attention + feed-forward network, each with a residual connection).
    dim_feedforward : int
        Hidden width of each encoder layer's feed-forward network.
    modes : int
        Fourier modes kept per dimension (non-negative frequencies; in 2D also the same number of
        negative frequencies along the first axis) by each spectral convolution of the regressor.
    regressor_layers : int
        Spectral convolution layers in the regressor.
    regressor_width : int
        Channels of the regressor's spectral convolutions.
    regressor_hidden : int
        Hidden width of the regressor's point-wise head (two linear layers).
    regressor_coordinates : bool
        Concatenate the grid coordinates to the features entering the regressor and lift them to
        ``regressor_width`` with a linear layer (the paper does this in 2D, not in 1D).
    downscale : int
        2D only: the attention runs on a grid about ``downscale`` times coarser per axis, of side
        ``ceil((side - 1) / downscale) + 1`` (141 -> 36 at 4, as in the paper's Darcy model). 1 keeps
        the input grid. Ignored in 1D.
    xavier_gain : float
        Gain of the Xavier-uniform initialisation of the Q, K, V projections.
    diagonal_weight : float
        Multiple of the identity added to the Q, K, V projection weights at initialisation.
    norm_eps : float
        Epsilon of the per-head layer normalisations in the attention.
    dropout : float
        Dropout on the encoder's residual branches, inside its feed-forward networks, and on the
        regressor's spectral-layer inputs (0 disables it).
    max_resolution : int
        Largest grid side served.
    """

    in_channels: int = 1
    out_channels: int = 1
    dim: int = 1
    attention: str = "galerkin"
    d_model: int = 96
    n_heads: int = 1
    n_layers: int = 4
    dim_feedforward: int = 192
    modes: int = 16
    regressor_layers: int = 2
    regressor_width: int = 48
    regressor_hidden: int = 48
    regressor_coordinates: bool = False
    downscale: int = 4
    xavier_gain: float = 1e-3
    diagonal_weight: float = 1e-2
    norm_eps: float = 1e-5
    dropout: float = 0.0
    max_resolution: int = 8192

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # Annotations are strings (postponed evaluation). Reject bools and floats such as 16.0 where an
            # int is needed: they would build a different model or fail deep inside torch.
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"galerkin {f.name} must be an integer, not {value!r}")
        positive = (
            "in_channels",
            "out_channels",
            "d_model",
            "n_heads",
            "n_layers",
            "dim_feedforward",
            "modes",
            "regressor_layers",
            "regressor_width",
            "regressor_hidden",
            "downscale",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"galerkin {name} must be at least 1, not {getattr(self, name)}")
        if self.dim not in (1, 2):
            raise ValueError(f"galerkin dim must be 1 or 2, not {self.dim}")
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"galerkin attention must be one of {', '.join(ATTENTIONS)}, not {self.attention!r}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"galerkin d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not isinstance(self.regressor_coordinates, bool):
            raise ValueError(
                f"galerkin regressor_coordinates must be true or false, not {self.regressor_coordinates!r}"
            )
        for name in ("xavier_gain", "diagonal_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(
                    f"galerkin {name} must be finite and non-negative, not {getattr(self, name)}"
                )
        if not self.norm_eps > 0:
            raise ValueError(f"galerkin norm_eps must be positive, not {self.norm_eps}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"galerkin dropout must be in [0, 1), not {self.dropout}")
        if self.max_resolution < self.resolutions().minimum:
            raise ValueError(
                f"galerkin max_resolution ({self.max_resolution}) is below the smallest grid side "
                f"the spectral regressor needs ({self.resolutions().minimum} = 2 * modes)"
            )

    @classmethod
    def grid_defaults(cls, ndim: int, boundary: str) -> dict[str, Any]:
        """The paper's settings for an ``ndim``-dimensional grid: Burgers (1D) or Darcy (2D).

        Parameters
        ----------
        ndim : int
            Spatial dimensions of the dataset's grid; ``ValueError`` unless 1 or 2.
        boundary : str
            ``"periodic"``, ``"dirichlet"`` or ``"neumann"``; the architecture is the same for all (the
            paper uses the periodic spectral regressor on Darcy's Dirichlet problem too).
        """
        if ndim == 1:
            return {"dim": 1}
        if ndim == 2:
            return {
                "dim": 2,
                "d_model": 128,
                "n_heads": 4,
                "n_layers": 6,
                "dim_feedforward": 256,
                "modes": 12,
                "regressor_width": 32,
                "regressor_hidden": 128,
                "regressor_coordinates": True,
                "downscale": 4,
                "xavier_gain": 1e-2,
                "norm_eps": 1e-7,
                # 2D memory grows with side**2: the fine-grid convolutions hold d_model channels.
                "max_resolution": 1024,
            }
        raise ValueError(f"the Galerkin Transformer supports 1D and 2D grids, not {ndim}D")

    def build(self) -> torch.nn.Module:
        """A freshly initialised :class:`GalerkinTransformer` with these arguments."""
        return GalerkinTransformer(self)

    def resolutions(self) -> ResolutionRule:
        """Every side in ``[2 * modes, max_resolution]``: the spectral convolutions need at least
        ``modes`` non-negative frequencies (and in 2D ``modes`` negative ones on the first axis)."""
        return ResolutionRule(minimum=2 * self.modes, maximum=self.max_resolution)


def uniform_grid(sides: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Coordinates of the uniform grid on the unit cube, ``(prod(sides), len(sides))``, in the row-major
    order of ``tensor.flatten()``; axis ``i`` runs over ``linspace(0, 1, sides[i])``.

    Parameters
    ----------
    sides : tuple of int
        Grid points per axis.
    dtype, device
        Of the returned tensor (the model input's, so float64 runs stay float64).
    """
    axes = [torch.linspace(0, 1, s, dtype=dtype, device=device) for s in sides]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sides))


def coarse_side(side: int, downscale: int) -> int:
    """Side of the grid the 2D attention runs on: every ``downscale``-th node of ``side`` nodes on [0, 1],
    the last one included (``ceil((side - 1) / downscale) + 1``).

    Parameters
    ----------
    side : int
        Points on the input grid's axis.
    downscale : int
        Coarsening factor.
    """
    return -(-(side - 1) // downscale) + 1


class HeadLayerNorm(nn.Module):
    """One LayerNorm per head over the head width, applied to ``(batch, heads, n, head_dim)``.

    Parameters
    ----------
    n_heads : int
        Heads (each has its own scale and shift).
    head_dim : int
        Features per head (the normalised dimension).
    eps : float
        Added to the variance.
    """

    def __init__(self, n_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(n_heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Vectorised over heads: same as a separate nn.LayerNorm(head_dim) per head.
        normalised = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return normalised * self.weight[:, None, :] + self.bias[:, None, :]


class GalerkinAttention(nn.Module):
    """Softmax-free attention with per-head layer normalisation and grid coordinates in every head.

    For input ``x`` of shape ``(batch, n, d_model)`` and coordinates ``c`` of shape ``(n, dim)``: per head
    ``h``, ``Q_h, K_h, V_h`` are the ``h``-th ``head_dim`` columns of ``query(x)``, ``key(x)``,
    ``value(x)``; the normalised two of them (``norms``: K and V for Galerkin, Q and K for Fourier) pass
    through that head's LayerNorm; then ``c`` is concatenated in front of each. The head output is
    ``Q (K^T V) / n`` (Galerkin) or ``(Q K^T) V / n`` (Fourier), of width ``head_dim + dim``; heads are
    concatenated in order and projected by ``out`` to ``d_model``.

    Parameters
    ----------
    d_model : int
        Feature width.
    n_heads : int
        Heads; must divide ``d_model``.
    dim : int
        Coordinates per grid point.
    attention : str
        ``"galerkin"`` or ``"fourier"``.
    xavier_gain : float
        Gain of the Xavier-uniform initialisation of the Q, K, V weights.
    diagonal_weight : float
        Multiple of the identity added to those weights (the paper's diagonal initialisation: each
        projection starts close to a small multiple of the identity, so early layers pass features on).
    norm_eps : float
        LayerNorm epsilon.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dim: int,
        attention: str = "galerkin",
        xavier_gain: float = 1e-2,
        diagonal_weight: float = 1e-2,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, not {attention!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.attention = attention
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dim = dim
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        normed = ("key", "value") if attention == "galerkin" else ("query", "key")
        self.norms = nn.ModuleDict({name: HeadLayerNorm(n_heads, self.head_dim, norm_eps) for name in normed})
        self.out = nn.Linear(d_model + n_heads * dim, d_model)
        with torch.no_grad():
            for projection in (self.query, self.key, self.value):
                nn.init.xavier_uniform_(projection.weight, gain=xavier_gain)
                projection.weight += diagonal_weight * torch.eye(d_model)
                projection.bias.zero_()

    def forward(self, x: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        """Attend over the ``n`` points of ``x`` ``(batch, n, d_model)`` at ``coordinates`` ``(n, dim)``."""
        batch, n, _ = x.shape
        heads = {
            name: projection(x).view(batch, n, self.n_heads, self.head_dim).transpose(1, 2)
            for name, projection in (("query", self.query), ("key", self.key), ("value", self.value))
        }
        for name, norm in self.norms.items():
            heads[name] = norm(heads[name])
        position = coordinates.to(x.dtype).expand(batch, self.n_heads, n, self.dim)
        q, k, v = (torch.cat([position, heads[name]], dim=-1) for name in ("query", "key", "value"))
        # The 1/n goes on an n-long factor before the sum over n, so sums of n terms stay O(1) and
        # cannot overflow in float16 (autocast) at large n.
        if self.attention == "galerkin":
            kv = torch.matmul((k / n).transpose(-2, -1), v)  # (batch, heads, d, d): no n x n tensor
            out = torch.matmul(q, kv)
        else:
            scores = torch.matmul(q / n, k.transpose(-2, -1))  # (batch, heads, n, n)
            out = torch.matmul(scores, v)
        out = out.transpose(1, 2).reshape(batch, n, self.n_heads * (self.head_dim + self.dim))
        return self.out(out)


class EncoderLayer(nn.Module):
    """Attention then a two-layer ReLU feed-forward network, each added back to its input.

    As in the paper's models, there is no LayerNorm around the residuals: the per-head normalisation
    inside the attention is the only one (the paper finds it enough and the extra norms unhelpful).

    Parameters
    ----------
    d_model : int
        Feature width.
    n_heads : int
        Attention heads.
    dim : int
        Coordinates per grid point.
    dim_feedforward : int
        Hidden width of the feed-forward network.
    attention : str
        ``"galerkin"`` or ``"fourier"``.
    xavier_gain, diagonal_weight, norm_eps : float
        Passed to :class:`GalerkinAttention`.
    dropout : float
        On both residual branches and inside the feed-forward network.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dim: int,
        dim_feedforward: int,
        attention: str,
        xavier_gain: float,
        diagonal_weight: float,
        norm_eps: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attention = GalerkinAttention(
            d_model, n_heads, dim, attention, xavier_gain, diagonal_weight, norm_eps
        )
        self.feedforward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, n, d_model)`` at ``coordinates`` ``(n, dim)`` -> same shape."""
        x = x + self.dropout(self.attention(x, coordinates))
        return x + self.dropout(self.feedforward(x))


class SpectralConv(nn.Module):
    """FNO-style spectral convolution plus a point-wise linear residual, then SiLU, channels last.

    ``y = silu(irfftn(W . rfftn(x)) + linear(x))``, with ``W`` acting on the lowest ``modes`` frequencies:
    in 1D the first ``modes`` of the real FFT; in 2D two ``modes x modes`` blocks, the non-negative and
    the negative frequencies of the first axis times the first ``modes`` of the second.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel widths.
    modes : int
        Frequencies kept per axis.
    dim : int
        Spatial dimensions (1 or 2).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int, dim: int) -> None:
        super().__init__()
        self.modes = modes
        self.dim = dim
        self.out_channels = out_channels
        self.linear = nn.Linear(in_channels, out_channels)
        # Each kept block: low or high frequencies on every axis but the last (real FFT: low only).
        self.blocks = list(itertools.product((False, True), repeat=dim - 1))
        # Real and imaginary parts in a trailing axis of 2: plain float tensors for safetensors and DDP.
        # Small weights (scale 1 / (in * out), as in the FNO code): each layer starts near its residual.
        scale = 1.0 / (in_channels * out_channels)
        self.weights = nn.ParameterList(
            nn.Parameter(scale * torch.randn(in_channels, out_channels, *(modes,) * dim, 2))
            for _ in self.blocks
        )
        letters = "xyz"[:dim]
        self._equation = f"bi{letters},io{letters}->bo{letters}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, *grid, in_channels)`` -> ``(batch, *grid, out_channels)``."""
        residual = self.linear(x)
        sides = x.shape[1:-1]
        axes = tuple(range(2, 2 + self.dim))
        h = x.movedim(-1, 1)
        if h.dtype in (torch.float16, torch.bfloat16):
            h = h.float()  # FFTs in half precision only work on power-of-two sides (cuFFT)
        spectrum = torch.fft.rfftn(h, dim=axes, norm="ortho")
        out = spectrum.new_zeros(spectrum.shape[0], self.out_channels, *spectrum.shape[2:])
        m = self.modes
        for high, weight in zip(self.blocks, self.weights, strict=True):
            index = (slice(None), slice(None), *(slice(-m, None) if hi else slice(0, m) for hi in high))
            index = (*index, slice(0, m))
            w = torch.view_as_complex(weight.to(h.dtype))
            out[index] = torch.einsum(self._equation, spectrum[index], w)
        y = torch.fft.irfftn(out, s=sides, dim=axes, norm="ortho").movedim(1, -1)
        return F.silu(y + residual)


class TruncatedSpectralConv(SpectralConv):
    """The same layer, parameters and answers, computed by forming only the kept modes.

    The inference twin of :class:`SpectralConv` (``operators/acceleration.py`` swaps it in): DFT matrix
    products restricted to the kept modes instead of full-size FFTs. Other than float32 inputs run the
    reference forward pass.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, *grid, in_channels)`` -> ``(batch, *grid, out_channels)``."""
        if x.dtype != torch.float32:
            return super().forward(x)
        m = self.modes
        # In 2D the reference's blocks in order: the first axis' low, then high (negative) frequencies.
        first = (*range(m), *range(-m, 0))
        frequencies = (first, tuple(range(m))) if self.dim == 2 else (tuple(range(m)),)
        weight = torch.cat([torch.view_as_complex(w) for w in self.weights], dim=2)
        y = truncated_spectral_conv(x.movedim(-1, 1), weight, frequencies, "ortho").movedim(1, -1)
        return F.silu(y + self.linear(x))


class SpectralRegressor(nn.Module):
    """Spectral convolutions then a point-wise two-layer head, on the input grid, channels last.

    Parameters
    ----------
    in_channels : int
        Features from the encoder (``d_model``).
    out_channels : int
        Output fields.
    width : int
        Channels of the spectral convolutions.
    hidden : int
        Hidden width of the head.
    modes : int
        Fourier modes per axis.
    n_layers : int
        Spectral convolution layers.
    dim : int
        Spatial dimensions.
    coordinates : bool
        Concatenate the grid coordinates to the input and lift to ``width`` with a linear layer first.
    dropout : float
        On the input of every spectral layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        hidden: int,
        modes: int,
        n_layers: int,
        dim: int,
        coordinates: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.lift = nn.Linear(in_channels + dim, width) if coordinates else None
        first = width if coordinates else in_channels
        self.spectral = nn.ModuleList(
            SpectralConv(first if i == 0 else width, width, modes, dim) for i in range(n_layers)
        )
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, out_channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, *grid, in_channels)`` at ``coordinates`` ``(prod(grid), dim)`` ->
        ``(batch, *grid, out_channels)``."""
        if self.lift is not None:
            grid = coordinates.to(x.dtype).reshape(1, *x.shape[1:-1], -1).expand(*x.shape[:-1], -1)
            x = self.lift(torch.cat([x, grid], dim=-1))
        for layer in self.spectral:
            x = layer(self.dropout(x))
        return self.head(x)


def _interpolate(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    # align_corners=True maps node i of side s to i / (s - 1): the interpolated grid is exactly the
    # uniform_grid whose coordinates the attention and the regressor are given.
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class Downscaler2d(nn.Module):
    """Fine grid -> coarse grid in two interpolation steps with convolutions (the paper's interpolating
    CNN encoder): conv + ReLU on the input grid, bilinear to a middle grid, three chained 3x3 conv + ReLU
    whose outputs are concatenated (receptive fields 3, 5, 7), bilinear to the coarse grid.

    Parameters
    ----------
    in_channels : int
        Input fields.
    out_channels : int
        Output features (``d_model``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        third = out_channels // 3
        widths = (third, third, out_channels - 2 * third)
        self.first = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.chain = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in zip((out_channels, *widths[:-1]), widths, strict=True)
        )

    def forward(self, x: torch.Tensor, middle: tuple[int, int], coarse: tuple[int, int]) -> torch.Tensor:
        """``x`` ``(batch, in, *fine)`` -> ``(batch, out, *coarse)`` through a ``middle`` grid."""
        x = _interpolate(F.relu(self.first(x)), middle)
        parts = []
        for conv in self.chain:
            x = F.relu(conv(x))
            parts.append(x)
        return _interpolate(torch.cat(parts, dim=1), coarse)


class Upscaler2d(nn.Module):
    """Coarse grid -> fine grid: bilinear to the middle grid, 3x3 conv + SiLU, bilinear to the fine grid.

    Parameters
    ----------
    channels : int
        Features in and out (``d_model``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, middle: tuple[int, int], fine: tuple[int, int]) -> torch.Tensor:
        """``x`` ``(batch, channels, *coarse)`` -> ``(batch, channels, *fine)``."""
        return _interpolate(F.silu(self.conv(_interpolate(x, middle))), fine)


class GalerkinTransformer(nn.Module):
    """The Galerkin Transformer operator: ``(batch, in_channels, *grid) -> (batch, out_channels, *grid)``.

    1D: a linear lifting to ``d_model``, the encoder on the input grid, the spectral regressor. 2D: the
    CNN downscaler to a grid ``downscale`` times coarser, the encoder there, the interpolation upscaler
    back to the input grid, the spectral regressor. Grid coordinates are computed from the input shape.

    Parameters
    ----------
    config : GalerkinConfig
        Architecture arguments.
    """

    def __init__(self, config: GalerkinConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.dim == 1:
            self.lift: nn.Module | None = nn.Linear(c.in_channels, c.d_model)
            self.downscaler: Downscaler2d | None = None
            self.upscaler: Upscaler2d | None = None
        else:
            self.lift = None
            self.downscaler = Downscaler2d(c.in_channels, c.d_model)
            self.upscaler = Upscaler2d(c.d_model)
        self.encoder = nn.ModuleList(
            EncoderLayer(
                c.d_model,
                c.n_heads,
                c.dim,
                c.dim_feedforward,
                c.attention,
                c.xavier_gain,
                c.diagonal_weight,
                c.norm_eps,
                c.dropout,
            )
            for _ in range(c.n_layers)
        )
        self.regressor = SpectralRegressor(
            c.d_model,
            c.out_channels,
            c.regressor_width,
            c.regressor_hidden,
            c.modes,
            c.regressor_layers,
            c.dim,
            c.regressor_coordinates,
            c.dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` ``(batch, in_channels, *grid)`` to ``(batch, out_channels, *grid)``."""
        c = self.config
        if x.dim() != c.dim + 2 or x.shape[1] != c.in_channels:
            raise ValueError(
                f"expected input (batch, {c.in_channels}, {', '.join(['side'] * c.dim)}), "
                f"got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        fine = tuple(x.shape[2:])
        fine_coordinates = uniform_grid(fine, x.dtype, x.device)
        grid, middle, coordinates = fine, fine, fine_coordinates
        if self.lift is not None:
            h = self.lift(x.movedim(1, -1))
        else:
            assert self.downscaler is not None
            grid = tuple(coarse_side(s, c.downscale) for s in fine)
            # Middle grid: geometric mean of fine and coarse sides (two interpolation steps of equal ratio).
            middle = tuple(round(math.sqrt(f * g)) for f, g in zip(fine, grid, strict=True))
            coordinates = uniform_grid(grid, x.dtype, x.device)
            h = self.downscaler(x, middle, grid).movedim(1, -1)
        h = h.reshape(batch, -1, c.d_model)
        for layer in self.encoder:
            h = layer(h, coordinates)
        h = h.reshape(batch, *grid, c.d_model)
        if self.upscaler is not None:
            h = self.upscaler(h.movedim(-1, 1), middle, fine).movedim(1, -1)
        return self.regressor(h, fine_coordinates).movedim(-1, 1)
