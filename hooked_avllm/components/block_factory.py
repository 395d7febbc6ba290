"""The decoder factory: the text config chooses every decoder block and its rotary, so a family
declares a config, not a block class (TransformerLens's ``factories/mlp_factory.py`` idea, for
whole blocks).

- MLP: a gated MLP, or a sparse mixture of experts in the layers the config routes
  (``n_experts > 0``, ``is_moe_layer``).
- Attention: grouped-query attention with q/k/v biases as configured, per-head q/k RMSNorm when
  ``qk_norm``.
- Block: the pre-norm :class:`TransformerBlock`, or an :class:`InjectionBlock` (with
  ``hook_injection``) after which the model adds rows to the residual stream.
- Rotary: 1D over one position row, sectioned M-RoPE over three rows, or interleaved M-RoPE.

Components sit below the configs, so the factory reads any object with the
:class:`DecoderShape` fields (``hooked_avllm.config.TextConfig`` is one).

Example:
    >>> from hooked_avllm.config import TextConfig
    >>> text = TextConfig(vocab_size=256, d_model=64, d_mlp=128, n_layers=2, n_heads=4, n_kv_heads=2, d_head=16)
    >>> type(decoder_block(text, 0)).__name__, type(decoder_block(text, 0, receives_injection=True)).__name__
    ('TransformerBlock', 'InjectionBlock')
"""

from __future__ import annotations

from typing import Protocol

from jaxtyping import Float
from torch import Tensor, nn

from hooked_avllm.components.attention import Attention
from hooked_avllm.components.blocks import InjectionBlock, TransformerBlock
from hooked_avllm.components.mlp import GatedMLP
from hooked_avllm.components.moe import SparseMoE
from hooked_avllm.components.norms import RMSNorm
from hooked_avllm.components.rotary import Rotary, rotary_1d, rotary_mrope, rotary_mrope_interleaved


class DecoderShape(Protocol):
    """The decoder fields the factory reads (see ``hooked_avllm.config.TextConfig``)."""

    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    rope_theta: float
    mrope_section: tuple[int, ...] | None
    mrope_interleaved: bool
    rms_norm_eps: float
    act: str
    qkv_bias: bool
    qk_norm: bool
    n_experts: int
    d_expert: int
    top_k: int
    norm_topk_prob: bool

    def is_moe_layer(self, layer: int) -> bool: ...


def decoder_mlp(text: DecoderShape, layer: int) -> nn.Module:
    """Layer ``layer``'s MLP: a mixture of experts where the config routes, else a gated MLP."""
    if text.is_moe_layer(layer):
        return SparseMoE(text.d_model, text.d_expert, text.n_experts, text.top_k,
                         norm_topk_prob=text.norm_topk_prob, act=text.act)
    return GatedMLP(text.d_model, text.d_mlp, act=text.act)


def decoder_block(text: DecoderShape, layer: int, receives_injection: bool = False) -> nn.Module:
    """Decoder layer ``layer``: RMSNorm pre-norm attention and MLP (see the module docstring)."""
    attn = Attention(text.d_model, text.n_heads, text.n_kv_heads, text.d_head, qkv_bias=text.qkv_bias, out_bias=False,
                     qk_norm_eps=text.rms_norm_eps if text.qk_norm else None)
    block = InjectionBlock if receives_injection else TransformerBlock
    return block(RMSNorm(text.d_model, text.rms_norm_eps), attn, RMSNorm(text.d_model, text.rms_norm_eps),
                 decoder_mlp(text, layer))


def decoder_rotary(text: DecoderShape, position_ids: Float[Tensor, "rows batch pos"]) -> Rotary:
    """The decoder's rotary angles for ``position_ids`` (1 row for 1D rotary, 3 for M-RoPE)."""
    if text.mrope_section is None:
        return rotary_1d(position_ids[0], text.d_head, text.rope_theta)
    if text.mrope_interleaved:
        if position_ids.shape[0] == 1:
            position_ids = position_ids.expand(3, -1, -1)
        return rotary_mrope_interleaved(position_ids, text.d_head, text.rope_theta, text.mrope_section)
    return rotary_mrope(position_ids, text.d_head, text.rope_theta, text.mrope_section)
