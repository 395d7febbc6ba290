"""Kept for imports from outside the shared fixtures (``bench/``, older tests): the families' tiny
models and clips now live in their test kits (``tests/kits/<family>.py``), found automatically.

``Family(name)`` is the kit of that family (``kits.kit_named``); ``FAMILIES`` the discovered
names. :func:`placeholder_kinds` is the tests' own reading of kind codes straight off the ids.
"""

from __future__ import annotations

import torch

from kits import KITS, FamilyKit, kit_named
from kits.qwen2_5_omni import batch_inputs, clip_inputs, tiny_model
from kits.qwen3_omni import AUT_TOKENS_PER_SECOND, qwen3_clip_inputs, qwen3_model
from kits.videollama2 import (
    FBANK_FRAMES_PER_SECOND,
    videollama2_batch_inputs,
    videollama2_clip_inputs,
    videollama2_model,
    videollama2_reference_embeds,
    videollama2_reference_pair,
    videollama2_text_inputs,
)

FAMILIES = tuple(kit.name for kit in KITS)


def Family(name: str) -> FamilyKit:  # noqa: N802 (the old class name)
    """The test kit of family ``name`` (see ``kits.FamilyKit``)."""
    return kit_named(name)


def placeholder_kinds(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, tokens) -> torch.Tensor:
    """Kind codes read straight off the ids (placeholders by id, bracket tokens as text, padding by
    the mask): the tests' own reading, independent of the library's layouts."""
    from hooked_avllm.vocabulary import KIND_CODE

    kinds = torch.full_like(input_ids, KIND_CODE["text"], dtype=torch.long)
    for name in ("audio", "video", "image"):
        token = getattr(tokens, name)
        if token is not None:
            kinds = torch.where(input_ids == token, KIND_CODE[name], kinds)
    if attention_mask is not None:
        kinds = torch.where(attention_mask == 0, KIND_CODE["padding"], kinds)
    return kinds


__all__ = [
    "AUT_TOKENS_PER_SECOND", "FAMILIES", "FBANK_FRAMES_PER_SECOND", "Family", "batch_inputs", "clip_inputs",
    "placeholder_kinds", "qwen3_clip_inputs", "qwen3_model", "tiny_model", "videollama2_batch_inputs",
    "videollama2_clip_inputs", "videollama2_model", "videollama2_reference_embeds", "videollama2_reference_pair",
    "videollama2_text_inputs",
]
