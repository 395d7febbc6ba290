"""MiniCPM-o 2.6's perceiver resampler against ``ReferenceResampler`` (``minicpm_reference_vision``:
written from the published ``resampler.py``, built from ``torch.nn.MultiheadAttention`` and
``nn.LayerNorm``, sin-cos table in numpy as published).

A tiny random reference is loaded into our resampler only through the weight map. The reference
takes the slices padded ``[slice, max_patch, kv_dim]`` (garbage in the padding, which must be
masked); ours takes them packed ``[1, patch, kv_dim]``. Compared in float32 and float64, for one
and several slices, sides above the released 70 x 70 table included (the reference rebuilds its
table there). In float64 the two float32 sin-cos tables (numpy's float32 pow/sin/cos against ours,
rounded once from float64) differ in their last bits; a second float64 comparison swaps the
reference's table rows into ``hook_pos_embed`` and is then exact to rounding. The released config
checks every ``resampler.*`` tensor against our parameters on the meta device.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from hooked_avllm.towers.resampler import Resampler, ResamplerConfig, sincos_2d_positions
from minicpm_reference_vision import Parts, ReferenceResampler, load_through_map, randomize_, sincos_table_numpy
from weights_conversion.resampler import resampler_targets

MINICPM_O = Path(__file__).resolve().parent / "fixtures" / "hub" / "openbmb__MiniCPM-o-2_6"
TINY = dict(n_queries=6, d_model=32, n_heads=4, kv_dim=24)
FP32_TOL = 1e-5  # absolute; outputs are O(1)
FP64_TOL = 5e-7  # float32 tables on both sides (see the module docstring)
FP64_SAME_TABLE_TOL = 1e-12
CASES = {
    "one_4x4": [(4, 4)],
    "one_odd_3x7": [(3, 7)],
    "several": [(3, 5), (6, 2), (1, 1), (4, 4)],
    "side_over_70": [(72, 2), (3, 4)],
    "wide_2x75": [(2, 75)],
    "full_70x70_and_small": [(70, 70), (9, 11)],
}
ERRORS: dict[str, float] = {}


def reference_fresh(seed: int = 1) -> ReferenceResampler:
    torch.manual_seed(0)
    reference = ReferenceResampler(TINY["n_queries"], TINY["d_model"], TINY["n_heads"], TINY["kv_dim"]).eval()
    randomize_(reference, seed=seed)
    return reference


@pytest.fixture(scope="module")
def pairs():
    """{dtype: (reference, parts)}, the same random weights."""
    reference = reference_fresh()
    cfg = ResamplerConfig(**TINY)
    ours = Resampler(cfg).eval()
    assert load_through_map(ours, reference.state_dict(), lambda name: resampler_targets(name, cfg, prefix="")) == []
    parts = Parts(vision_proj=ours)
    double = (copy.deepcopy(reference).double(), copy.deepcopy(parts).double())
    return {torch.float32: (reference, parts), torch.float64: double}


def inputs(sizes, dtype, seed=0):
    """(packed [1, patch, kv_dim], padded [slice, max_patch, kv_dim] with garbage past each slice, tgt_sizes)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [h * w for h, w in sizes]
    padded = 1e3 * torch.randn(len(sizes), max(lengths), TINY["kv_dim"], generator=generator, dtype=torch.float64)
    rows = []
    for i, n in enumerate(lengths):
        padded[i, :n] = torch.randn(n, TINY["kv_dim"], generator=generator, dtype=torch.float64)
        rows.append(padded[i, :n])
    return torch.cat(rows)[None].to(dtype), padded.to(dtype), torch.tensor(sizes, dtype=torch.int32)


