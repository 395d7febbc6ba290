"""The architecture registry: one folder per model family, found by the checkpoint's ``model_type``.

``architecture_for(model_type)`` gives the family object the generic
:class:`~hooked_avllm.HookedAVLLM` composes itself from; ``supported()`` lists every family with
its ``model_type`` values and the hub ids known to work. Adding a family: see
``docs/adding_an_architecture.md``.

Example:
    >>> [a.name for a in supported()]
    ['qwen2_5_omni', 'qwen2_5_vl', 'qwen3_omni', 'videollama2']
    >>> architecture_for("qwen2_5_omni_thinker").name
    'qwen2_5_omni'
"""

from __future__ import annotations

from hooked_avllm.architectures.base import MEDIA_KINDS, TOWER_SLOTS, Architecture
from hooked_avllm.architectures.qwen2_5_omni import Qwen25Omni
from hooked_avllm.architectures.qwen2_5_vl import Qwen25VL
from hooked_avllm.architectures.qwen3_omni import Qwen3Omni
from hooked_avllm.architectures.videollama2 import VideoLLaMA2

FAMILIES: tuple[Architecture, ...] = (Qwen25Omni(), Qwen25VL(), Qwen3Omni(), VideoLLaMA2())
# model_type in config.json (and AVLLMConfig.architecture) -> family
BY_MODEL_TYPE: dict[str, Architecture] = {t: family for family in FAMILIES for t in family.model_types}


def architecture_for(model_type: str) -> Architecture:
    """The family of a ``model_type`` (a ``config.json`` value or ``AVLLMConfig.architecture``)."""
    family = BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise ValueError(
            f"unknown architecture: model_type {model_type!r}. Supported: {sorted(BY_MODEL_TYPE)} "
            "(hooked_avllm.architectures.supported() lists them with their hub ids)"
        )
    return family


def supported() -> list[Architecture]:
    """Every registered family (``.name``, ``.model_types``, ``.hub_ids``, ``.description``)."""
    return list(FAMILIES)


__all__ = ["Architecture", "BY_MODEL_TYPE", "FAMILIES", "MEDIA_KINDS", "TOWER_SLOTS", "architecture_for", "supported"]
