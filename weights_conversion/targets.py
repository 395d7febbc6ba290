"""Where one checkpoint tensor lands in our state dict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """Copy a checkpoint tensor (reshaped to ``shape`` if given) into ``param[rows]``, or into
    ``param[index][rows]`` when ``index`` is given (one expert of a stacked ``[expert, ...]`` parameter)."""

    param: str
    rows: tuple[int, int] | None = None  # [start, stop) along dim 0 of a fused parameter (of param[index])
    shape: tuple[int, ...] | None = None  # reshape applied to the checkpoint tensor first
    index: int | None = None  # the slice of dim 0 first: per-expert tensors into one stacked parameter
