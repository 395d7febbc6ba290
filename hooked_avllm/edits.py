"""Attention edits: knockout rules and token dropping as additive masks the fused kernels take.

An edit has ``blocked(layer, context)`` returning a bool ``[batch, query, key]`` tensor of edges to
remove (or ``None``) for the running forward (its :class:`~hooked_avllm.forward_context.ForwardContext`);
the model turns the union of the active edits into an additive ``-inf`` mask for that layer, in
plain forwards, at the generation's prefill and in every cached decoding step. SDPA still runs: no
pattern is materialised unless a pattern hook asks for it. A query always keeps its own position,
so no attention row is empty.

Example:
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> model.has_attention_edits
    False
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor

from hooked_avllm.forward_context import ForwardContext


class AttentionEdits:
    """The model's attention-edit registry (mixed into :class:`~hooked_avllm.HookedAVLLM`)."""

    _attention_edits: list
    _edit_memo: tuple | None

    @contextmanager
    def edit_attention(self, *edits: Any) -> Iterator[Any]:
        """Apply attention edits (knockout rules, token dropping) to every forward and generation
        step inside the block (see the module docstring).

        Example:
            >>> from hooked_avllm.analysis.knockout import Knockout, KnockoutRule  # doctest: +SKIP
            >>> with model.edit_attention(Knockout(KnockoutRule("generated", "video", layers=range(18, 30)))):  # doctest: +SKIP
            ...     tokens = model.generate(inputs, max_new_tokens=50)
        """
        edits = tuple(self._ready_edit(edit, i) for i, edit in enumerate(edits))
        self._attention_edits.extend(edits)
        try:
            yield self
        finally:
            for edit in edits:
                self._attention_edits.remove(edit)

    def _ready_edit(self, edit: Any, index: int) -> Any:
        """``edit`` as an attention edit checked against this model: an object that converts itself
        (``as_attention_edit()``, e.g. a single knockout rule) is converted, and ``bind(model)`` runs
        where the edit has it, so layers the model lacks raise here instead of editing nothing."""
        convert = getattr(edit, "as_attention_edit", None)
        if callable(convert):
            edit = convert()
        if not callable(getattr(edit, "blocked", None)):
            raise TypeError(
                f"edit_attention: edit {index} is {type(edit).__name__} {edit!r:.80}, not an attention edit (an object "
                "with blocked(layer, context)); pass e.g. Knockout([...rules]) or DropTokens from hooked_avllm.analysis"
            )
        bind = getattr(edit, "bind", None)
        return (bind(self) or edit) if callable(bind) else edit

    @property
    def has_attention_edits(self) -> bool:
        """Whether an ``edit_attention`` block is active."""
        return bool(self._attention_edits)

    def attention_edit_mask(self, layer: int, context: ForwardContext, dtype: torch.dtype) -> Tensor | None:
        """Additive mask ``[batch, 1, query, key]`` (0 or -inf) of the active edits at ``layer``
        (``None`` when no edit blocks an edge there); what the decoder hands the attention, and
        what analyses that recompute a pattern beside the fused kernel must add."""
        edges = [edit.blocked(layer, context) for edit in self._attention_edits]
        memo = self._edit_memo  # holds the edge tensors it was made from: an identity check on a freed one could
        # match a new tensor at its address (a fresh tensor per layer, e.g. RowEdits', then got the last layer's mask)
        if memo is not None and memo[0] is context and len(memo[1]) == len(edges) and all(
                a is b for a, b in zip(memo[1], edges)):
            return memo[2]  # the edits give the same edges as in the previous layer of this forward
        blocked = None
        for e in edges:
            if e is not None:
                blocked = e if blocked is None else blocked | e
        mask = None
        if blocked is not None:
            own = torch.arange(context.n_new, device=blocked.device)[:, None] + context.past
            blocked = blocked & (torch.arange(blocked.shape[-1], device=blocked.device)[None, :] != own)
            mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device)
            mask = mask.masked_fill_(blocked, float("-inf"))[:, None]
        self._edit_memo = (context, edges, mask)
        return mask


class RowEdits:
    """Several attention edits side by side in one batch: rows ``i * rows_each ...
    (i + 1) * rows_each - 1`` get ``edits[i]`` (``None``: no edit), so the conditions of a sweep
    can run as one batch (each block of rows is one condition over the same clip rows).

    Example:
        >>> edit = RowEdits([None, None], rows_each=1)
        >>> edit.decode_invariant
        True
    """

    def __init__(self, edits: list[Any], rows_each: int):
        self.edits, self.rows_each = list(edits), rows_each
        self.decode_invariant = all(getattr(e, "decode_invariant", False) for e in self.edits if e is not None)
        self._parts: tuple[ForwardContext, list[ForwardContext]] | None = None  # one forward's sub-contexts
        self._memo: tuple[ForwardContext, list[Any], Tensor] | None = None  # (context, the edits' edges, their rows)

    def bind(self, model: Any) -> "RowEdits":
        for edit in self.edits:
            if edit is not None and callable(getattr(edit, "bind", None)):
                edit.bind(model)
        return self

    def _contexts(self, context: ForwardContext) -> list[ForwardContext]:
        """Each block's view of ``context`` (the same objects for every layer of one forward, so the
        edits' own per-forward memos hold)."""
        if self._parts is None or self._parts[0] is not context:
            n = self.rows_each
            self._parts = (context, [ForwardContext(context.kinds[i * n : (i + 1) * n], context.past, context.n_new,
                                                    context.step, context.n_prompt) for i in range(len(self.edits))])
        return self._parts[1]

    def blocked(self, layer: int, context: ForwardContext) -> Tensor | None:
        parts = [e.blocked(layer, c) if e is not None else None for e, c in zip(self.edits, self._contexts(context))]
        if all(p is None for p in parts):
            return None
        memo = self._memo  # the same edges as the previous layer's (held, so identity is safe): the same rows
        if memo is not None and memo[0] is context and all(a is b for a, b in zip(memo[1], parts)):
            return memo[2]
        empty = torch.zeros(self.rows_each, context.n_new, context.kinds.shape[1], dtype=torch.bool,
                            device=context.kinds.device)
        rows = torch.cat([p if p is not None else empty for p in parts])
        self._memo = (context, parts, rows)
        return rows

    def __repr__(self) -> str:
        return f"RowEdits({self.edits!r}, rows_each={self.rows_each})"


__all__ = ["AttentionEdits", "RowEdits"]
