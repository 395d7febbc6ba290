"""The per-layer additive masks of attention edits (``model.attention_edit_mask``) and the row
blocks of :class:`~hooked_avllm.edits.RowEdits`: layers whose edges differ never share a mask.

The model memoises the mask of the previous layer of a forward when every edit returns the same
edge tensors. It once compared the ids of those tensors without keeping them: an edit that builds
a fresh tensor per layer (``RowEdits`` does) could get the freed tensor's address, and with it the
previous layer's mask (the shared-prefill knockout sweep then decoded some conditions under
another window's mask, depending on the allocator).
"""

from __future__ import annotations

import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.edits import RowEdits
from hooked_avllm.forward_context import ForwardContext


class FreshEdgesPerLayer:
    """Blocks key ``layer`` for every query, as a new tensor on every call."""

    def blocked(self, layer: int, context: ForwardContext) -> torch.Tensor:
        edges = torch.zeros(context.kinds.shape[0], context.n_new, context.kinds.shape[1], dtype=torch.bool)
        edges[..., layer] = True
        return edges


def blocked_keys(mask: torch.Tensor) -> list[int]:
    return torch.isinf(mask[0, 0, -1]).nonzero().flatten().tolist()


def test_layers_with_fresh_edge_tensors_get_their_own_masks():
    model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    context = ForwardContext(torch.zeros(2, 6, dtype=torch.long), past=0, n_new=6, step=0, n_prompt=6)
    for edit in (FreshEdgesPerLayer(), RowEdits([FreshEdgesPerLayer(), None], rows_each=1)):
        with model.edit_attention(edit):
            for _ in range(20):  # freed tensors' addresses come back quickly: give them every chance
                for layer in range(2):
                    mask = model.attention_edit_mask(layer, context, torch.float32)
                    assert blocked_keys(mask) == [layer], (type(edit).__name__, layer)
        model._edit_memo = None


def test_row_edits_reuse_their_rows_only_for_the_same_edges():
    edit = RowEdits([FreshEdgesPerLayer(), None], rows_each=1)
    context = ForwardContext(torch.zeros(1, 4, dtype=torch.long), past=0, n_new=4, step=0, n_prompt=4)
    first, second = edit.blocked(0, context), edit.blocked(1, context)
    assert first[0, 0].nonzero().flatten().tolist() == [0] and second[0, 0].nonzero().flatten().tolist() == [1]
    assert not second[1].any()  # the second block (no edit) blocks nothing
