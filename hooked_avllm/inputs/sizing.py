"""Deprecated: moved to :mod:`hooked_avllm.architectures.qwen.sizing` (the Qwen families' input
pipeline); this path goes in 0.3."""

import warnings

from hooked_avllm.architectures.qwen.sizing import *  # noqa: F401,F403
from hooked_avllm.architectures.qwen.sizing import __all__ as _moved

warnings.warn("hooked_avllm.inputs.sizing moved to hooked_avllm.architectures.qwen.sizing; the old path goes in 0.3",
              DeprecationWarning, stacklevel=2)

__all__ = list(_moved)
