"""What each sequence position is, as one integer code per position, and the context of a forward.

Analysis tools (attention share, knockout, token dropping) need the kind of every query and key
position, also while generating with a KV cache, where the keys span the prompt and every token
generated so far. The model computes these codes once per forward and publishes them, with the
query offset, as :class:`ForwardContext` (``model.forward_context``) while its blocks run.

Example:
    >>> import torch
    >>> from hooked_avllm import AVLLMConfig
    >>> ids = torch.tensor([[1, 203, 200, 200, 204, 2]])
    >>> position_kinds(ids, None, AVLLMConfig.tiny().tokens).tolist()
    [[0, 0, 1, 1, 0, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

MEDIA_KINDS: tuple[str, ...] = ("audio", "video", "image")  # what a media position can hold; the layout has a mask each
KINDS: tuple[str, ...] = ("text", *MEDIA_KINDS, "generated", "padding")
TEXT, AUDIO, VIDEO, IMAGE, GENERATED, PADDING = range(len(KINDS))
KIND_CODE = {name: code for code, name in enumerate(KINDS)}


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


@dataclass
class ForwardContext:
    """Published as ``model.forward_context`` while the LLM blocks of one forward run.

    ``kinds`` covers every key position (cached + new, ``[batch, key_pos]``); the queries of this
    forward are the last ``n_new`` of them, i.e. key positions ``past ... past + n_new - 1``.
    ``step`` is 0 for a plain forward or a generation's prefill, k for the k-th decoding step.
    """

    kinds: Int[Tensor, "batch key_pos"]
    past: int
    n_new: int
    step: int = 0
    n_prompt: int = 0  # positions before the first generated one (the last prompt position is n_prompt - 1)
