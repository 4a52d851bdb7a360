"""PNG figures of fields: one grid of panels, 1D fields as curves and 2D fields as images.

Used by ``datagen inspect --plot`` (a few samples of a dataset) and by ``pdeserve eval --plot``
(input / truth / prediction / error), so both draw fields the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

Panel = tuple[str, np.ndarray]


def save_panels(rows: Sequence[Sequence[Panel]], path: str | Path, title: str | None = None) -> Path:
    """Draw ``rows`` of ``(title, field)`` panels into a PNG at ``path``.

    Parameters
    ----------
    rows : sequence of sequences of (str, array)
        One figure row per entry. A 1D field is drawn as a curve, a 2D field as an image with its own
        colour bar (axis 0 down the page, like the array).
    path : str or Path
        Output PNG file; its folder must exist.
    title : str, optional
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.8 * n_rows), squeeze=False)
    for ax_row, row in zip(axes, rows, strict=False):
        for ax, (label, field) in zip(ax_row, row, strict=False):
            field = np.asarray(field)
            if field.ndim == 1:
                ax.plot(np.linspace(0.0, 1.0, len(field), endpoint=False), field, lw=1.0)
            elif field.ndim == 2:
                fig.colorbar(ax.imshow(field, origin="upper", cmap="viridis"), ax=ax, fraction=0.046)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                raise ValueError(f"cannot draw a {field.ndim}D field {label!r}; pick a time step first")
            ax.set_title(label, fontsize=9)
        for ax in ax_row[len(row) :]:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
