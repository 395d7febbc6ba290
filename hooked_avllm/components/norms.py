"""RMSNorm and LayerNorm with TransformerLens-style hooks.

RMSNorm computes its statistics in float32 (float64 stays float64) and casts back before the
weight is applied, exactly as the Qwen reference does, so bf16 runs round the same way.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.hook_state import watched


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x**2) + eps)``.

    Example:
        >>> norm = RMSNorm(8)
        >>> norm(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.hook_scale = HookPoint()  # [..., pos, 1]: sqrt(mean(x**2) + eps), float32
        self.hook_normalized = HookPoint()  # [..., pos, d_model]

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        in_dtype = x.dtype
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
        mean_square = x32.pow(2).mean(-1, keepdim=True)
        if watched(self.hook_scale):
            normalized = x32 / self.hook_scale((mean_square + self.eps).sqrt())
        else:  # the reference's rounding: multiply by rsqrt
            normalized = x32 * torch.rsqrt(mean_square + self.eps)
        return self.hook_normalized(self.w * normalized.to(in_dtype))


class LayerNorm(nn.Module):
    """Standard LayerNorm with weight and bias (Whisper-style encoders).

    Example:
        >>> LayerNorm(8)(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # [..., pos, 1]: sqrt(var(x) + eps)
        self.hook_normalized = HookPoint()  # [..., pos, d_model]

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if not (watched(self.hook_scale) or watched(self.hook_normalized)):
            # Fast path: the fused kernel, identical to the reference's nn.LayerNorm.
            return nn.functional.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        centered = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((centered.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(centered / scale * self.w + self.b)
