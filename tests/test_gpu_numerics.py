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


# The fused Triton kernels (hooked_avllm/components/fused.py) against PyTorch's separate kernels:
# bit-identical, in every dtype, on strided views as the fused projections hand them over.

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("upcast", [False, True])
@pytest.mark.parametrize("d_head", [128, 80])  # the LLM's heads; the Qwen vision tower's (half width 40)
def test_fused_rotary_is_bit_identical(dtype, upcast, d_head):
    from hooked_avllm.components import fused

    torch.manual_seed(0)
    n_heads, n_pos = 16, 1031
    qkv = (torch.randn(2, n_pos, 3 * n_heads * d_head, device="cuda") * 5).to(dtype)
    x = qkv[..., : n_heads * d_head].view(2, n_pos, n_heads, d_head)  # a strided view
    plain = rotary_1d(torch.arange(n_pos, device="cuda")[None].expand(2, -1) * 3, d_head, 1e6)
    rotary = Rotary(plain.cos, plain.sin, upcast)
    got = rotary.apply(x)
    with fused.pytorch_kernels_only():
        want = rotary.apply(x)
    assert fused.kernels() is not None
    assert torch.equal(got, want), f"{(got != want).float().mean().item():.2e} of the elements differ"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_silu_product_is_bit_identical(dtype):
    from hooked_avllm.components import fused

    torch.manual_seed(0)
    h = (torch.randn(3, 997, 2 * 3420, device="cuda") * 6).to(dtype)
    gate, up = h.chunk(2, dim=-1)  # strided halves, as GatedMLP's fused projection gives them
    got = fused.gated_product("silu", torch.nn.functional.silu, gate, up)
    want = torch.nn.functional.silu(gate) * up
    assert torch.equal(got, want), f"{(got != want).float().mean().item():.2e} of the elements differ"


def test_fused_kernels_leave_a_model_bit_identical_and_gradients_on_pytorch(family):
    """A whole tiny model's forward (towers and LLM, bf16, a clip with audio and video) is
    bit-identical with and without the fused kernels; a forward that records gradients takes
    PyTorch's path."""
    from hooked_avllm.components import fused

    model = family.model(seed=0).cuda().to(torch.bfloat16)
    batch = family.batch(model, [family.clip(model, seconds=2, seed=1)]).to("cuda")
    with torch.no_grad():
        got = model(batch)
        with fused.pytorch_kernels_only():
            want = model(batch)
    assert torch.equal(got, want)
    x = torch.randn(1, 5, 2, 8, device="cuda", requires_grad=True)
    plain = rotary_1d(torch.arange(5, device="cuda")[None], 8, 1e4)
    Rotary(plain.cos, plain.sin).apply(x).sum().backward()
    assert x.grad is not None


def test_padded_down_projection_is_as_accurate_as_the_unpadded_one():
    """The Qwen vision MLP (1280 -> 3420 -> 1280, bf16, a 10-s clip's 10,240 patches): with the
    product zero-padded to 3,424 columns the down projection runs on aligned kernels; its error
    against float32 is that of the unpadded projection (the same sum, another kernel)."""
    from hooked_avllm.components import GatedMLP, fused

    torch.manual_seed(0)
    mlp = GatedMLP(1280, 3420, bias=True).cuda()
    x = torch.randn(1, 10240, 1280, device="cuda")
    with torch.no_grad():
        truth = mlp(x)  # float32 (no padding: float32 is aligned enough)
        half = mlp.to(torch.bfloat16)
        assert fused.aligned_width(torch.zeros(1, 10240, 3420, device="cuda", dtype=torch.bfloat16)) == 3424
        padded = half(x.bfloat16()).float()
        with fused.pytorch_kernels_only():
            plain = half(x.bfloat16()).float()
    err_padded, err_plain = (padded - truth).abs().mean(), (plain - truth).abs().mean()
    assert err_padded <= 1.05 * err_plain, (err_padded, err_plain)


def test_omni_towers_queued_or_threaded_are_bit_identical_to_serial():
    """Qwen2.5-Omni's vision tower queued before the audio tower (the default), or the audio tower
    on its own CUDA stream in a second thread, gives the logits of the towers one after the other;
    a hook on a tower takes the serial path and sees its activation."""
    from kits import kit_named

    from hooked_avllm.components import tower_overlap

    family = kit_named("qwen2_5_omni")
    model = family.model(seed=0).cuda().to(torch.bfloat16)
    batch = family.batch(model, [family.clip(model, seconds=2, seed=1), family.clip(model, seconds=3, seed=2)]).to("cuda")
    previous, out = tower_overlap.MODE, {}
    try:
        with torch.no_grad():
            for mode in tower_overlap.MODES:
                tower_overlap.MODE = mode
                out[mode] = model(batch)
            seen = []
            model.audio.blocks[0].hook_resid_post.add_hook(lambda x, hook: seen.append(x.shape) or x)
            tower_overlap.MODE = "queued"
            hooked = model(batch)
    finally:
        tower_overlap.MODE = previous
        model.reset_hooks()
    assert torch.equal(out["queued"], out["serial"]) and torch.equal(out["thread"], out["serial"])
    assert torch.equal(hooked, out["serial"]) and len(seen) == 1


def test_the_towers_never_wait_for_the_gpu_once_their_grids_and_lengths_are_on_the_host():
    """The queued order only overlaps if neither tower makes the host wait: with the video grid and
    the mel lengths on the host (as the Qwen2.5-Omni family passes them), the vision and audio
    towers of a bf16 model queue all their kernels without one host synchronisation."""
    from kits import kit_named

    family = kit_named("qwen2_5_omni")
    model = family.model(seed=0).cuda().to(torch.bfloat16)
    pixels = torch.randn(3 * 16, model.cfg.vision.patch_dim, device="cuda")
    grid = torch.tensor([[3, 4, 4]])
    features = torch.randn(2, model.cfg.audio.n_mels, 700, device="cuda")
    lengths = torch.tensor([700, 431])
    with torch.no_grad():
        model.vision(pixels, grid), model.audio(features, lengths)  # first calls: kernels compiled, tables built
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model.vision(pixels, grid)
            model.audio(features, lengths)
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_the_vision_tower_in_window_order_is_bit_identical_on_a_gpu():
    """bf16 on a GPU: the Qwen vision tower's blocks in window order (nothing watches them) give the
    rows of the processor's order (a hook on a block), for full and partial windows."""
    from hooked_avllm.towers.qwen_vision import QwenVisionConfig, QwenVisionTower

    torch.manual_seed(0)
    cfg = QwenVisionConfig(depth=4, d_model=1280, d_mlp=3420, n_heads=16, out_dim=2048, fullatt_block_indexes=(1, 3))
    tower = QwenVisionTower(cfg).cuda().to(torch.bfloat16).eval()
    for grid in ([[4, 32, 32]], [[2, 28, 36]]):
        grid = torch.tensor(grid)
        pixels = torch.randn(int(grid.prod(-1).sum()), cfg.patch_dim, device="cuda")
        with torch.no_grad():
            fast = tower(pixels, grid)
            tower.blocks[0].hook_resid_post.add_hook(lambda x, hook: x)
            try:
                watched = tower(pixels, grid)
            finally:
                tower.blocks[0].hook_resid_post.remove_hooks()
        assert torch.equal(fast, watched), grid.tolist()
