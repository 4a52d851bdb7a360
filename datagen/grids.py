"""Grids as explicit objects: every solver takes one instead of assuming a global mesh."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft

from pdeserve.datagen.errors import SolverRefusal


@dataclass(frozen=True)
class UnitSquareGrid:
    """Node-centred uniform grid on [0, 1]^2, boundary nodes included.

    Parameters
    ----------
    n : int
        Nodes per side (>= 3). Node ``(i, j)`` sits at ``(i * h, j * h)`` with ``h = 1 / (n - 1)``;
        the first array axis is ``x``, the second ``y``.
    """

    n: int

    def __post_init__(self) -> None:
        if self.n < 3:
            raise SolverRefusal(f"a grid needs at least 3 nodes per side, got {self.n}")

    @property
    def h(self) -> float:
        """Node spacing."""
        return 1.0 / (self.n - 1)

    @property
    def coordinates(self) -> np.ndarray:
        """The 1D node coordinates shared by both axes, shape ``(n,)``."""
        return np.linspace(0.0, 1.0, self.n)

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` node coordinates, each of shape ``(n, n)``, indexed ``[i, j]``."""
        return np.meshgrid(self.coordinates, self.coordinates, indexing="ij")

    def subsample_factor(self, coarse: UnitSquareGrid) -> int:
        """Stride that maps this grid's nodes onto ``coarse``'s (same domain, nested nodes)."""
        if (self.n - 1) % (coarse.n - 1):
            raise SolverRefusal(
                f"resolution {coarse.n} does not nest in solve resolution {self.n}: "
                f"(solve_resolution - 1) must be a multiple of (resolution - 1)"
            )
        return (self.n - 1) // (coarse.n - 1)


def periodic_coordinates(n: int) -> np.ndarray:
    """Node coordinates ``x_i = i / n`` of the periodic grid on [0, 1), shape ``(n,)``."""
    return np.arange(n) / n


def rfft2_wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers ``(k_x, k_y)`` of the ``rfft2`` modes of an ``n x n`` periodic grid.

    ``k_x`` has shape ``(n, 1)`` (``0 .. n/2 - 1, -n/2 .. -1``), ``k_y`` shape ``(1, n // 2 + 1)``; they
    broadcast to the ``(n, n // 2 + 1)`` layout of ``rfft2`` over the last two axes ``(x, y)``.
    """
    return np.rint(fft.fftfreq(n, 1.0 / n))[:, None], np.arange(n // 2 + 1)[None, :].astype(np.float64)


def covering_steps(interval: float, dt: float) -> int:
    """The fewest equal steps of at most ``dt`` (up to rounding) that cover ``interval`` exactly."""
    return max(1, math.ceil(interval / dt * (1.0 - 1e-12)))


def check_time_grid(final_time: float, record_every: float | None) -> None:
    """``ValueError`` (naming the CLI flags) unless ``final_time > 0`` is a whole number of
    ``record_every > 0`` intervals (``None``: only the final state is stored)."""
    if not (final_time > 0 and math.isfinite(final_time)):
        raise ValueError(f"--final-time must be positive, got {final_time}")
    if record_every is None:
        return
    if not (record_every > 0 and math.isfinite(record_every)):
        raise ValueError(f"--record-every must be positive, got {record_every}")
    ratio = final_time / record_every
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-9 * ratio:
        raise ValueError(
            f"--record-every {record_every} does not divide --final-time {final_time}: "
            "the final time must be a whole number of recording intervals"
        )


def time_grid(final_time: float, record_every: float | None) -> np.ndarray:
    """Stored times, shape ``(T,)``: ``record_every, 2 record_every, ..., final_time`` (``None``: only
    ``final_time``). Multiples of ``final_time / T`` land exactly on ``final_time``."""
    count = 1 if record_every is None else round(final_time / record_every)
    return final_time * np.arange(1, count + 1) / count
