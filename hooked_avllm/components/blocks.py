"""The pre-norm transformer block shared by the LLM and every encoder."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint


class TransformerBlock(nn.Module):
    """``x += attn(ln1(x)); x += mlp(ln2(x))`` with TransformerLens hook names.

    The norms, attention and MLP are passed in, so one class serves the Qwen LLM (RMSNorm,
    gated MLP), the Qwen ViT (RMSNorm, gated MLP with biases) and Whisper-style encoders
    (LayerNorm, plain MLP). Keyword arguments of ``forward`` go to the attention.

    Example:
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
