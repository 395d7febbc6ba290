"""Deprecated: position selection moved to :mod:`hooked_avllm.inputs.select` (removed in 0.3)."""

import warnings

from hooked_avllm.inputs.select import PositionsLike, PositionsOrIndices, position_mask, select_positions

warnings.warn("hooked_avllm.analysis.select moved to hooked_avllm.inputs.select; the old path goes in 0.3",
              DeprecationWarning, stacklevel=2)

__all__ = ["PositionsLike", "PositionsOrIndices", "position_mask", "select_positions"]
