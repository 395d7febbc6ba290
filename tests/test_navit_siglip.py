"""MiniCPM-o 2.6's navit SigLIP tower (``vpm``) against transformers' ``Idefics2VisionTransformer``
(``minicpm_reference_vision``), and its position ids against MiniCPM's published bucketing rule.

A tiny random reference (position grid 70 as released, patch size 2 so that sides above 70 stay
small) is loaded into our tower only through the weight map. Each slice goes through the reference
alone as ``[1, 3, H, W]``; ours takes all slices packed. Slices whose sides bucket identically under
both rules are compared as they are; for a side where transformers 5.x's Idefics2 gives other
position ids (49, 58, ...) the reference's ids are replaced by MiniCPM's (a forward pre-hook on its
``embeddings.position_embedding``). The released config checks every ``vpm.*`` tensor against our
parameters on the meta device.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from hooked_avllm.towers.navit_siglip import (
    NavitSiglipConfig,
    NavitSiglipTower,
    navit_position_ids,
    patch_rows,
    patch_rows_from_strip,
)
from minicpm_reference_vision import (
    Parts,
    idefics2_bucket_ids,
    idefics2_vision_reference,
    load_through_map,
    minicpm_bucket_ids,
    randomize_,
    reshape_by_patch,
    run_idefics2_slices,
)
from torch_threads import torch_threads
from weights_conversion.navit_siglip import navit_siglip_targets

MINICPM_O = Path(__file__).resolve().parent / "fixtures" / "hub" / "openbmb__MiniCPM-o-2_6"
PATCH = 2
TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, image_size=70 * PATCH,
            patch_size=PATCH)
FP32_TOL = 1e-5  # absolute; every stage is O(1)
FP64_TOL = 1e-10
# sides (in patches) where transformers 5.x's Idefics2 position ids differ from MiniCPM's rule, 1..140, CPU
IDEFICS2_5X_DIFFERS = [49, 58, 77, 86, 98, 100, 110, 122, 135]

CASES = {  # slices as (h, w) patch grids; every side buckets identically in Idefics2 5.x and MiniCPM
    "square_8x8": [(8, 8)],
    "nonsquare_5x12": [(5, 12)],
    "odd_7x3": [(7, 3)],
    "one_patch": [(1, 1)],
    "over_70_72x3": [(72, 3)],
    "packed_five": [(8, 8), (5, 12), (1, 1), (3, 71), (13, 9)],
}
DIFFERING = {  # a side where the rules differ: compared against the reference with MiniCPM's ids
    "side_49": [(49, 2)],
    "side_58_packed": [(3, 58), (4, 4), (77, 1)],
}
ERRORS: dict[str, float] = {}


def slices_of(sizes, dtype=torch.float32, seed=0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h * PATCH, w * PATCH, generator=generator, dtype=torch.float64).mul(2).sub(1).to(dtype)
            for h, w in sizes]


def packed(slices) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.cat([patch_rows(s, PATCH) for s in slices])
    sizes = torch.tensor([[s.shape[1] // PATCH, s.shape[2] // PATCH] for s in slices], dtype=torch.int32)
    return rows, sizes


@pytest.fixture(scope="module")
def pairs():
    """{dtype: (reference, parts)} with the same random weights; float64 runs the reference's SDPA
    (its eager path casts the softmax through float32)."""
    torch.manual_seed(0)
    reference = idefics2_vision_reference(TINY, "eager")
    randomize_(reference, seed=1)
    cfg = NavitSiglipConfig.from_hf(TINY)
    tower = NavitSiglipTower(cfg).eval()
    skipped = load_through_map(tower, reference.state_dict(), lambda name: navit_siglip_targets(name, cfg, prefix=""))
    assert skipped == []
    reference64 = idefics2_vision_reference(TINY, "sdpa")
    reference64.load_state_dict(reference.state_dict())
    parts = Parts(vision=tower)
    return {torch.float32: (reference, parts), torch.float64: (reference64.double(), copy.deepcopy(parts).double())}


def compare(reference, parts, sizes, dtype, position_rule="idefics2") -> float:
    slices = slices_of(sizes, dtype, seed=sum(h * w for h, w in sizes))
    theirs, states = run_idefics2_slices(reference, slices, position_rule, hidden_states=True)
    rows, tgt = packed(slices)
    names = ["vision.hook_embed", *[f"vision.blocks.{i}.hook_resid_post" for i in range(TINY["num_hidden_layers"])]]
    with torch.no_grad():
        out, cache = parts.run_with_cache("vision", rows, tgt, names_filter=names)
    n = sum(h * w for h, w in sizes)
    assert out.shape == theirs.shape == (1, n, TINY["hidden_size"])
    worst = 0.0
    for (stage, ours), expected in zip([*((k, cache[k]) for k in names), ("out", out)], [*states, theirs]):
        error = (ours - expected).abs().max().item()
        worst = max(worst, error)
        assert error < (FP32_TOL if dtype == torch.float32 else FP64_TOL), f"{stage}: {error:.3g}"
    return worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_idefics2(pairs, case, dtype):
    reference, parts = pairs[dtype]
    assert not {s for size in CASES[case] for s in size} & set(IDEFICS2_5X_DIFFERS)
    error = compare(reference, parts, CASES[case], dtype)
    ERRORS[f"{case} {dtype}"] = error
    print(f"{case} {dtype}: max abs error {error:.3g}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(DIFFERING))
def test_matches_idefics2_with_minicpm_ids_on_differing_sides(pairs, case, dtype):
    reference, parts = pairs[dtype]
    error = compare(reference, parts, DIFFERING[case], dtype, position_rule="minicpm")
    ERRORS[f"{case} {dtype}"] = error
    print(f"{case} {dtype}: max abs error {error:.3g}")
    # and the override matters: with its own ids, the reference disagrees with MiniCPM's tower
    slices = slices_of(DIFFERING[case], dtype)
    with torch.no_grad():
        ours = parts.vision(*packed(slices))
    assert (ours - run_idefics2_slices(reference, slices)).abs().max() > 1e-3


def test_explicit_pattern_matches_fused_and_reference(pairs):
    reference, parts = pairs[torch.float32]
    sizes = [(3, 4), (5, 5), (1, 2)]
    slices = slices_of(sizes)
    rows, tgt = packed(slices)
    # the 1e-6 below holds for two threads' blocking of the fused kernel (one thread: 1.1e-6)
    with torch_threads(2), torch.no_grad():
        fused = parts.vision(rows, tgt)
        explicit, cache = parts.run_with_cache("vision", rows, tgt, names_filter=lambda n: n.endswith("hook_pattern"))
    assert (explicit - fused).abs().max() < 1e-6
    assert (fused - run_idefics2_slices(reference, slices)).abs().max() < FP32_TOL
    pattern = cache["vision.blocks.1.attn.hook_pattern"]  # [slice, head, patch_in_slice, patch_in_slice]
    assert pattern.shape == (3, 4, 25, 25)
    with torch.no_grad():  # each slice's block of the pattern is the reference's attention
        for s, ((h, w), pixels) in enumerate(zip(sizes, slices)):
            attentions = reference(pixels[None], patch_attention_mask=torch.ones(1, h, w, dtype=torch.bool),
                                   output_attentions=True).attentions
            n = h * w
            assert (pattern[s, :, :n, :n] - attentions[1][0]).abs().max() < 1e-6
            assert bool((pattern[s, :, :, n:] == 0).all())  # padding keys


def test_hook_shapes(pairs):
    _, parts = pairs[torch.float32]
    rows, tgt = packed(slices_of([(3, 4), (2, 2)]))
    with torch.no_grad():
        _, cache = parts.run_with_cache("vision", rows, tgt)
    d, heads, d_head, n = 32, 4, 8, 16
    expected = {
        "vision.hook_patch_embed": (1, n, d),
        "vision.hook_pos_embed": (1, n, d),
        "vision.hook_embed": (1, n, d),
        "vision.blocks.0.hook_resid_pre": (1, n, d),
        "vision.blocks.0.ln1.hook_normalized": (1, n, d),
        "vision.blocks.0.ln1.hook_scale": (1, n, 1),
        "vision.blocks.0.attn.hook_q": (1, n, heads, d_head),
        "vision.blocks.0.attn.hook_k": (1, n, heads, d_head),
        "vision.blocks.0.attn.hook_v": (1, n, heads, d_head),
        "vision.blocks.0.attn.hook_attn_scores": (2, heads, 12, 12),
        "vision.blocks.0.attn.hook_pattern": (2, heads, 12, 12),
        "vision.blocks.0.attn.hook_z": (1, n, heads, d_head),
        "vision.blocks.0.hook_attn_out": (1, n, d),
        "vision.blocks.0.hook_resid_mid": (1, n, d),
        "vision.blocks.2.mlp.hook_pre": (1, n, 48),
        "vision.blocks.2.mlp.hook_post": (1, n, 48),
        "vision.blocks.2.hook_mlp_out": (1, n, d),
        "vision.blocks.2.hook_resid_post": (1, n, d),
        "vision.ln_post.hook_normalized": (1, n, d),
        "vision.hook_out": (1, n, d),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert {k for k in parts.hook_dict if not k.endswith("hook_result")} == set(cache.keys())  # every hook fires
    # the position hook holds the table rows of the MiniCPM ids, slice after slice
    ids = torch.cat([minicpm_bucket_ids(3, 4, 70), minicpm_bucket_ids(2, 2, 70)])
    assert torch.equal(cache["vision.hook_pos_embed"][0], parts.vision.pos_embed[ids])
    # one slice: no segments, the pattern is [1, head, patch, patch]
    rows, tgt = packed(slices_of([(3, 4)]))
    with torch.no_grad():
        _, cache = parts.run_with_cache("vision", rows, tgt, names_filter=lambda n: n.endswith("hook_pattern"))
    assert cache["vision.blocks.0.attn.hook_pattern"].shape == (1, heads, 12, 12)


# ----------------------------------------------------------------------------- position ids


def test_bucketing_matches_minicpm_rule():
    """Every slice of 1..140 x 1..140 patches on the released 70 x 70 grid, and a small grid."""
    for h in range(1, 141):
        for w in range(1, 141):
            assert torch.equal(navit_position_ids(h, w, 70), minicpm_bucket_ids(h, w, 70)), (h, w)
    for h in range(1, 21):
        for w in range(1, 21):
            assert torch.equal(navit_position_ids(h, w, 7), minicpm_bucket_ids(h, w, 7)), (h, w)
    assert navit_position_ids(70, 70, 70).tolist() == list(range(4900))  # a full-size slice reads the table in order


def test_idefics2_5x_position_ids_differ_on_these_sides(pairs):
    """transformers 5.x's Idefics2 computes ``idx * (1 / n)`` in float32 (clamped below 1); MiniCPM
    takes ``arange(0, 1 - 1e-6, 1 / n)``. On the CPU they disagree for exactly these sides up to 140
    (ARCHITECTURES.md §6 lists the same nine)."""
    reference, _ = pairs[torch.float32]
    sides = range(1, 141)
    rows = [n for n in sides if not torch.equal(idefics2_bucket_ids(reference, n, 1), minicpm_bucket_ids(n, 1, 70))]
    cols = [n for n in sides if not torch.equal(idefics2_bucket_ids(reference, 1, n), minicpm_bucket_ids(1, n, 70))]
    assert rows == cols == IDEFICS2_5X_DIFFERS


# ----------------------------------------------------------------------------- input helpers and errors


def test_patch_rows_are_what_the_conv_sees(pairs):
    reference, parts = pairs[torch.float32]
    image = slices_of([(3, 5)])[0]
    with torch.no_grad():
        conv = reference.embeddings.patch_embedding(image[None]).flatten(2).transpose(1, 2)
        ours = parts.vision.patch_embed(patch_rows(image, PATCH))[None]
    assert (ours - conv).abs().max() < 1e-6


@pytest.mark.parametrize("height, width", [(28, 42), (14, 14), (70, 28)])
def test_patch_rows_from_processor_strip(height, width):
    image = torch.randn(3, height, width)
    strip = reshape_by_patch(image, 14)
    assert strip.shape == (3, 14, height * width // 14)
    assert torch.equal(patch_rows_from_strip(strip, 14), patch_rows(image, 14))


def test_errors_name_the_problem(pairs):
    _, parts = pairs[torch.float32]
    rows, tgt = packed(slices_of([(3, 4), (2, 2)]))
    with pytest.raises(ValueError, match=r"hold 16 patch rows but tgt_sizes \[\(3, 4\), \(2, 3\)\] imply 18"):
        parts.vision(rows, torch.tensor([[3, 4], [2, 3]]))
    with pytest.raises(ValueError, match=r"patch rows \[n_patches, 12\].*patch_rows"):
        parts.vision(rows.view(2, 8, 12), tgt)
    with pytest.raises(ValueError, match=r"tgt_sizes must be an int tensor \[n_slices, 2\]"):
        parts.vision(rows, torch.tensor([12, 4]))
    with pytest.raises(ValueError, match="must hold integers"):
        parts.vision(rows, tgt.float())
    with pytest.raises(ValueError, match="at least 1x1"):
        parts.vision(rows, torch.tensor([[16, 1], [0, 5]]))
    with pytest.raises(ValueError, match="not a whole number of 14x14 patches"):
        patch_rows(torch.randn(3, 28, 30), 14)


# ----------------------------------------------------------------------------- config and released names


def test_config_from_released_json():
    config = json.loads((MINICPM_O / "config.json").read_text())
    cfg = NavitSiglipConfig.from_hf(config["vision_config"], drop_last_layer=config["drop_vision_last_layer"])
    assert cfg == NavitSiglipConfig()
    assert (cfg.grid, cfg.patch_dim, cfg.n_layers) == (70, 588, 27)
    assert (cfg.act, cfg.layer_norm_eps) == ("gelu_pytorch_tanh", 1e-6)
    assert NavitSiglipConfig.from_hf(config["vision_config"], drop_last_layer=True).n_layers == 26
    assert NavitSiglipConfig.from_hf(TINY).grid == 70


def test_released_names_at_full_size():
    """Every ``vpm.*`` tensor of the released shapes lands on a parameter of its shape; every row of
    every parameter is written once."""
    config = json.loads((MINICPM_O / "config.json").read_text())
    cfg = NavitSiglipConfig.from_hf(config["vision_config"], drop_last_layer=config["drop_vision_last_layer"])
    with torch.device("meta"):
        reference = idefics2_vision_reference(config["vision_config"])
        ours = NavitSiglipTower(cfg)
    state = reference.state_dict()
    assert len(state) == 437 and sum(t.numel() for t in state.values()) == 417_792_240
    params = dict(ours.named_parameters())
    rows_seen = dict.fromkeys(params, 0)
    for name, tensor in state.items():
        targets = navit_siglip_targets(name, cfg)
        assert targets, name
        for t in targets:
            assert t.param.startswith("vision.")
            param = params[t.param.removeprefix("vision.")]
            expected = param.shape if t.rows is None else (t.rows[1] - t.rows[0], *param.shape[1:])
            shape = t.shape if t.shape is not None else tuple(tensor.shape)
            assert tensor.numel() == param[slice(*t.rows) if t.rows else slice(None)].numel(), name
            assert tuple(shape) == tuple(expected), name
            rows_seen[t.param.removeprefix("vision.")] += expected[0]
    assert all(rows_seen[k] == p.shape[0] for k, p in params.items())
    assert sum(p.numel() for p in params.values()) == 417_792_240
    assert navit_siglip_targets("encoder.layers.27.mlp.fc1.weight", cfg) is None
    assert navit_siglip_targets("encoder.layers.26.mlp.fc1.weight", NavitSiglipConfig(n_layers=26)) is None
    assert navit_siglip_targets("head.probe", cfg) is None
    assert navit_siglip_targets("vpm.post_layernorm.weight", cfg) is None  # names are relative to vpm.
