"""A resolution-invariant spectral convolution for neuraloperator's FNO and TFNO.

neuraloperator 2.0's ``SpectralConv`` centres the spectrum with ``fftshift`` before picking the kept
modes and undoes it with ``fftshift`` again instead of ``ifftshift``. On an even side the two are the
same; on an odd side the second shift lands one frequency off, so every Fourier layer mixes the wrong
modes back in and an FNO trained at 64 answers garbage at 63, 65 or 127 points per side (every dimension
but the last, which its real FFT does not shift). :class:`ResolutionInvariantSpectralConv` keeps the
same parameters and weight layout (published checkpoints load unchanged) and selects the modes by
rolling the spectrum, which is exact on every side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from neuralop.layers.fno_block import FNOBlocks
from neuralop.layers.skip_connections import SoftGating
from neuralop.layers.spectral_convolution import SpectralConv

from pdeserve.operators.acceleration import truncated_spectral_conv


class ResolutionInvariantSpectralConv(SpectralConv):
    """neuraloperator's ``SpectralConv`` with a mode selection that is right on odd grid sides too.

    Takes exactly ``SpectralConv``'s arguments. Configurations this class does not cover (complex data,
    half precision, resolution scaling) run neuraloperator's own forward pass unchanged.
    """

    def plain(self) -> bool:
        """Real data, full precision, no resolution scaling: the configurations this class handles."""
        return not (self.complex_data or self.fno_block_precision != "full" or self.resolution_scaling_factor)

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if not self.plain():
            return super().forward(x, output_shape)
        dims = tuple(range(-self.order, 0))
        sides = tuple(x.shape[2:])
        spectrum = torch.fft.rfftn(x, norm=self.fft_norm, dim=dims)
        weight_modes = self.weight.shape[-self.order :]
        kept = [min(n, m) for n, m in zip(spectrum.shape[2:], weight_modes, strict=True)]
        # Every dimension but the last holds negative frequencies at its end: roll the lowest
        # kept // 2 of them to the front, so the kept modes (-k//2 .. k - k//2 - 1) are one block.
        shifts = [k // 2 for k in kept[:-1]]
        if shifts:  # a 1D spectrum has only its last, unshifted dimension
            spectrum = torch.roll(spectrum, shifts, dims[:-1])
        block = (slice(None), slice(None), *(slice(0, k) for k in kept))
        # The weights are stored zero frequency in the middle (neuraloperator's layout): take the
        # centred kept modes of each dimension but the last, and the first kept ones of the last.
        channels = (slice(None),) if self.separable else (slice(None), slice(None))
        pairs = zip(weight_modes[:-1], kept, strict=False)
        centred = tuple(slice((m - k) // 2, (m + k) // 2) for m, k in pairs)
        weight = self.weight[(*channels, *centred, slice(0, kept[-1]))]
        out = spectrum.new_zeros(x.shape[0], self.out_channels, *spectrum.shape[2:])
        out[block] = self._contract(spectrum[block], weight, separable=self.separable)
        if shifts:
            out = torch.roll(out, [-s for s in shifts], dims[:-1])
        y = torch.fft.irfftn(out, s=output_shape or sides, dim=dims, norm=self.fft_norm)
        return y if self.bias is None else y + self.bias


class TruncatedSpectralConv(ResolutionInvariantSpectralConv):
    """The same layer, parameters and answers, computed by :func:`truncated_spectral_conv`.

    The inference twin of :class:`ResolutionInvariantSpectralConv` (``operators/acceleration.py`` swaps it
    in): it forms only the kept modes instead of full-size spectra. Separable weights, explicit output
    shapes and other than float32 inputs run the reference forward pass.
    """

    def handles(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> bool:
        """Whether :meth:`add_into` computes this layer for ``x``."""
        return self.plain() and not self.separable and output_shape is None and x.dtype == torch.float32

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if not self.handles(x, output_shape):
            return super().forward(x, output_shape)
        return self.add_into(x)

    def add_into(self, x: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's answer for ``x``, added in place to ``add_to`` (contiguous, the answer's shape)
        when given."""
        weight_modes = self.weight.shape[-self.order :]
        sides = x.shape[2:]
        kept = [min(n, m) for n, m in zip((*sides[:-1], sides[-1] // 2 + 1), weight_modes, strict=True)]
        # The reference forward's modes: on every axis but the last, frequencies -k//2 .. k - k//2 - 1
        # against the centred kept entries of the weight; on the last, the first k of each.
        pairs = zip(weight_modes[:-1], kept, strict=False)
        index = (slice(None), slice(None), *(slice((m - k) // 2, (m + k) // 2) for m, k in pairs))
        if torch.is_tensor(self.weight):
            weight = self.weight[index][..., : kept[-1]]
        else:  # factorised (TFNO): its dense modes, rebuilt once per grid and device (fixed weights)
            dense, key = self.__dict__.setdefault("_dense_modes", {}), (tuple(kept), x.device)
            if key not in dense:
                with torch.inference_mode(False), torch.no_grad():  # usable outside inference mode too
                    dense[key] = self.weight[index].to_tensor()[..., : kept[-1]]
            weight = dense[key]
        frequencies = (*(tuple(range(-(k // 2), k - k // 2)) for k in kept[:-1]), tuple(range(kept[-1])))
        y = truncated_spectral_conv(x, weight, frequencies, self.fft_norm, add_to)
        return y if self.bias is None else y.add_(self.bias)


class TruncatedFNOBlocks(FNOBlocks):
    """neuraloperator's ``FNOBlocks`` with the same parameters and answers, in fewer passes over the grid.

    The inference twin (``operators/acceleration.py`` swaps it in) of the blocks ``FNOConfig`` builds
    (post-activation, linear skip, channel MLP with a soft-gating skip, GELU, no normalisation): the
    spectral convolution adds itself into the skip's output, the activations run in place and the
    gating skip is one fused multiply-add. Other configurations run the reference forward pass.
    """

    def handles(self, x: torch.Tensor, index: int, output_shape: tuple[int, ...] | None) -> bool:
        conv = self.convs[index]
        return (
            isinstance(conv, TruncatedSpectralConv)
            and conv.handles(x, output_shape)
            and not (self.preactivation or self.complex_data or self.stabilizer or self.norm is not None)
            and self.fno_skips is not None
            and self.use_channel_mlp
            and isinstance(self.channel_mlp_skips[index], SoftGating)
            and self.non_linearity is F.gelu
        )

    def forward(
        self, x: torch.Tensor, index: int = 0, output_shape: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        if not self.handles(x, index, output_shape):
            return super().forward(x, index, output_shape)
        activate = index < self.n_layers - 1
        h = self.convs[index].add_into(x, self.fno_skips[index](x).contiguous())
        if activate:
            h = torch.ops.aten.gelu_(h)
        gating = self.channel_mlp_skips[index]
        y = self.channel_mlp[index](h).addcmul_(gating.weight, x)
        if gating.bias is not None:
            y = y.add_(gating.bias)
        return torch.ops.aten.gelu_(y) if activate else y
