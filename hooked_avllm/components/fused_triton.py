"""The Triton kernels behind :mod:`hooked_avllm.components.fused` (imported on first use, on a GPU).

Both compute in float32 with the roundings of PyTorch's separate kernels: launched without
floating-point contraction, with libdevice's correctly rounded ``expf`` and IEEE division.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (the CPU tests of the kernels)

try:  # libdevice's expf is what CUDA's expf (PyTorch's silu) compiles to; div_rn is IEEE division
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - older Triton
    libdevice = None


@triton.jit
def _rotate_kernel(
    x_ptr, cos_ptr, sin_ptr, out_ptr,  # sin: signed (first half negated)
    n_pos, n_heads, x_sb, x_sp, x_sh, c_sb, c_sp,
    HALF: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, UPCAST: tl.constexpr,
):
    row = tl.program_id(0)  # one (batch, position)
    b = row // n_pos
    p = row % n_pos
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    in_d = d < HALF
    keep = (heads < n_heads)[:, None] & in_d[None, :]
    x_at = x_ptr + b * x_sb + p * x_sp + heads[:, None] * x_sh + d[None, :]
    x1 = tl.load(x_at, mask=keep, other=0.0)
    x2 = tl.load(x_at + HALF, mask=keep, other=0.0)
    a_at = b * c_sb + p * c_sp + d
    c1 = tl.load(cos_ptr + a_at, mask=in_d, other=0.0)[None, :].to(tl.float32)
    c2 = tl.load(cos_ptr + a_at + HALF, mask=in_d, other=0.0)[None, :].to(tl.float32)
    s1 = tl.load(sin_ptr + a_at, mask=in_d, other=0.0)[None, :].to(tl.float32)
    s2 = tl.load(sin_ptr + a_at + HALF, mask=in_d, other=0.0)[None, :].to(tl.float32)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    if UPCAST:  # float32 products and sum, one rounding to x's dtype at the end
        o1 = x1f * c1 + x2f * s1
        o2 = x2f * c2 + x1f * s2
    else:  # each product rounded to x's dtype, then the sum in float32 rounded again (PyTorch's kernels)
        o1 = (x1f * c1).to(x1.dtype).to(tl.float32) + (x2f * s1).to(x1.dtype).to(tl.float32)
        o2 = (x2f * c2).to(x1.dtype).to(tl.float32) + (x1f * s2).to(x1.dtype).to(tl.float32)
    out_at = out_ptr + row * n_heads * 2 * HALF + heads[:, None] * 2 * HALF + d[None, :]
    tl.store(out_at, o1.to(out_ptr.dtype.element_ty), mask=keep)
    tl.store(out_at + HALF, o2.to(out_ptr.dtype.element_ty), mask=keep)

@triton.jit
def _silu_product_kernel(gate_ptr, up_ptr, out_ptr, n_cols, n_out, g_row, u_row, BLOCK: tl.constexpr,
                         EXACT: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = cols < n_cols  # columns n_cols..n_out (the padding) get silu(0) * 0 = 0
    g = tl.load(gate_ptr + row * g_row + cols, mask=keep, other=0.0)
    u = tl.load(up_ptr + row * u_row + cols, mask=keep, other=0.0)
    g32 = g.to(tl.float32)
    # PyTorch's silu: x / (1 + exp(-x)) in float32, rounded to its dtype; then the product, rounded
    if EXACT:
        act = libdevice.div_rn(g32, 1.0 + libdevice.exp(-g32))
    else:  # Triton's interpreter (CPU tests): numpy's exp and division
        act = g32 / (1.0 + tl.exp(-g32))
    out = (act.to(g.dtype).to(tl.float32) * u.to(tl.float32)).to(g.dtype)
    tl.store(out_ptr + row * n_out + cols, out, mask=cols < n_out)


def _launch_options() -> dict:
    return {} if INTERPRET else {"enable_fp_fusion": False}  # no a * b + c contracted into one rounding


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def rotate(x: Tensor, cos: Tensor, sin: Tensor, upcast: bool) -> Tensor:
    """:func:`fused.rotate` in one kernel (``sin`` signed); ``x`` may be a strided view."""
    batch, n_pos, n_heads, d_head = x.shape
    cos = cos.reshape(cos.shape[0], cos.shape[1], d_head)
    sin = sin.reshape(sin.shape[0], sin.shape[1], d_head)
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    half = d_head // 2
    block_d = triton.next_power_of_2(half)
    block_h = min(triton.next_power_of_2(n_heads), max(1, 1024 // block_d))
    grid = (batch * n_pos, triton.cdiv(n_heads, block_h))
    batch_stride = 0 if cos.shape[0] == 1 else cos.stride(0)
    with _on(x.device):
        _rotate_kernel[grid](
            x, cos, sin, out, n_pos, n_heads, x.stride(0), x.stride(1), x.stride(2), batch_stride, cos.stride(1),
            HALF=half, BLOCK_D=block_d, BLOCK_H=block_h, UPCAST=upcast, **_launch_options(),
        )
    return out


def silu_product(gate: Tensor, up: Tensor, width: int | None = None) -> Tensor:
    """``silu(gate) * up`` in one kernel; ``gate`` and ``up`` may be strided views. ``width``
    (at least the input's) pads the result's last axis with zeros."""
    n_cols = gate.shape[-1]
    width = width or n_cols
    try:  # [rows, cols] views with unit column stride, without copying
        g2, u2 = gate.view(-1, n_cols), up.view(-1, n_cols)
    except RuntimeError:
        return F.pad(F.silu(gate) * up, (0, width - n_cols))
    out = torch.empty((*gate.shape[:-1], width), dtype=gate.dtype, device=gate.device)
    block = min(2048, triton.next_power_of_2(width))
    grid = (g2.shape[0], triton.cdiv(width, block))
    exact = not INTERPRET and libdevice is not None
    with _on(gate.device):
        _silu_product_kernel[grid](g2, u2, out, n_cols, width, g2.stride(0), u2.stride(0), BLOCK=block, EXACT=exact,
                                   **_launch_options())
    return out
