"""The LLM's weights as TransformerLens shapes them, stacked over layers.

``model.W_Q`` is ``[layer, head, d_model, d_head]`` (grouped key/value heads expanded to one per
query head), ``model.W_in`` ``[layer, d_model, d_mlp]`` and so on, so code written for a
``HookedTransformer`` reads our weights unchanged. The MLP views (``W_in``, ``W_gate``, ``W_out``,
``b_in``, ``b_out``) exist for dense MLPs only: on a model with mixture-of-experts layers they raise,
naming the per-layer, per-expert weights to read instead (``model.blocks[l].mlp.W_in``...). They are views of the unfolded checkpoint
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

from hooked_avllm.components.moe import SparseMoE

# a dense MLP view -> what to read on a mixture-of-experts layer instead ({l}: that layer)
EXPERT_ACTIVATIONS = ("the activations blocks.{l}.mlp.hook_expert_out (each chosen expert's output, [batch, pos, top_k, "
                      "d_model]; set model.blocks[{l}].mlp.use_expert_outputs = True) and blocks.{l}.hook_mlp_out")
MOE_INSTEAD = {
    "W_in": "model.blocks[{l}].mlp.W_in ([n_experts, d_model, d_expert]) layer by layer",
    "W_gate": "model.blocks[{l}].mlp.W_gate_expert ([n_experts, d_model, d_expert]; its W_gate is the router) layer by layer",
    "W_out": "model.blocks[{l}].mlp.W_out ([n_experts, d_expert, d_model]) layer by layer",
    "b_in": "no bias (the experts have none)",
    "b_out": "no bias (the experts have none)",
}


def moe_layers(model) -> list[int]:
    """The decoder layers whose MLP is a :class:`~hooked_avllm.components.moe.SparseMoE`.

    Example:
        >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
        >>> moe_layers(HookedAVLLM.from_config(AVLLMConfig.tiny()))
        []
    """
    return [l for l, block in enumerate(model.blocks) if isinstance(block.mlp, SparseMoE)]


def refuse_moe(model, what: str, layers=None, instead: str | None = None) -> None:
    """Raise when ``what`` (a dense-MLP view or method) would read a mixture-of-experts layer among
    ``layers`` (default all): such a layer has no ``[d_model, d_mlp]`` neurons, and stacking its
    experts would silently give another shape. The error names what to read instead.

    Example:
        >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
        >>> refuse_moe(HookedAVLLM.from_config(AVLLMConfig.tiny()), "W_in")  # dense layers: nothing to refuse
    """
    hit = [l for l in moe_layers(model) if layers is None or l in layers]
    if not hit:
        return
    l = hit[0]
    other = (instead or MOE_INSTEAD.get(what) or EXPERT_ACTIVATIONS).format(l=l)
    if instead is None and what in MOE_INSTEAD:
        other += "; for what the layer computes, " + EXPERT_ACTIVATIONS.format(l=l)
    raise ValueError(
        f"{what} needs dense MLP layers ([d_model, d_mlp] neurons), but layer(s) {hit} route through a mixture of "
        f"experts (SparseMoE); use {other}"
    )


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
        if part == "mlp":
            refuse_moe(self, name)
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
        which have none (a mixture-of-experts MLP adds none either: its experts have no biases). TransformerLens's ``get_full_resid_decomposition`` adds it as ``bias``.
        """
        if not 0 <= layer <= self.cfg.n_layers:
            raise ValueError(f"layer must lie in [0, {self.cfg.n_layers}] (n_layers means the unembedding); got {layer}")
        total = self.unembed.weight.new_zeros(self.cfg.d_model)
        for i in range(layer):
            total = total + self.blocks[i].attn.b_O
            if include_mlp_biases and not isinstance(self.blocks[i].mlp, SparseMoE):  # experts: no output bias
                total = total + self.blocks[i].mlp.b_out
        if mlp_input:
            if layer == self.cfg.n_layers:
                raise ValueError("mlp_input=True needs a layer below n_layers: the unembedding has no MLP")
            total = total + self.blocks[layer].attn.b_O
        return total

    def all_head_labels(self) -> list[str]:
        """``["L0H0", "L0H1", ...]``, in the order of ``stack_head_results``."""
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]
