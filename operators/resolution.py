"""Which grids a model accepts: a small value object shared by every architecture's config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResolutionRule:
    """Grid sides a model accepts: every side in ``[minimum, maximum]`` and divisible by ``multiple``."""

    minimum: int
    maximum: int
    multiple: int = 1

    def accepts(self, side: int) -> bool:
        return self.minimum <= side <= self.maximum and side % self.multiple == 0

    def nearest(self, side: int) -> list[int]:
        """The accepted sides closest to ``side`` (one below and one above when both exist)."""
        low = max(self.minimum, min(self.maximum, side) // self.multiple * self.multiple)
        high = low if low >= side else low + self.multiple
        return sorted({v for v in (low, high) if self.accepts(v)})

    def check(self, sides: tuple[int, ...]) -> str | None:
        """None if ``sides`` are accepted, else a message saying what is expected and the nearest
        accepted sides."""
        bad = sorted({s for s in sides if not self.accepts(s)})
        if not bad:
            return None
        rule = f"between {self.minimum} and {self.maximum}"
        if self.multiple > 1:
            rule += f" and divisible by {self.multiple}"
        nearest = "; ".join(f"nearest to {s}: {' or '.join(map(str, self.nearest(s)))}" for s in bad)
        return f"every grid side must be {rule} ({nearest})"
