"""The Qwen3-Omni vision tower, patch merger and DeepStack mergers against transformers'
``Qwen3OmniMoeVisionEncoder`` (tiny random config, weights loaded only through
``qwen3_vision_targets``), their hooks and errors, and the real checkpoint index's names.
"""

from __future__ import annotations

import copy
import doctest
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule

import hooked_avllm.towers.qwen3_vision as qwen3_vision_module
import weights_conversion.qwen3_vision as qwen3_vision_conversion
from hooked_avllm.towers.qwen3_vision import (
    Qwen3VisionConfig,
    Qwen3VisionProjector,
    Qwen3VisionTower,
    SpatialMergeMLP,
    interpolated_positions,
)
from hooked_avllm.towers.qwen_vision import patch_positions
from weights_conversion.qwen3_vision import qwen3_vision_targets
from weights_conversion.targets import Target

REPO = "Qwen__Qwen3-Omni-30B-A3B-Instruct"
TINY = {"depth": 4, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64, "out_hidden_size": 48,
        "patch_size": 4, "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 2]}
GRIDS = {
    "square": [[1, 8, 8]],  # the learned 8x8 table exactly: interpolation is a reordering
    "non_square": [[1, 6, 10]],  # rows shrink, columns stretch
    "video": [[3, 4, 6]],  # three frame groups, each its own attention segment
    "mixed": [[1, 8, 8], [2, 4, 6], [1, 6, 10]],
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


class Parts(HookedRootModule):
    """Tower and projector under the prefixes the full model gives them (``vision``, ``vision_proj``)."""

    def __init__(self, cfg: Qwen3VisionConfig):
        super().__init__()
        self.vision = Qwen3VisionTower(cfg)
        self.vision_proj = Qwen3VisionProjector(cfg)
        self.setup()

    def forward(self, pixels, grid_thw):
        hidden, taps = self.vision(pixels, grid_thw)
        rows, deep = self.vision_proj(hidden, taps)
        return rows, deep, hidden, taps


def randomize_(module: nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1): norm weights near 1, biases
    small but nonzero, position table O(1), matrices ~ 1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and ("norm" in name or "ln_q" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            elif name == "pos_embed.weight":
                p.copy_(noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def load_(ours: nn.Module, state: dict[str, torch.Tensor], mapper) -> None:
    """Copy ``state`` into ``ours`` through ``mapper``; every name must map to at least one target
    and every element of every parameter be written exactly once."""
    params = dict(ours.named_parameters())
    written = {k: torch.zeros(p.shape[:1] if p.ndim else (), dtype=torch.int) for k, p in params.items()}
    with torch.no_grad():
        for name, tensor in state.items():
            targets = mapper(name)
            assert targets, f"mapper gives {targets!r} for {name}"
            for t in targets:
                assert getattr(t, "index", None) is None, t  # no stacked (per-expert) parameters here
                p = params[t.param]
                src = tensor.reshape(t.shape) if t.shape else tensor
                if t.rows is None:
                    p.copy_(src)
                    written[t.param] += 1
                else:
                    p[t.rows[0] : t.rows[1]].copy_(src)
                    written[t.param][t.rows[0] : t.rows[1]] += 1
    for k, count in written.items():
        assert bool((count == 1).all()), f"{k} written {count.tolist()} times"


@pytest.fixture(scope="module")
def pairs():
    """(reference, ours) per dtype, the same random weights."""
    from transformers import Qwen3OmniMoeVisionEncoderConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeVisionEncoder,
    )

    hf_config = Qwen3OmniMoeVisionEncoderConfig(**TINY)
    hf_config._attn_implementation = "sdpa"  # eager softmaxes in float32, which would cap float64 parity
    torch.manual_seed(0)
    reference = Qwen3OmniMoeVisionEncoder(hf_config).eval()
    randomize_(reference, seed=1)
    cfg = Qwen3VisionConfig.from_hf(hf_config.to_dict())
    ours = Parts(cfg).eval()
    load_(ours, reference.state_dict(), lambda name: qwen3_vision_targets(name, cfg))
    return {
        torch.float32: (reference, ours),
        torch.float64: (copy.deepcopy(reference).double(), copy.deepcopy(ours).double()),
    }


def pixels_for(grid: list[list[int]], cfg: Qwen3VisionConfig, dtype=torch.float32, seed: int = 2) -> torch.Tensor:
    n = sum(t * h * w for t, h, w in grid)
    return torch.randn(n, cfg.patch_dim, generator=torch.Generator().manual_seed(seed)).to(dtype)


def reference_run(reference, pixels, grid):
    """The reference's outputs plus its patch embedding, embedding (input of block 0) and the
    output of block 1, taken with forward hooks."""
    seen = {}
    handles = [
        reference.patch_embed.register_forward_hook(lambda m, a, out: seen.__setitem__("patch_embed", out)),
        reference.blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("embed", a[0])),
        reference.blocks[1].register_forward_hook(lambda m, a, out: seen.__setitem__("block1", out)),
    ]
    try:
        with torch.no_grad():
            out = reference(pixels, grid)
    finally:
        for h in handles:
            h.remove()
    return out, seen


def parity_errors(reference, ours, grid, dtype) -> dict[str, float]:
    """Max absolute difference per compared stage."""
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    cfg = ours.vision.cfg
    grid_t = torch.tensor(grid)
    pixels = pixels_for(grid, cfg, dtype)
    out, seen = reference_run(reference, pixels, grid_t)
    wanted = {"vision.hook_patch_embed", "vision.hook_pos_embed", "vision.hook_embed", "vision.blocks.1.hook_resid_post",
              "vision.hook_out", "vision_proj.hook_out"} | {f"vision_proj.deepstack.{i}.hook_out" for i in range(2)}
    with torch.no_grad():  # only residual-stream hooks: attention and norms stay on their fused paths
        (rows, deep, hidden, taps), cache = ours.run_with_cache(pixels, grid_t, names_filter=lambda n: n in wanted)
        indices, weights = get_vision_interpolation_indices_and_weights(
            grid_t, num_grid_per_side=8, mode="bilinear", align_corners=True, spatial_merge_size=2)
        ref_pos = (reference.pos_embed(indices) * weights[:, :, None]).sum(1)
    for i, layer in enumerate(cfg.deepstack_visual_indexes):  # the taps are those blocks' outputs
        assert torch.equal(taps[i], ours.vision.blocks[layer].hook_resid_post(taps[i]))
    assert rows.shape == (1, len(pixels) // 4, 48) and all(d.shape == (len(pixels) // 4, 48) for d in deep)
    pairs = {
        "patch_embed": (cache["vision.hook_patch_embed"][0], seen["patch_embed"]),
        "pos_embed": (cache["vision.hook_pos_embed"][0], ref_pos),
        "embed": (cache["vision.hook_embed"][0], seen["embed"]),
        "block1": (cache["vision.blocks.1.hook_resid_post"][0], seen["block1"]),
        "last_hidden": (hidden[0], out.last_hidden_state),
        "hook_out": (cache["vision.hook_out"][0], out.last_hidden_state),
        "merged": (rows[0], out.pooler_output),
        "merged_hook": (cache["vision_proj.hook_out"][0], out.pooler_output),
    }
    assert len(out.deepstack_features) == len(deep) == 2
    for i, feature in enumerate(out.deepstack_features):
        pairs[f"deepstack{i}"] = (deep[i], feature)
        pairs[f"deepstack{i}_hook"] = (cache[f"vision_proj.deepstack.{i}.hook_out"][0], feature)
    errors = {}
    for key, (a, b) in pairs.items():
        assert a.shape == b.shape and a.dtype == b.dtype == dtype, (key, a.shape, b.shape, a.dtype, b.dtype)
        errors[key] = (a - b).abs().max().item()
    return errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", sorted(GRIDS))
def test_matches_transformers(pairs, case, dtype):
    reference, ours = pairs[dtype]
    errors = parity_errors(reference, ours, GRIDS[case], dtype)
    assert max(errors.values()) < TOL[dtype], errors


def test_position_interpolation_is_bilinear_align_corners():
    """Independent of the reference: ``F.interpolate`` of the table as an image, read in merge-block order."""
    torch.manual_seed(3)
    table = torch.randn(64, 5, dtype=torch.float64)
    image = table.T.reshape(1, 5, 8, 8)
    for grid in ([[1, 6, 10]], [[2, 4, 4]], [[1, 12, 2]], [[1, 8, 8], [1, 2, 16]]):
        rows = []
        for t, h, w in grid:
            resized = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=True)[0]  # [5, h, w]
            rc = patch_positions(torch.tensor([[t, h, w]]), 2)
            rows.append(resized[:, rc[:, 0], rc[:, 1]].T)
        # the weights are float32 (as in the reference), so float64 agrees to float32 rounding of the weights
        assert (interpolated_positions(table, torch.tensor(grid), 2) - torch.cat(rows)).abs().max() < 1e-6
    same = torch.tensor([[1, 8, 8]])  # the table's own size: an exact reordering
    rc = patch_positions(same, 2)
    assert torch.equal(interpolated_positions(table, same, 2), table[rc[:, 0] * 8 + rc[:, 1]])


def expected_shape(name: str, n_patch: int, n_token: int, n_frames: int, longest: int) -> tuple[int, ...]:
    d, heads, d_head, mlp, merged, out = 32, 4, 8, 64, 128, 48
    leaf = name.rsplit(".", 1)[-1]
    if name.startswith("vision_proj."):
        if ".ln." in name:
            width = d if name.startswith("vision_proj.merger.") else merged
            rows = n_patch if name.startswith("vision_proj.merger.") else n_token
            return (1, rows, 1) if leaf == "hook_scale" else (1, rows, width)
        return (1, n_token, out) if leaf == "hook_out" else (1, n_token, merged)
    if leaf in ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_z"):
        return (1, n_patch, heads, d_head)
    if leaf in ("hook_attn_scores", "hook_pattern"):
        return (n_frames, heads, longest, longest)
    if ".mlp." in name:
        return (1, n_patch, mlp)
    if leaf == "hook_scale":
        return (1, n_patch, 1)
    return (1, n_patch, d)


def test_every_hook_fires_with_documented_shape(pairs):
    _, ours = pairs[torch.float32]
    grid = GRIDS["mixed"]  # frames of 64, 24, 24 and 60 patches
    pixels = pixels_for(grid, ours.vision.cfg)
    with torch.no_grad():
        (_, deep, _, taps), cache = ours.run_with_cache(pixels, torch.tensor(grid))
    expected_names = {n for n in ours.hook_dict if not n.endswith("hook_result")}  # hook_result: use_attn_result only
    assert set(cache.keys()) == expected_names
    for name in expected_names:
        assert tuple(cache[name].shape) == expected_shape(name, 172, 43, 4, 64), name
    for name in ("vision.hook_patch_embed", "vision.hook_pos_embed", "vision.hook_embed", "vision.hook_out",
                 "vision_proj.hook_out", "vision_proj.deepstack.1.hook_out", "vision.blocks.3.attn.hook_pattern"):
        assert name in cache
    assert torch.equal(cache["vision.hook_embed"], cache["vision.hook_patch_embed"] + cache["vision.hook_pos_embed"])
    assert torch.equal(cache["vision_proj.hook_out"], cache["vision_proj.merger.hook_out"])
    for i, layer in enumerate((0, 2)):
        assert torch.equal(taps[i], cache[f"vision.blocks.{layer}.hook_resid_post"])
        assert torch.equal(deep[i], cache[f"vision_proj.deepstack.{i}.hook_out"][0])


def test_patterns_are_per_frame(pairs):
    _, ours = pairs[torch.float32]
    grid = GRIDS["mixed"]
    starts, lengths = [0, 64, 88, 112], [64, 24, 24, 60]
    with torch.no_grad():
        _, cache = ours.run_with_cache(pixels_for(grid, ours.vision.cfg), torch.tensor(grid))
    pattern = cache["vision.blocks.2.attn.hook_pattern"]  # [frame, head, frame_pos, frame_pos]
    q, k = cache["vision.blocks.2.attn.hook_rot_q"][0], cache["vision.blocks.2.attn.hook_rot_k"][0]
    for s, (start, n) in enumerate(zip(starts, lengths)):
        assert torch.allclose(pattern[s, :, :n].sum(-1), torch.ones(4, n), atol=1e-6)
        assert bool((pattern[s, :, :, n:] == 0).all())  # padding keys of shorter frames
        qs, ks = q[start : start + n].transpose(0, 1), k[start : start + n].transpose(0, 1)  # [head, n, d_head]
        direct = (qs @ ks.transpose(-1, -2) * 8**-0.5).softmax(-1)  # attention within this frame only
        assert (pattern[s, :, :n, :n] - direct).abs().max() < 1e-6


def test_explicit_pattern_path_equals_fused(pairs):
    _, ours = pairs[torch.float32]
    grid = torch.tensor(GRIDS["mixed"])
    pixels = pixels_for(GRIDS["mixed"], ours.vision.cfg)
    with torch.no_grad():
        fused = ours(pixels, grid)
        try:
            for block in ours.vision.blocks:
                block.attn.force_explicit = True
            explicit = ours(pixels, grid)
        finally:
            for block in ours.vision.blocks:
                block.attn.force_explicit = False
    assert (fused[0] - explicit[0]).abs().max() < 1e-5
    for a, b in zip(fused[1], explicit[1]):
        assert (a - b).abs().max() < 1e-5


def test_gradients_reach_pixels(pairs):
    _, ours = pairs[torch.float32]
    grid = GRIDS["mixed"]
    pixels = pixels_for(grid, ours.vision.cfg).requires_grad_(True)
    rows, deep, _, _ = ours(pixels, torch.tensor(grid))
    (rows.square().mean() + sum(d.square().mean() for d in deep)).backward()
    assert pixels.grad is not None and bool(pixels.grad.isfinite().all())
    per_patch = pixels.grad.abs().sum(-1)
    assert bool((per_patch > 0).all())  # every patch influences the output
    assert ours.vision.pos_embed.grad is not None and ours.vision.pos_embed.grad.abs().sum() > 0
    ours.zero_grad(set_to_none=True)


def test_bad_inputs_raise_clear_errors(pairs):
    _, ours = pairs[torch.float32]
    tower, proj = ours.vision, ours.vision_proj
    pd = tower.cfg.patch_dim
    with pytest.raises(ValueError, match=r"60 patches but vision_grid_thw \[\[1, 8, 8\]\] implies 64"):
        tower(torch.randn(60, pd), torch.tensor([[1, 8, 8]]))
    with pytest.raises(ValueError, match="multiples of the merge size 2"):
        tower(torch.randn(40, pd), torch.tensor([[1, 5, 8]]))
    with pytest.raises(ValueError, match=rf"pixels must be \[n_patches, {pd}\].*got \(64, 95\)"):
        tower(torch.randn(64, pd - 1), torch.tensor([[1, 8, 8]]))
    with pytest.raises(ValueError, match="pixels must be"):
        tower(torch.randn(1, 64, pd), torch.tensor([[1, 8, 8]]))
    with pytest.raises(ValueError, match=r"shape \[n_items, 3\]"):
        tower(torch.randn(64, pd), torch.tensor([[8, 8]]))
    with pytest.raises(ValueError, match=r"multiple of 4.*got \(1, 63, 32\)"):
        proj(torch.randn(1, 63, 32), [torch.randn(1, 63, 32)] * 2)
    with pytest.raises(ValueError, match="taps must hold 2"):
        proj(torch.randn(1, 64, 32), [torch.randn(1, 64, 32)])
    with pytest.raises(ValueError, match=r"taps\[1\] has shape \(1, 60, 32\)"):
        proj(torch.randn(1, 64, 32), [torch.randn(1, 64, 32), torch.randn(1, 60, 32)])
    with pytest.raises(ValueError, match="perfect square"):
        Qwen3VisionConfig(num_position_embeddings=2300)
    with pytest.raises(ValueError, match=r"deepstack_visual_indexes \[16, 8\]"):
        Qwen3VisionConfig(deepstack_visual_indexes=(16, 8))
    with pytest.raises(ValueError, match=r"deepstack_visual_indexes \[8, 27\]"):
        Qwen3VisionConfig(deepstack_visual_indexes=(8, 27))
    with pytest.raises(ValueError, match="divisible by 4"):
        Qwen3VisionConfig(d_model=36, n_heads=6)
    with pytest.raises(ValueError, match=r"unknown keys \['hidden_size'\]"):
        Qwen3VisionConfig.from_dict({"hidden_size": 32})
    with pytest.raises(ValueError, match="axial"):
        Qwen3VisionConfig.from_hf({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})


def test_config_round_trips_and_defaults():
    cfg = Qwen3VisionConfig.from_hf(TINY)
    assert (cfg.depth, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.out_dim, cfg.patch_size) == (4, 32, 64, 4, 48, 4)
    assert (cfg.patch_dim, cfg.d_head, cfg.deepstack_visual_indexes, cfg.pos_grid_side) == (96, 8, (0, 2), 8)
    assert Qwen3VisionConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["deepstack_visual_indexes"], tuple)
    assert Qwen3VisionConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # JSON lists -> tuples
    assert Qwen3VisionConfig.from_hf({}) == Qwen3VisionConfig(out_dim=3584)  # transformers' default out_hidden_size
    assert Qwen3VisionConfig.from_hf({"patch_size": [14, 14], "rope_parameters": {"rope_type": "axial", "rope_theta": 5e3}}) \
        == Qwen3VisionConfig(out_dim=3584, patch_size=14, rope_theta=5e3)


def test_target_names():
    cfg = Qwen3VisionConfig.from_hf(TINY)
    assert qwen3_vision_targets("blocks.3.attn.qkv.bias", cfg) == [Target("vision.blocks.3.attn.qkv.bias")]
    assert qwen3_vision_targets("blocks.1.norm2.weight", cfg, tower_prefix="") == [Target("blocks.1.ln2.w")]
    assert qwen3_vision_targets("merger.mlp.2.bias", cfg, proj_prefix="p.") == [Target("p.merger.fc2.bias")]
    assert qwen3_vision_targets("patch_embed.proj.weight", cfg) == [Target("vision.patch_embed.weight", shape=(32, 96))]
    for name in ("blocks.4.norm1.weight", "merger_list.2.ln_q.weight", "merger.mlp.1.weight",
                 "thinker.visual.pos_embed.weight", "blocks.0.attn.q_proj.weight", "audio_tower.conv2d1.weight"):
        assert qwen3_vision_targets(name, cfg) is None, name


def test_real_index_maps_with_config_shapes(hub_fixtures):
    from transformers import Qwen3OmniMoeVisionEncoderConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeVisionEncoder,
    )

    folder = hub_fixtures / REPO
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    vision_json = json.loads((folder / "config.json").read_text())["thinker_config"]["vision_config"]
    names = sorted(k.removeprefix("thinker.visual.") for k in weight_map if k.startswith("thinker.visual."))
    assert len(names) == 351  # 27 blocks x 12 + merger 6 + 3 DeepStack mergers x 6 + patch embed 2 + pos_embed 1
    cfg = Qwen3VisionConfig.from_hf(vision_json)
    assert cfg == Qwen3VisionConfig()  # our defaults are this checkpoint
    with torch.device("meta"):  # the reference's shapes, from the config alone
        reference = Qwen3OmniMoeVisionEncoder(Qwen3OmniMoeVisionEncoderConfig(**vision_json))
        tower, proj = Qwen3VisionTower(cfg), Qwen3VisionProjector(cfg)
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert set(names) == set(ref_shapes)
    params = {f"vision.{k}": p for k, p in tower.named_parameters()} | {f"vision_proj.{k}": p for k, p in proj.named_parameters()}
    written = {k: torch.zeros(p.shape[0], dtype=torch.int) for k, p in params.items()}
    for name in names:
        targets = qwen3_vision_targets(name, cfg)
        assert targets, f"{name} -> {targets!r}"
        for t in targets:
            assert t.param in params and getattr(t, "index", None) is None, (name, t)
            shape = ref_shapes[name]
            if t.shape is not None:
                assert torch.Size(shape).numel() == torch.Size(t.shape).numel(), (name, shape, t.shape)
                shape = t.shape
            p = params[t.param]
            if t.rows is None:
                assert tuple(p.shape) == shape, (name, t.param, tuple(p.shape), shape)
                written[t.param] += 1
            else:
                assert (t.rows[1] - t.rows[0], *p.shape[1:]) == shape, (name, t.param)
                written[t.param][t.rows[0] : t.rows[1]] += 1
    for k, count in written.items():
        assert bool((count == 1).all()), f"{k} written {count.tolist()} times"
    assert params["vision.patch_embed.weight"].shape == (1152, 1536) and params["vision.pos_embed"].shape == (2304, 1152)


def test_spatial_merge_mlp_norm_placement():
    torch.manual_seed(4)
    x = torch.randn(1, 8, 6)
    pre, post = SpatialMergeMLP(6, 5, postshuffle_norm=False), SpatialMergeMLP(6, 5, postshuffle_norm=True)
    assert pre.ln.w.shape == (6,) and post.ln.w.shape == (24,)
    with torch.no_grad():
        by_hand = F.layer_norm(x, (6,), eps=1e-6).reshape(1, 2, 24)
        assert torch.allclose(pre.fc2(F.gelu(pre.fc1(by_hand))), pre(x), atol=1e-6)
        by_hand = F.layer_norm(x.reshape(1, 2, 24), (24,), eps=1e-6)
        assert torch.allclose(post.fc2(F.gelu(post.fc1(by_hand))), post(x), atol=1e-6)


@pytest.mark.parametrize("module", [qwen3_vision_module, qwen3_vision_conversion], ids=["tower", "conversion"])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
