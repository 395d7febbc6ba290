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

import numbers
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

from hooked_avllm.analysis.arguments import check_modality_present, model_depth
from hooked_avllm.analysis.knockout import _codes
from hooked_avllm.forward_context import ForwardContext


class DropTokens:
    """An attention edit: tokens of ``kinds`` stop being read after ``after_layer``.

    ``after_layer=-1`` drops them from the start (they are seen by no layer); the last useful
    value is the second-to-last layer (dropping after the last layer changes nothing). Here -1 is
    "before layer 0", not "the last layer": ``after_layer`` is checked against the model's depth
    when the edit meets the model (:meth:`bind`, done by :func:`drop_tokens`) and must lie in
    ``-1 .. n_layers - 2``. With ``check_inputs`` the first forward of each input checks that it
    holds the dropped media kind: none at all raises, rows without it are named in an
    :class:`~hooked_avllm.analysis.arguments.AnalysisWarning`.

    Example:
        >>> DropTokens("audio", after_layer=10).first_layer
        11
    """

    decode_invariant = True  # the dropped keys depend only on their kinds: captured decoding computes them once

    def __init__(self, kinds: str | Sequence[str], after_layer: int, check_inputs: bool = True):
        self.codes = _codes(kinds)
        self.kinds = kinds
        if isinstance(after_layer, bool) or not isinstance(after_layer, numbers.Integral):
            raise TypeError(f"drop_tokens: after_layer={after_layer!r} is the int index of the last layer that still "
                            f"reads the tokens (-1: none does), not a {type(after_layer).__name__}")
        self.after_layer = int(after_layer)
        self.check_inputs = check_inputs
        self._checked: Any = None  # the forward context whose inputs were last checked
        self._memo: tuple[Any, Tensor] | None = None  # (forward context, edges): the same in every later layer

    @property
    def first_layer(self) -> int:
        return self.after_layer + 1

    def bind(self, model: Any) -> "DropTokens":
        """Check ``after_layer`` against ``model``'s depth (``-1 .. n_layers - 2``); returns self."""
        n_layers = model_depth(model)
        if not -1 <= self.after_layer <= n_layers - 2:
            raise ValueError(
                f"drop_tokens: after_layer={self.after_layer} is out of range for this {n_layers}-layer model: pass "
                f"-1 (drop before layer 0) up to {n_layers - 2} (the last layer {n_layers - 1} reads them last); "
                "after_layer is the last layer that still reads the tokens, and -1 does not count from the end here"
            )
        return self

    def check_modalities(self, source: Any, **names: Any) -> None:
        """Raise or warn when the inputs lack the dropped media kind (see the class docstring)."""
        check_modality_present(source, self.kinds, "drop_tokens", "kinds", **names)

    def blocked(self, layer: int, context: ForwardContext) -> Bool[Tensor, "batch query key"] | None:
        if self.check_inputs and context.step == 0 and self._checked is not context:
            self._checked = context  # once per forward: a generation's prefill, or a plain forward
            self.check_modalities(context.kinds)
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
    """Drop the tokens of ``kinds`` after ``after_layer`` for every forward/generation inside the block.

    ``after_layer`` is checked against the model's depth on entry (``-1 .. n_layers - 2``); each
    forward checks that its inputs hold the dropped media kind (see :class:`DropTokens`).

    Example:
        >>> with drop_tokens(model, "video", after_layer=20):  # doctest: +SKIP
        ...     tokens = model.generate(inputs, max_new_tokens=50)
    """
    edit = DropTokens(kinds, after_layer).bind(model)
    with model.edit_attention(edit):
        yield edit
