"""The matplotlib figures of the tools (REPRODUCTION.md's, a sweep's summary.png), drawn one way:
files only (no display, also in a sweep's worker processes), mean ± std as lines with error
bars, the same axes furniture. matplotlib is imported on first use, so the tools that draw
nothing do not load it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, which writes files and needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_std_line(
    ax: Any,
    xs: Sequence[float],
    means: Sequence[float],
    stds: Sequence[float | None],
    label: str,
    color: str,
) -> None:
    """Means joined by a line, ± their std as error bars (none where a point has one value)."""
    errors = [0.0 if s is None else s for s in stds]
    ax.errorbar(xs, means, yerr=errors, fmt="s-", color=color, capsize=3, label=label or None)


def label_axes(ax: Any, xlabel: str, ylabel: str, title: str = "") -> None:
    """Axis labels, a light grid, the title if any, a legend if a line has a label."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9, wrap=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7)


def save(fig: Any, target: str | os.PathLike | IO[bytes]) -> None:
    """Lay out, write as PNG (to a path or a binary file) and free the figure."""
    fig.tight_layout()
    fig.savefig(target, format="png")
    pyplot().close(fig)
