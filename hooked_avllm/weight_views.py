"""The LLM's weights as TransformerLens shapes them, stacked over layers.

``model.W_Q`` is ``[layer, head, d_model, d_head]`` (grouped key/value heads expanded to one per
query head), ``model.W_in`` ``[layer, d_model, d_mlp]`` and so on, so code written for a
``HookedTransformer`` reads our weights unchanged. They are views of the unfolded checkpoint
weights: the RMSNorm weights are *not* folded in (``cfg.normalization_type == "RMS"``), except in
:meth:`~hooked_avllm.tokens.TokenMethods.tokens_to_residual_directions`, which folds the final
norm's weight so that direct logit attributions sum to the logits.

Example:
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> model.W_Q.shape, model.W_K.shape, model.W_U.shape
    (torch.Size([2, 4, 64, 16]), torch.Size([2, 4, 64, 16]), torch.Size([64, 256]))
    >>> model.OV.shape
    torch.Size([2, 4, 64, 64])
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix


class WeightViews:
    """Mixin for :class:`~hooked_avllm.HookedAVLLM`: TransformerLens's weight properties."""

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.weight

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.unembed.weight.T

    @property
    def b_U(self) -> Float[Tensor, "d_vocab"]:
        bias = self.unembed.bias
        return bias if bias is not None else self.unembed.weight.new_zeros(self.unembed.weight.shape[0])

    def _stack(self, part: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(block, part), name) for block in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack("mlp", "W_in")

    @property
    def W_gate(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack("mlp", "W_gate")

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stack("mlp", "W_out")

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        return self._stack("mlp", "b_in")

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("mlp", "b_out")

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q @ W_K^T`` per layer and head, ``[layer, head, d_model, d_model]`` (rotary not included)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V @ W_O`` per layer and head, ``[layer, head, d_model, d_model]``."""
        return FactoredMatrix(self.W_V, self.W_O)

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[Tensor, "d_model"]:
        """Sum of the output biases (attention ``b_O``, MLP ``b_out``) written to the residual stream
        before ``layer`` (and that layer's attention if ``mlp_input``); zeros for the Qwen LLMs,
        which have none. TransformerLens's ``get_full_resid_decomposition`` adds it as ``bias``.
        """
        if not 0 <= layer <= self.cfg.n_layers:
            raise ValueError(f"layer must lie in [0, {self.cfg.n_layers}] (n_layers means the unembedding); got {layer}")
        total = self.unembed.weight.new_zeros(self.cfg.d_model)
        for i in range(layer):
            total = total + self.blocks[i].attn.b_O
            if include_mlp_biases:
                total = total + self.blocks[i].mlp.b_out
        if mlp_input:
            if layer == self.cfg.n_layers:
                raise ValueError("mlp_input=True needs a layer below n_layers: the unembedding has no MLP")
            total = total + self.blocks[layer].attn.b_O
        return total

    def all_head_labels(self) -> list[str]:
        """``["L0H0", "L0H1", ...]``, in the order of ``stack_head_results``."""
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]