def run_both(reference, parts, sizes, dtype, same_table=False):
    packed, padded, tgt = inputs(sizes, dtype, seed=len(sizes) + sizes[0][0])
    with torch.no_grad():
        expected, weights = reference(padded, tgt, return_weights=True)
        hooks = [("vision_proj.attn.hook_pattern", lambda act, hook: None)]
        if same_table:  # the reference's own table rows in place of ours
            table = torch.cat([reference.pos_embed[:h, :w].reshape(h * w, -1) for h, w in sizes])[None].to(dtype)
            hooks.append(("vision_proj.hook_pos_embed", lambda act, hook: table))
        out, cache = parts.run_with_cache("vision_proj", packed, tgt, names_filter="vision_proj.attn.hook_pattern")
        with parts.hooks(fwd_hooks=hooks):
            explicit = parts.vision_proj(packed, tgt)
        fused = parts.vision_proj(packed, tgt) if not same_table else None
    return expected, weights, out, cache["vision_proj.attn.hook_pattern"], explicit, fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(pairs, case, dtype):
    reference, parts = pairs[dtype]
    sizes = CASES[case]
    expected, weights, out, pattern, explicit, fused = run_both(reference, parts, sizes, dtype)
    tol = FP32_TOL if dtype == torch.float32 else FP64_TOL
    assert out.shape == expected.shape == (len(sizes), TINY["n_queries"], TINY["d_model"])
    error = (out - expected).abs().max().item()
    assert error < tol
    assert (fused - expected).abs().max() < tol  # the fast path (no hook)
    assert (explicit - fused).abs().max() < (FP32_TOL if dtype == torch.float32 else 1e-12)
    longest = max(h * w for h, w in sizes)
    assert pattern.shape == weights.shape == (len(sizes), TINY["n_heads"], TINY["n_queries"], longest)
    assert (pattern - weights).abs().max() < tol
    ERRORS[f"{case} {dtype}"] = error
    print(f"{case} {dtype}: max abs error {error:.3g}")


@pytest.mark.parametrize("case", ["several", "side_over_70"])
def test_matches_reference_fp64_with_its_table(pairs, case):
    reference, parts = pairs[torch.float64]
    expected, weights, _, _, explicit, _ = run_both(reference, parts, CASES[case], torch.float64, same_table=True)
    error = (explicit - expected).abs().max().item()
    print(f"{case} fp64 with the reference's table: max abs error {error:.3g}")
    assert error < FP64_SAME_TABLE_TOL


def test_sincos_table_matches_numpy_at_full_size():
    """Ours (float32 exponent and products, omega and sin/cos rounded once from float64) against the
    published numpy float32 table, 70 x 70 x 3584 and beyond 70; the channel layout (column index in
    the first half) is the published one."""
    ours = sincos_2d_positions(70, 70, 3584).view(70, 70, 3584)
    theirs = torch.from_numpy(sincos_table_numpy(3584, 70, 70))
    error = (ours - theirs).abs().max().item()
    print(f"sin-cos table 70x70x3584: max abs diff {error:.3g}")
    assert error < 2e-5
    small = sincos_2d_positions(75, 3, 16).view(75, 3, 16)
    assert (small - torch.from_numpy(sincos_table_numpy(16, 75, 3))).abs().max() < 1e-6
    assert torch.equal(small[5, 0, 8:], small[5, 2, 8:]) and not torch.equal(small[5, 0, :8], small[5, 2, :8])


