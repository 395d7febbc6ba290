"""Transformer blocks: the pre-norm block shared by the LLM and most encoders, and a post-norm
(DeepNorm) block for BEATs-style encoders."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint
from hooked_avllm.components.attention import Attention
from hooked_avllm.components.mlp import PlainMLP
from hooked_avllm.components.norms import LayerNorm


class TransformerBlock(nn.Module):
    """``x += attn(ln1(x)); x += mlp(ln2(x))`` with TransformerLens hook names.

    The norms, attention and MLP are passed in, so one class serves the Qwen LLM (RMSNorm,
    gated MLP), the Qwen ViT (RMSNorm, gated MLP with biases) and Whisper-style encoders
    (LayerNorm, plain MLP). Keyword arguments of ``forward`` go to the attention.

    Example:
        >>> import torch
        >>> from hooked_avllm.components import Attention, GatedMLP, RMSNorm
        >>> block = TransformerBlock(RMSNorm(8), Attention(8, 2), RMSNorm(8), GatedMLP(8, 16))
        >>> block(torch.randn(1, 3, 8), causal=True).shape
        torch.Size([1, 3, 8])
    """

    def __init__(self, ln1: nn.Module, attn: nn.Module, ln2: nn.Module, mlp: nn.Module):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = ln1, attn, ln2, mlp
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, resid: Float[Tensor, "batch pos d_model"], **attn_kwargs) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid), **attn_kwargs)))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


class InjectionBlock(TransformerBlock):
    """A :class:`TransformerBlock` after which the model adds rows to the residual stream
    (Qwen3-Omni's DeepStack): ``hook_injection`` sees what is added, as a residual-shaped tensor
    that is zero off the receiving positions, so patching and ablation can target it. The sum is
    the next block's ``hook_resid_pre``.

    Example:
        >>> from hooked_avllm.components import Attention, GatedMLP, RMSNorm
        >>> block = InjectionBlock(RMSNorm(8), Attention(8, 2), RMSNorm(8), GatedMLP(8, 16))
        >>> hasattr(block, "hook_injection")
        True
    """

    def __init__(self, ln1: nn.Module, attn: nn.Module, ln2: nn.Module, mlp: nn.Module):
        super().__init__(ln1, attn, ln2, mlp)
        self.hook_injection = HookPoint()  # [batch, pos, d_model]: added after the block; zero off the receiving positions


class PostNormBlock(nn.Module):
    """``x = ln1(a * x + attn(x)); x = ln2(a * x + mlp(x))``: post-LN, DeepNorm when the residual
    scale ``a`` exceeds 1 (BEATs: ``a = (2 * n_layers) ** 0.25``), with TransformerBlock's hook names.

    The stream between sublayers is the normalised one, so here ``hook_resid_mid`` is ``ln1``'s
    output (what the MLP reads) and ``hook_resid_post`` is ``ln2``'s output (the block's output and
    the next block's ``hook_resid_pre``); the sums before the norms are ``a * resid_pre +
    attn_out`` and ``a * resid_mid + mlp_out``. Keyword arguments of ``forward`` go to the attention.

    Example:
        >>> import torch
        >>> from hooked_avllm.components import Attention, LayerNorm, PlainMLP
        >>> block = PostNormBlock(Attention(8, 2), LayerNorm(8), PlainMLP(8, 16), LayerNorm(8), residual_scale=2 ** 0.5)
        >>> block(torch.randn(1, 3, 8)).shape
        torch.Size([1, 3, 8])
    """

    def __init__(self, attn: nn.Module, ln1: nn.Module, mlp: nn.Module, ln2: nn.Module, residual_scale: float = 1.0):
        super().__init__()
        self.attn, self.ln1, self.mlp, self.ln2 = attn, ln1, mlp, ln2
        self.residual_scale = residual_scale
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model], after ln1
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model], after ln2

    def forward(self, resid: Float[Tensor, "batch pos d_model"], **attn_kwargs) -> Float[Tensor, "batch pos d_model"]:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(resid, **attn_kwargs))
        resid = self.hook_resid_mid(self.ln1(self.residual_scale * resid + attn_out))
        mlp_out = self.hook_mlp_out(self.mlp(resid))
        return self.hook_resid_post(self.ln2(self.residual_scale * resid + mlp_out))


def encoder_blocks(d_model: int, n_heads: int, d_mlp: int, n_layers: int, act: str = "gelu", eps: float = 1e-5) -> nn.ModuleList:
    """``n_layers`` Whisper-style encoder blocks: pre-LayerNorm, attention with q/k/v and output
    biases, a plain MLP (Whisper, Qwen2.5-Omni's audio tower, Qwen3-Omni's AuT).

    Example:
        >>> len(encoder_blocks(8, 2, 16, n_layers=3))
        3
    """
    return nn.ModuleList(
        TransformerBlock(
            LayerNorm(d_model, eps), Attention(d_model, n_heads, qkv_bias=True, out_bias=True),
            LayerNorm(d_model, eps), PlainMLP(d_model, d_mlp, act=act),
        )
        for _ in range(n_layers)
    )

