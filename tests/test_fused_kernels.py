"""The fused Triton kernels (hooked_avllm/components/fused.py) on the CPU, through Triton's
interpreter: their indexing (strided views of the fused projections, a head width whose half is not
a power of two, angles shared by the batch or per row) and their arithmetic (float16 and float32
bit-identical to PyTorch's kernels). The interpreter rounds bfloat16 by truncation and uses numpy's
``exp``, so there the bf16 and ``silu`` results are checked to one step of the dtype; on a GPU they
are bit-identical (tests/test_gpu_numerics.py). The PyTorch path that the CPU and autograd take is
the reference formula itself (tests/test_rotary_rounding.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hooked_avllm.components import fused
from hooked_avllm.components.rotary import Rotary, rotary_1d

ROOT = Path(__file__).resolve().parents[1]

CHECKS = textwrap.dedent(
    """
    import torch
    from hooked_avllm.components import fused
    from hooked_avllm.components.rotary import Rotary, rotary_1d

    assert fused.INTERPRET and fused.kernels() is not None
    torch.manual_seed(0)
    results = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for upcast in (False, True):
            for d_head, n_heads, per_row in ((128, 3, False), (80, 5, True), (16, 1, False)):
                qkv = (torch.randn(2, 19, 3 * n_heads * d_head) * 4).to(dtype)
                x = qkv[..., : n_heads * d_head].view(2, 19, n_heads, d_head)  # strided: part of the projection
                positions = torch.arange(19)[None] * 5 + (torch.arange(2)[:, None] if per_row else 0)
                plain = rotary_1d(positions, d_head, 1e6)
                rotary = Rotary(plain.cos, plain.sin, upcast)
                cos, signed_sin = rotary._angles(torch.float32 if upcast else dtype)
                got = fused.kernels().rotate(x, cos, signed_sin, upcast)
                with fused.pytorch_kernels_only():
                    want = rotary.apply(x)
                terms = x.float().abs() * cos.float().abs() + fused.swap_halves(x.float()).abs() * signed_sin.float().abs()
                results.append(("rotary", str(dtype), upcast, d_head, got, want, terms))
        for n_cols in (300, 5000):  # one block; several blocks per row
            h = (torch.randn(3, 7, 2 * n_cols) * 4).to(dtype)
            gate, up = h.chunk(2, dim=-1)
            got = fused.kernels().silu_product(gate, up)
            want = torch.nn.functional.silu(gate) * up
            results.append(("silu", str(dtype), None, n_cols, got, want, want.float().abs()))
    torch.save(results, OUT)

    # a gated MLP of unaligned width (the Qwen vision towers' 3,420; here 44) on enough rows: the kernel
    # pads the product, the down projection runs padded; hooks see and edit the unpadded view
    from hooked_avllm.components import GatedMLP
    mlp = GatedMLP(32, 44, bias=True).to(torch.bfloat16)
    x = torch.randn(1, 300, 32).to(torch.bfloat16)
    with torch.no_grad():
        assert fused.aligned_width(torch.zeros(1, 300, 44, dtype=torch.bfloat16)) == 48
        padded = mlp(x)
        with fused.pytorch_kernels_only():
            plain = mlp(x)
        assert padded.shape == plain.shape and padded.dtype == plain.dtype
        assert (padded.float() - plain.float()).abs().max() <= 0.05 * plain.float().abs().max(), "padded MLP"
        seen = []
        mlp.hook_post.add_hook(lambda t, hook: seen.append(t.shape) or t.zero_())  # in place, returns the tensor
        assert torch.equal(mlp(x), mlp.down.bias.expand(1, 300, 32)), "in-place edit of the padded view"
        mlp.hook_post.remove_hooks()
        mlp.hook_post.add_hook(lambda t, hook: torch.ones_like(t))  # a new tensor
        want = torch.nn.functional.linear(torch.ones(1, 300, 44, dtype=torch.bfloat16), mlp.down.weight, mlp.down.bias)
        assert torch.equal(mlp(x), want), "a hook's new tensor"
        mlp.hook_post.remove_hooks()
        assert seen == [torch.Size([1, 300, 44])]
    print("MLP OK")
    """
)


def test_the_kernels_compute_pytorchs_formulas_under_the_interpreter(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "results.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + CHECKS], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "MLP OK" in run.stdout
    results = torch.load(out, weights_only=True)
    assert len(results) == 3 * (2 * 3 + 2)
    for kind, dtype, upcast, size, got, want, scale in results:
        assert got.shape == want.shape and got.dtype == want.dtype
        exact = dtype != "torch.bfloat16" and kind == "rotary"
        if exact:
            assert torch.equal(got, want), (kind, dtype, upcast, size)
        else:  # the interpreter's truncating bf16 cast and numpy's exp: a step or two of the dtype, relative to
            # the terms summed (a rotary sum can cancel)
            assert bool(((got.float() - want.float()).abs() <= 4 * torch.finfo(got.dtype).eps * scale + 1e-30).all()), \
                (kind, dtype, upcast, size)


def test_without_a_gpu_or_with_gradients_the_pytorch_formula_runs():
    """On CPU tensors (no interpreter) and whenever autograd records, the fused functions are the
    PyTorch expressions themselves, so CPU parity and gradients are untouched."""
    x = torch.randn(1, 4, 2, 8, requires_grad=True)
    plain = rotary_1d(torch.arange(4)[None], 8, 1e4)
    rotary = Rotary(plain.cos, plain.sin)
    assert not fused._usable(x.detach())  # CPU, no interpreter
    rotary.apply(x).sum().backward()
    half = x.detach()[..., 4:], x.detach()[..., :4]
    want = x.detach() * plain.cos[:, :, None] + torch.cat((-half[0], half[1]), dim=-1) * plain.sin[:, :, None]
    assert torch.equal(rotary.apply(x.detach()), want)
    assert x.grad is not None


def test_pytorch_kernels_only_restores_the_setting():
    before = fused.ENABLED
    with fused.pytorch_kernels_only():
        assert fused.ENABLED is False
    assert fused.ENABLED is before


def test_a_triton_that_fails_turns_the_kernels_off_with_a_warning(monkeypatch):
    """A Triton too old or too new to compile the kernels: the call still returns PyTorch's values,
    once with a warning, and the kernels stay off for the process."""
    class Broken:
        def rotate(self, *args):
            raise RuntimeError("PassManager::run failed")

        def silu_product(self, *args):
            raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(fused, "INTERPRET", True)
    monkeypatch.setattr(fused, "_kernels", Broken())
    monkeypatch.setattr(fused, "ENABLED", True)
    x = torch.randn(1, 4, 2, 8)
    plain = rotary_1d(torch.arange(4)[None], 8, 1e4)
    rotary = Rotary(plain.cos, plain.sin)
    with pytest.warns(RuntimeWarning, match="fused GPU kernels are off.*PassManager"):
        got = rotary.apply(x)
    assert fused.ENABLED is False
    monkeypatch.setattr(fused, "ENABLED", False)
    assert torch.equal(got, rotary.apply(x))
    monkeypatch.setattr(fused, "ENABLED", True)
    gate, up = torch.randn(2, 6).chunk(2, dim=-1)
    with pytest.warns(RuntimeWarning, match="fused GPU kernels are off"):
        assert torch.equal(fused.gated_product("silu", torch.nn.functional.silu, gate, up), torch.nn.functional.silu(gate) * up)
