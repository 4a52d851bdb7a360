"""Which grids a model accepts: a small value object shared by every architecture's config."""

from __future__ import annotations

from dataclasses import dataclass


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
