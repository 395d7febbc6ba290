"""What the positions of a running decoder forward are: published as ``model.forward_context``
while the LLM blocks run, read by hooks and attention edits (knockout, token dropping).

Example:
    >>> import torch
    >>> context = ForwardContext(kinds=torch.tensor([[0, 1, 4]]), past=2, n_new=1, step=1, n_prompt=2)
    >>> context.query_kinds.tolist()
    [[4]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxtyping import Int
from torch import Tensor


@dataclass
class ForwardContext:
    """The kinds of every key position (cached + new, ``[batch, key_pos]``, codes of
    :mod:`hooked_avllm.vocabulary`); the queries of this forward are the last ``n_new`` of them,
    i.e. key positions ``past ... past + n_new - 1``. ``step`` is 0 for a plain forward or a
    generation's prefill, k for the k-th decoding step; ``n_prompt`` is the number of positions
    before the first generated one (the last prompt position is ``n_prompt - 1``). While a captured
    decoding step is recorded, ``decoder`` holds its static buffers (the step index and position
    as device tensors, the KV buffers, the key and edit masks): a hook marked ``graph_safe`` reads
    them instead of ``step`` and ``past``, which are then nominal."""

    kinds: Int[Tensor, "batch key_pos"]
    past: int
    n_new: int
    step: int = 0
    n_prompt: int = 0
    decoder: Any = None  # a captured decoding step's static buffers (hooked_avllm.decoding.CapturedDecoder)

    @property
    def query_kinds(self) -> Int[Tensor, "batch query_pos"]:
        """The kinds of this forward's query positions."""
        return self.kinds[:, self.past : self.past + self.n_new]
