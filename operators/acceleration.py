"""The served forward pass: inference twins of the models whose layers compute the same answer faster.

A spectral convolution keeps a dozen Fourier modes per axis of a grid of a hundred points, yet the
reference forward pass (neuraloperator's, and the Galerkin Transformer's regressor) forms full-size
spectra with FFTs and writes the kept modes into a mostly-zero full-size array before the inverse FFT.
:func:`truncated_spectral_conv` forms only the kept modes, with products by DFT matrices restricted to
them. :func:`served_module` builds a copy of a model whose layers compute that way (and whose
convolutions run channels last on CPU); the model itself is left as it is, the reference.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from neuralop.layers.channel_mlp import ChannelMLP
from torch import nn


def _norm_scales(n: int, norm: str) -> tuple[float, float]:
    """Scales of the forward and the inverse transform of ``n`` points under ``torch.fft``'s ``norm``."""
    return {"forward": (1.0 / n, 1.0), "backward": (1.0, 1.0 / n), "ortho": (n**-0.5, n**-0.5)}[norm]


def _phases(n: int, frequencies: tuple[int, ...]) -> torch.Tensor:
    """``2 pi f j / n`` as a ``(n, len(frequencies))`` float64 table, reduced exactly modulo ``n`` first."""
    j = torch.arange(n, dtype=torch.int64)[:, None]
    f = torch.tensor(frequencies, dtype=torch.int64)[None, :]
    return (2 * torch.pi / n) * ((j * f) % n).double()


@functools.lru_cache(maxsize=128)
def dft_matrices(
    n: int, frequencies: tuple[int, ...], norm: str, real: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DFT of ``n`` points restricted to ``frequencies``, and its inverse (zero at other frequencies).

    Parameters
    ----------
    n : int
        Points along the axis.
    frequencies : tuple of int
        Kept frequencies (negative ones count from the end, as ``torch.fft`` orders them).
    norm : str
        ``torch.fft``'s normalisation: ``"forward"``, ``"backward"`` or ``"ortho"``.
    real : bool
        The last axis of a real transform (``rfft``/``irfft``): real matrices, ``(n, 2k)`` forward and
        ``(2k, n)`` inverse, real and imaginary parts interleaved; the inverse counts each non-negative
        frequency but 0 and ``n / 2`` twice, for its conjugate. Otherwise complex ``(n, k)`` and ``(k, n)``.
    device : torch.device
        Where the float32 (complex64) matrices live. Cached per arguments.
    """
    forward_scale, inverse_scale = _norm_scales(n, norm)
    phase = _phases(n, frequencies)
    if not real:
        forward = torch.polar(torch.full_like(phase, forward_scale), -phase)
        inverse = torch.polar(torch.full_like(phase, inverse_scale), phase).T
        return forward.to(device, torch.complex64), inverse.contiguous().to(device, torch.complex64)
    f = torch.tensor(frequencies)
    twice = torch.where((f == 0) | (2 * f == n), 1.0, 2.0).double()
    forward = torch.stack([phase.cos(), -phase.sin()], dim=-1).reshape(n, -1) * forward_scale
    inverse = (torch.stack([phase.cos(), -phase.sin()], dim=-1) * (twice[:, None] * inverse_scale)).reshape(
        n, -1
    )
    return forward.to(device, torch.float32), inverse.T.contiguous().to(device, torch.float32)


def _along_last_axis(t: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``t @ matrix`` as one 2D matrix product: a broadcast product of a many-dimensional tensor runs
    as one small product per leading index on CPU, several times slower for complex numbers."""
    return (t.reshape(-1, t.shape[-1]) @ matrix).reshape(*t.shape[:-1], matrix.shape[-1])


def truncated_spectral_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    frequencies: tuple[tuple[int, ...], ...],
    norm: str,
    add_to: torch.Tensor | None = None,
) -> torch.Tensor:
    """``irfftn(W . rfftn(x))`` where ``W`` is zero but at the kept frequencies, without full FFTs.

    Only the kept modes are ever formed: each axis is transformed by a product with its DFT matrix
    restricted to them (the last axis real to complex, the others complex), the modes are mixed by one
    batched matrix product over all of them, and the inverse runs the same way back. With a dozen kept
    modes of a hundred points this is a few small matrix products instead of full-size FFTs and
    full-size complex spectra, mostly zeros.

    Parameters
    ----------
    x : torch.Tensor
        ``(batch, in_channels, *sides)``, real.
    weight : torch.Tensor
        ``(in_channels, out_channels, *kept)``, complex: the weight of each kept mode.
    frequencies : tuple of tuple of int
        Per axis, the frequency of each kept entry of ``weight`` (the last axis: non-negative ones).
    norm : str
        ``torch.fft``'s normalisation of the transform pair.
    add_to : torch.Tensor, optional
        A contiguous ``(batch, out_channels, *sides)`` tensor the result is added to in place (by the
        last matrix product, saving a pass over the grid) and returned.

    Returns
    -------
    torch.Tensor
        ``(batch, out_channels, *sides)``, real.
    """
    sides = tuple(x.shape[2:])
    batch, order = x.shape[0], len(sides)
    forward, inverse = zip(
        *(
            dft_matrices(n, f, norm, axis == order - 1, x.device)
            for axis, (n, f) in enumerate(zip(sides, frequencies, strict=True))
        ),
        strict=True,
    )
    kept = tuple(len(f) for f in frequencies)
    # Last axis: real to complex. The others, first to last: each in turn moved last and transformed,
    # so the modes end up ordered (last, first, ..., second to last).
    spectrum = torch.view_as_complex(
        (x.reshape(-1, sides[-1]) @ forward[-1]).reshape(*x.shape[:-1], kept[-1], 2)
    )
    for matrix in forward[:-1]:
        spectrum = _along_last_axis(spectrum.movedim(2, -1), matrix)
    mode_shape = spectrum.shape[2:]
    # Contiguous operands: a batched product of strided complex matrices runs as a loop of small ones.
    w = weight.movedim(-1, 2).reshape(weight.shape[0], weight.shape[1], -1).permute(2, 0, 1).contiguous()
    modes = spectrum.reshape(batch, x.shape[1], -1).permute(2, 0, 1).contiguous()
    out = torch.bmm(modes, w).permute(1, 2, 0).reshape(batch, -1, *mode_shape)
    for matrix in reversed(inverse[:-1]):
        out = _along_last_axis(out, matrix).movedim(-1, 2)
    modes = torch.view_as_real(out.contiguous()).reshape(-1, 2 * kept[-1])
    if add_to is None:
        return (modes @ inverse[-1]).reshape(batch, -1, *sides)
    add_to.view(-1, sides[-1]).addmm_(modes, inverse[-1])
    return add_to


