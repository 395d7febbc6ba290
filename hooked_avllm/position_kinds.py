"""Deprecated (removed in 0.3): the kind vocabulary lives in :mod:`hooked_avllm.vocabulary`,
:class:`ForwardContext` in :mod:`hooked_avllm.forward_context`, and a position's kind comes from the
inputs' layout (``layout.kind_codes()``, ``model.layout_for(ids).kind_codes()``).
:func:`position_kinds` still reads kinds off placeholder ids for code that has no layout.

Example:
    >>> import torch
    >>> from hooked_avllm import AVLLMConfig
    >>> ids = torch.tensor([[1, 203, 200, 200, 204, 2]])
    >>> position_kinds(ids, None, AVLLMConfig.tiny().tokens).tolist()
    [[0, 0, 1, 1, 0, 0]]
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.forward_context import ForwardContext
from hooked_avllm.vocabulary import AUDIO, GENERATED, IMAGE, KIND_CODE, KINDS, MEDIA_KINDS, PADDING, TEXT, VIDEO

warnings.warn("hooked_avllm.position_kinds is deprecated: kinds are in hooked_avllm.vocabulary, ForwardContext in "
              "hooked_avllm.forward_context, and layout.kind_codes() gives every position's kind; the module goes in 0.3",
              DeprecationWarning, stacklevel=2)

__all__ = ["AUDIO", "GENERATED", "IMAGE", "KINDS", "KIND_CODE", "MEDIA_KINDS", "PADDING", "TEXT", "VIDEO", "ForwardContext", "position_kinds"]

def position_kinds(
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    tokens: Any,
    layout: Any = None,
) -> Int[Tensor, "batch pos"]:
    """Kind code of every position: from the layout's masks when given (it knows generated
    positions), else from the placeholder ids (bracket tokens count as text) and the padding mask."""
    kinds = torch.full_like(input_ids, TEXT, dtype=torch.long)
    if layout is not None and tuple(layout.shape) == tuple(input_ids.shape):
        masks = {name: getattr(layout, name) for name in KINDS[1:]}
    else:
        masks = {name: input_ids == token
                 for name, token in (("audio", tokens.audio), ("video", tokens.video), ("image", tokens.image))
                 if token is not None}
        if attention_mask is not None:
            masks["padding"] = attention_mask == 0
    for name, mask in masks.items():  # torch.where: no host sync on a GPU
        kinds = torch.where(mask.to(kinds.device), KIND_CODE[name], kinds)
    return kinds
