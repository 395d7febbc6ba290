"""Converters from Hugging Face checkpoints to HookedAVLLM weights.

One name map per tower or LLM (a function from a tensor name relative to the part's root and the
part's config to a list of :class:`Target`): ``qwen2_llm``, ``qwen_moe_llm``, ``qwen_vision``,
``whisper_audio``, ``qwen3_vision``, ``aut_audio``, ``siglip`` (with the STC connector and MLP
projectors), ``beats``, ...; one converter per family (``qwen2_5_omni``, ``videollama2``, ...),
which is its :class:`~weights_conversion.prefix_table.PrefixTable`: checkpoint prefix -> name map.
Converters import no family code; the family (``hooked_avllm/architectures/<family>/``) names
its converter, and the architecture registry is the one place that finds both.

Submodules are imported on first use: ``import weights_conversion`` loads nothing else.

Example:
    >>> import weights_conversion
    >>> weights_conversion.Target("embed.weight").param
    'embed.weight'
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Target"]


def __getattr__(name: str) -> Any:
    if name == "Target":
        from weights_conversion.targets import Target

        return Target
    try:
        return importlib.import_module(f"weights_conversion.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'weights_conversion' has no attribute {name!r}") from None
