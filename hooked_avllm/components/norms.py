"""RMSNorm and LayerNorm with TransformerLens-style hooks.

RMSNorm computes its statistics in float32 (float64 stays float64) and casts back before the
weight is applied, exactly as the Qwen reference does, so bf16 runs round the same way.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
import torch.nn.functional as F
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
        if not watched(self.hook_scale):
            # One fused kernel: x * rsqrt(mean(x**2) + eps) with float32 statistics (fp64 stays fp64),
            # cast back to x's dtype, then the weight, as the reference rounds (bit-identical on the
            # CPU; on an H100 1.2e-6 of bf16 elements differ by one step: tests/test_gpu_numerics.py).
            return self.hook_normalized(self.w * F.rms_norm(x, (x.shape[-1],), eps=self.eps))
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
        mean_square = x32.pow(2).mean(-1, keepdim=True)
        normalized = x32 / self.hook_scale((mean_square + self.eps).sqrt())
        return self.hook_normalized(self.w * normalized.to(x.dtype))


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


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a channels-first map ``[N, C, H, W]`` (timm's ``LayerNorm2d``):
    every pixel is normalised across its ``C`` channels, then scaled and shifted per channel.

    timm's default ``eps`` is 1e-6, but timm's RegNet stages swap ``LayerNorm2d`` for
    ``LayerNormAct2d``, whose default is 1e-5: the STC connector passes 1e-5 explicitly.

    Example:
        >>> LayerNorm2d(8)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(channels))
        self.b = nn.Parameter(torch.zeros(channels))
        self.hook_scale = HookPoint()  # [N, 1, H, W]: sqrt(var over channels + eps), float32
        self.hook_normalized = HookPoint()  # [N, C, H, W]

    def forward(self, x: Float[Tensor, "N C H W"]) -> Float[Tensor, "N C H W"]:
        if not (watched(self.hook_scale) or watched(self.hook_normalized)):
            # Fast path: the fused kernel on a channels-last view, exactly as timm computes it.
            channels_last = x.permute(0, 2, 3, 1)
            return nn.functional.layer_norm(channels_last, (x.shape[1],), self.w, self.b, self.eps).permute(0, 3, 1, 2)
        # statistics in float32 (float64 stays float64), as the fused kernel computes them for bf16
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        centered = x32 - x32.mean(1, keepdim=True)
        scale = self.hook_scale((centered.pow(2).mean(1, keepdim=True) + self.eps).sqrt())
        out = centered / scale * self.w[:, None, None] + self.b[:, None, None]
        return self.hook_normalized(out.to(x.dtype))
