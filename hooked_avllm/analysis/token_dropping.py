"""Drop audio or video tokens from the sequence after a chosen layer (the follow-up study's
experiment), in prefill and in KV-cached generation.

After layer ``after_layer`` no position reads the dropped tokens any more: in every later layer
they are removed as attention keys (their rows in the KV cache are masked). That gives exactly
the outputs of deleting them from the sequence (and from the cache) with the remaining tokens
keeping their positions, as the study does; the sequence keeps its length, so hooks keep their
shapes and caches stay aligned with the layout (the dropped positions' own activations are still
computed, but nothing downstream depends on them). Rows a model injects after a layer at the
dropped positions (``blocks.{l}.hook_injection``, e.g. DeepStack's at the video positions) are
added there as usual and go unread with them: dropping video tokens drops their injected rows too.

Example:
    >>> with drop_tokens(model, "video", after_layer=20):          # doctest: +SKIP
    ...     tokens = model.generate(inputs, max_new_tokens=50)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

from hooked_avllm.analysis.knockout import _codes
from hooked_avllm.forward_context import ForwardContext


class DropTokens:
    """An attention edit: tokens of ``kinds`` stop being read after ``after_layer``.

    ``after_layer=-1`` drops them from the start (they are seen by no layer).

    Example:
        >>> DropTokens("audio", after_layer=10).first_layer
        11
    """

    def __init__(self, kinds: str | Sequence[str], after_layer: int):
        self.codes = _codes(kinds)
        self.kinds = kinds
        self.after_layer = after_layer
        self._memo: tuple[Any, Tensor] | None = None  # (forward context, edges): the same in every later layer

    @property
    def first_layer(self) -> int:
        return self.after_layer + 1

    def blocked(self, layer: int, context: ForwardContext) -> Bool[Tensor, "batch query key"] | None:
        if layer <= self.after_layer:
            return None
        if self._memo is not None and self._memo[0] is context:
            return self._memo[1]
        dropped = torch.isin(context.kinds, torch.tensor(self.codes, device=context.kinds.device))  # [batch, key]
        edges = dropped[:, None, :].expand(-1, context.n_new, -1)
        self._memo = (context, edges)
        return edges

    def __repr__(self) -> str:
        return f"DropTokens({self.kinds!r}, after_layer={self.after_layer})"


@contextmanager
def drop_tokens(model: Any, kinds: str | Sequence[str], after_layer: int) -> Iterator[DropTokens]:
    """Drop the tokens of ``kinds`` after ``after_layer`` for every forward/generation inside the block."""
    edit = DropTokens(kinds, after_layer)
    with model.edit_attention(edit):
        yield edit
