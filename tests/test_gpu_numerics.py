"""bf16 rounding of our fused fast paths on a GPU, against the reference's formulas (the device
machine runs these; on the CPU they skip). A fused kernel that rounds differently from the
reference costs nothing in float32 tests but multiplies the bf16 error of a deep model."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm.components import RMSNorm
from hooked_avllm.components.rotary import Rotary, rotary_1d

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 kernels of a GPU (run on the device machine)")


def reference_rms_norm(x, weight, eps):
    """Qwen2RMSNorm's arithmetic: statistics in float32, cast back, then the weight."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rms_norm_rounds_as_the_reference(dtype):
    torch.manual_seed(0)
    norm = RMSNorm(2048, eps=1e-6).cuda().to(dtype)
    norm.w.data = torch.randn(2048, device="cuda").to(dtype)
    x = (torch.randn(4, 2841, 2048, device="cuda") * 7).to(dtype)
    got, want = norm(x), reference_rms_norm(x, norm.w, 1e-6)
    differ = (got != want).float().mean().item()
    assert differ < 1e-3, f"{differ:.2%} of the elements round differently from the reference"


@pytest.mark.parametrize("upcast", [False, True])
def test_rotary_rounds_as_the_reference(upcast):
    x = torch.randn(1, 2841, 16, 128, device="cuda").bfloat16()
    plain = rotary_1d(torch.arange(2841, device="cuda")[None], 128, 1e6)
    rotary = Rotary(plain.cos, plain.sin, upcast)
    cos, sin = rotary.cos[:, :, None], rotary.sin[:, :, None]
    if upcast:  # the vision tower's convention: rotate in float32, cast back
        x32 = x.float()
        want = (x32 * cos + torch.cat((-x32[..., 64:], x32[..., :64]), dim=-1) * sin).bfloat16()
    else:
        want = x * cos.bfloat16() + torch.cat((-x[..., 64:], x[..., :64]), dim=-1) * sin.bfloat16()
    assert torch.equal(rotary.apply(x), want)
