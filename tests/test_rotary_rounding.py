"""Rotary application rounds exactly as the reference's formula, for every dtype and both
conventions (the LLM's: angles cast to the activations' dtype; the vision tower's ``upcast``:
rotate in float32, float64 inputs included, and cast back). Our form moves the sign of
``rotate_half`` onto the sine and lets bf16 x float32 products promote instead of copying the
input to float32: fewer passes over q and k, bit-identical results."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm.components.rotary import Rotary, rotary_1d, rotary_axial_2d


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The reference's ``cat(-x2, x1)``."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def reference_formula(rotary: Rotary, x: torch.Tensor) -> torch.Tensor:
    cos, sin = rotary.cos[:, :, None, :], rotary.sin[:, :, None, :]
    if rotary.upcast:
        x32 = x.float()
        return (x32 * cos.float() + rotate_half(x32) * sin.float()).to(x.dtype)
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("upcast", [False, True])
def test_rotary_is_bit_identical_to_the_reference_formula(dtype, upcast):
    torch.manual_seed(0)
    plain = rotary_1d(torch.arange(3000)[None], 80, 1e4)
    rotary = Rotary(plain.cos, plain.sin, upcast)
    x = (torch.randn(1, 3000, 4, 80) * 3).to(dtype)
    got = rotary.apply(x)
    assert got.dtype == dtype and torch.equal(got, reference_formula(rotary, x))
    assert torch.equal(rotary.apply(x), got)  # the cached angles give the same result again


def test_axial_angles_too():
    rotary = rotary_axial_2d(torch.randint(0, 40, (500, 2)), d_head=80, theta=1e4)
    x = torch.randn(1, 500, 16, 80).bfloat16()
    assert torch.equal(rotary.apply(x), reference_formula(rotary, x))
