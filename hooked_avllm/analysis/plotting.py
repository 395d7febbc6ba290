"""Shared plotting helpers: a headless pyplot and one way to save figures.

Example:
    >>> plt = pyplot()
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [0, 1])
    >>> plt.close(fig)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` with a non-interactive backend unless one is already chosen (notebooks keep theirs)."""
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("Plots need matplotlib: pip install matplotlib") from error
    import sys

    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path | None) -> Any:
    """Save ``fig`` to ``path`` (PNG by suffix) when given; return the figure either way."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
