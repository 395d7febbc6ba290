"""Deprecated: caching while generating moved to :mod:`hooked_avllm.generation` (removed in 0.3)."""

import warnings

from hooked_avllm.generation import NamesFilter, cached_generation

generate_with_cache = cached_generation

warnings.warn("hooked_avllm.generation_cache moved to hooked_avllm.generation (cached_generation); the old path goes "
              "in 0.3", DeprecationWarning, stacklevel=2)

__all__ = ["NamesFilter", "generate_with_cache"]