class PointwiseConv1d(nn.Conv1d):
    """A kernel-1 ``Conv1d`` (neuraloperator's channel MLPs and skips) as one broadcast matrix product.

    The inference twin of such a ``Conv1d``: on CPU oneDNN runs these channel mixes several times
    slower than the matrix product they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self.weight[:, :, 0], x)
        return y if self.bias is None else y.add_(self.bias[:, None])


class InPlaceChannelMLP(ChannelMLP):
    """neuraloperator's ``ChannelMLP`` with its GELU applied in place: the same answers without a fresh
    activation-sized tensor per hidden layer (a batch of wide hidden layers is tens of MiB, which the
    allocator maps and page-faults anew on every pass). Other activations, and dropout, run the
    reference forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.non_linearity is not F.gelu or self.dropout is not None:
            return super().forward(x)
        shape = x.shape
        if x.ndim > 3:
            x = x.reshape(*shape[:2], -1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < self.n_layers - 1:
                x = torch.ops.aten.gelu_(x)
        return x.reshape(shape[0], self.out_channels, *shape[2:]) if len(shape) > 3 else x


def _is_pointwise(conv: nn.Conv1d) -> bool:
    return (
        conv.kernel_size == (1,)
        and conv.stride == (1,)
        and conv.padding in ((0,), "valid")
        and conv.groups == 1
    )


@functools.cache
def _twin_classes() -> dict[type, type]:
    """Layer class -> its inference twin, a subclass with the same parameters and a faster forward."""
    from pdeserve.operators import galerkin, spectral

    return {
        spectral.ResolutionInvariantSpectralConv: spectral.TruncatedSpectralConv,
        spectral.FNOBlocks: spectral.TruncatedFNOBlocks,
        galerkin.SpectralConv: galerkin.TruncatedSpectralConv,
        ChannelMLP: InPlaceChannelMLP,
    }


def served_module(model: nn.Module, device: torch.device) -> nn.Module:
    """An inference copy of ``model``, on ``device``, whose layers compute the same answers faster.

    Spectral convolutions become their truncated-DFT twins, kernel-1 ``Conv1d`` layers matrix products
    and, on CPU, 2D convolutions run channels last (oneDNN's fast layout; :class:`ServedModel` hands
    them channels-last inputs). The copy snapshots the weights: build it again after changing them.

    Parameters
    ----------
    model : torch.nn.Module
        The reference network; left unchanged.
    device : torch.device
        Where the copy runs.
    """
    twin = copy.deepcopy(model).to(device).eval()
    twins = _twin_classes()
    channels_last = device.type == "cpu"
    for module in twin.modules():
        if type(module) in twins:
            module.__class__ = twins[type(module)]
        elif type(module) is nn.Conv1d and _is_pointwise(module):
            module.__class__ = PointwiseConv1d
        elif channels_last and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.to(memory_format=torch.channels_last)
    for parameter in twin.parameters():
        parameter.requires_grad_(False)
    return ServedModel(twin, channels_last and any(isinstance(m, nn.Conv2d) for m in twin.modules()))


# Most grid points (samples x points per sample) of one pass of the twin on CPU. glibc maps every block
# above 32 MiB afresh and page-faults it in on each use; at this size an activation of up to 128
# float32 channels stays below that and is reused from the heap (serving/allocator.py), and the
# smaller passes lose nothing to the larger batch: a 64 x 64 operator peaks near 8 to 16 samples.
CPU_PASS_POINTS = 2**15


class ServedModel(nn.Module):
    """Runs the inference twin, channels last when its convolutions are, in passes of at most
    :data:`CPU_PASS_POINTS` grid points on CPU; answers contiguous.

    Parameters
    ----------
    twin : torch.nn.Module
        Built by :func:`served_module`.
    channels_last : bool
        Hand the twin 4D inputs in channels-last memory order.
    """

    def __init__(self, twin: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.twin = twin
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        points = math.prod(x.shape[2:])
        per_pass = max(1, CPU_PASS_POINTS // max(1, points)) if x.device.type == "cpu" else len(x)
        if len(x) <= per_pass:
            return self.twin(x).contiguous()
        return torch.cat([self.twin(part) for part in x.split(per_pass)]).contiguous()
