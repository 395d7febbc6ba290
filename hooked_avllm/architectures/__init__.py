"""Model families: one folder each, found by the checkpoint's ``model_type``
(:mod:`hooked_avllm.architectures.registry`).

``architecture_for(model_type)`` gives the family object the generic
:class:`~hooked_avllm.HookedAVLLM` composes itself from; ``supported()`` lists every family with
its ``model_type`` values and the hub ids known to work. Adding a family: see
``docs/adding_an_architecture.md``.

Example:
    >>> "qwen2_5_omni" in [a.name for a in supported()]
    True
"""

from __future__ import annotations

from typing import Any

from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.registry import architecture_for, supported
from hooked_avllm.vocabulary import MEDIA_KINDS, TOWER_SLOTS

__all__ = ["Architecture", "MEDIA_KINDS", "TOWER_SLOTS", "architecture_for", "supported"]


def __getattr__(name: str) -> Any:
    """``FAMILIES`` and ``BY_MODEL_TYPE``: the registry's tables (filled on first use)."""
    from hooked_avllm.architectures import registry

    if name == "FAMILIES":
        return registry.families()
    if name == "BY_MODEL_TYPE":
        return registry.by_model_type()
    raise AttributeError(f"module 'hooked_avllm.architectures' has no attribute {name!r}")