def test_hook_shapes(pairs):
    _, parts = pairs[torch.float32]
    sizes = [(3, 5), (2, 2)]
    packed, _, tgt = inputs(sizes, torch.float32)
    parts.vision_proj.attn.use_attn_result = True
    try:
        with torch.no_grad():
            out, cache = parts.run_with_cache("vision_proj", packed, tgt)
            plain = parts.vision_proj(packed, tgt)
    finally:
        parts.vision_proj.attn.use_attn_result = False
    assert (out - plain).abs().max() < 1e-6
    d, q, heads, d_head, n = 32, 6, 4, 8, 19
    expected = {
        "vision_proj.ln_kv.hook_normalized": (1, n, d),
        "vision_proj.hook_kv": (1, n, d),
        "vision_proj.hook_pos_embed": (1, n, d),
        "vision_proj.hook_key": (1, n, d),
        "vision_proj.ln_q.hook_normalized": (q, d),
        "vision_proj.hook_query": (2, q, d),
        "vision_proj.attn.hook_q": (2, q, heads, d_head),
        "vision_proj.attn.hook_k": (2, 15, heads, d_head),
        "vision_proj.attn.hook_v": (2, 15, heads, d_head),
        "vision_proj.attn.hook_attn_scores": (2, heads, q, 15),
        "vision_proj.attn.hook_pattern": (2, heads, q, 15),
        "vision_proj.attn.hook_z": (2, q, heads, d_head),
        "vision_proj.attn.hook_result": (2, q, heads, d),
        "vision_proj.hook_attn_out": (2, q, d),
        "vision_proj.ln_post.hook_normalized": (2, q, d),
        "vision_proj.hook_post": (2, q, d),
        "vision_proj.hook_out": (2, q, d),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert set(parts.hook_dict) == set(cache.keys())  # every hook fires
    pattern = cache["vision_proj.attn.hook_pattern"]
    assert bool((pattern[1, :, :, 4:] == 0).all()) and (pattern.sum(-1) - 1).abs().max() < 1e-6
    key = cache["vision_proj.hook_kv"] + cache["vision_proj.hook_pos_embed"]
    assert torch.equal(cache["vision_proj.hook_key"], key)


def test_errors_name_the_problem(pairs):
    _, parts = pairs[torch.float32]
    packed, _, tgt = inputs([(3, 5), (2, 2)], torch.float32)
    with pytest.raises(ValueError, match=r"hold 19 patch rows but tgt_sizes \[\(3, 5\), \(2, 3\)\] imply 21"):
        parts.vision_proj(packed, torch.tensor([[3, 5], [2, 3]]))
    with pytest.raises(ValueError, match=r"packed rows \[1, n_patches, 24\]"):
        parts.vision_proj(packed[0], tgt)


# ----------------------------------------------------------------------------- config and released names


def test_config_from_released_json():
    config = json.loads((MINICPM_O / "config.json").read_text())
    cfg = ResamplerConfig.from_hf(config)
    assert cfg == ResamplerConfig()
    assert (cfg.n_queries, cfg.d_model, cfg.n_heads, cfg.d_head) == (64, 3584, 28, 128)
    assert (cfg.kv_dim, cfg.layer_norm_eps) == (1152, 1e-6)


def test_released_names_at_full_size():
    """Every ``resampler.*`` tensor of the released shapes lands on a parameter of its shape; every
    parameter is written once; ``pos_embed`` (not in the checkpoint) would be skipped."""
    config = json.loads((MINICPM_O / "config.json").read_text())
    cfg = ResamplerConfig.from_hf(config)
    with torch.device("meta"):
        reference = ReferenceResampler(64, 3584, 28, 1152)
        ours = Resampler(cfg)
    state = reference.state_dict()
    assert "pos_embed" not in state  # non-persistent, as released
    assert len(state) == 13 and sum(t.numel() for t in state.values()) == 68_619_264
    params = dict(ours.named_parameters())
    assert sum(p.numel() for p in params.values()) == 68_619_264
    written = dict.fromkeys(params, 0)
    for name, tensor in state.items():
        targets = resampler_targets(name, cfg)
        assert targets and len(targets) == 1 and targets[0].rows is None and targets[0].shape is None, name
        key = targets[0].param.removeprefix("vision_proj.")
        assert tuple(params[key].shape) == tuple(tensor.shape), name
        written[key] += 1
    assert all(count == 1 for count in written.values())
    assert resampler_targets("pos_embed", cfg) == []
    assert resampler_targets("attn.q_proj_weight", cfg) is None
    no_kv = ResamplerConfig(d_model=1152, n_heads=9, kv_dim=1152)  # the released module then has kv_proj = Identity
    assert resampler_targets("kv_proj.weight", no_kv) is None and not hasattr(Resampler(no_kv).kv_proj, "weight")
