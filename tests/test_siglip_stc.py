"""VideoLLaMA2.1's vision path: the SigLIP tower against transformers' ``SiglipVisionModel``, the STC
connector against timm's ``RegStage`` assembled as VideoLLaMA2's ``STCConnectorV35`` builds it, and
the MLP projector against ``nn.Sequential(Linear, GELU, Linear)``; weights go through the
converters' name mappings, every parameter must be written, every checkpoint name accounted for.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule

from reference_shims import import_timm_regnet
from videollama2_reference import ReferenceSTC  # stc_connector_v35 from timm + torch, as released

from hooked_avllm.components.norms import LayerNorm2d
from hooked_avllm.components.projectors import MLPProjector
from hooked_avllm.towers.siglip import SiglipConfig, SiglipVisionTower
from hooked_avllm.towers.stc_connector import RegNetStage, STCConfig, STCConnector
from weights_conversion.siglip import mlp_projector_targets, siglip_targets, stc_targets

TOL = 1e-4  # float32, absolute


class Parts(HookedRootModule):
    """Our modules under the prefixes the full model gives them, so hook names read as they will."""

    def __init__(self, **parts: nn.Module):
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)
        self.setup()

    def forward(self, part: str, *args):
        return getattr(self, part)(*args)


def randomize_(module: nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1): norm weights near 1, biases
    and embeddings small but nonzero, matrices ~ 1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            is_norm = p.ndim == 1 and any(k in name for k in ("norm", "bn", "ln"))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            elif "position_embedding" in name or "probe" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def load_(ours: nn.Module, state: dict[str, torch.Tensor], mapper) -> list[str]:
    """Copy ``state`` into ``ours`` through ``mapper``; every name must be known and every element
    of every parameter written exactly once. Returns the names the mapper skipped."""
    params = dict(ours.named_parameters())
    written = {k: torch.zeros(p.shape[:1] if p.ndim else (), dtype=torch.int) for k, p in params.items()}
    skipped = []
    with torch.no_grad():
        for name, tensor in state.items():
            targets = mapper(name)
            assert targets is not None, f"mapper does not know {name}"
            if not targets:
                skipped.append(name)
            for t in targets:
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
    return skipped


# ----------------------------------------------------------------------------- SigLIP


TINY_SIGLIP = {"image_size": 56, "patch_size": 14, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4,
               "num_attention_heads": 4}


@pytest.fixture(scope="module")
def siglip_pair():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    reference = SiglipVisionModel(SiglipVisionConfig(**TINY_SIGLIP)).eval()
    randomize_(reference, seed=1)
    cfg = SiglipConfig.from_hf(reference.config.to_dict(), select_layer=-2)
    tower = SiglipVisionTower(cfg).eval()
    state = {k.removeprefix("vision_model."): v for k, v in reference.state_dict().items()}
    skipped = load_(tower, state, lambda name: siglip_targets(name, cfg, prefix=""))
    return reference, Parts(vision=tower), skipped


def test_siglip_config():
    cfg = SiglipConfig.from_hf(TINY_SIGLIP)
    assert (cfg.grid, cfg.n_patches, cfg.n_layers, cfg.n_layers_run, cfg.layer_norm_eps) == (4, 16, 4, 3, 1e-6)
    assert SiglipConfig.from_hf(TINY_SIGLIP, select_layer=2).n_layers_run == 2
    assert SiglipConfig.from_hf(TINY_SIGLIP, select_layer=-1).n_layers_run == 4
    # so400m's hub config lists only what differs from transformers' defaults
    so400m = {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304, "model_type": "siglip_vision_model",
              "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14}
    assert SiglipConfig.from_hf(so400m) == SiglipConfig()
    assert (SiglipConfig().grid, SiglipConfig().n_layers_run) == (27, 26)
    with pytest.raises(ValueError, match="select_layer"):
        SiglipConfig.from_hf(TINY_SIGLIP, select_layer=-6)


def test_siglip_matches_transformers(siglip_pair):
    reference, parts, skipped = siglip_pair
    pixels = torch.randn(5, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hidden = reference(pixel_values=pixels, output_hidden_states=True).hidden_states
        fused = parts.vision(pixels)  # no hooks: SDPA
        explicit, cache = parts.run_with_cache("vision", pixels)  # every pattern watched: explicit path
    assert len(parts.vision.blocks) == 3  # layer 3 of 4 is past the selected hidden state
    assert set(skipped) == {k for k in reference.state_dict() if k.startswith(("encoder.layers.3.", "post_layernorm.", "head."))}
    assert fused.shape == (5, 16, 64)
    assert (fused - hidden[-2]).abs().max() < TOL
    assert (explicit - hidden[-2]).abs().max() < TOL
    assert (cache["vision.hook_embed"] - hidden[0]).abs().max() < TOL
    for layer in range(3):
        assert (cache[f"vision.blocks.{layer}.hook_resid_post"] - hidden[layer + 1]).abs().max() < TOL
    pattern = cache["vision.blocks.1.attn.hook_pattern"]  # one frame per batch row
    assert pattern.shape == (5, 4, 16, 16)
    assert (pattern.sum(-1) - 1).abs().max() < 1e-5


def test_siglip_hook_shapes(siglip_pair):
    _, parts, _ = siglip_pair
    with torch.no_grad():
        _, cache = parts.run_with_cache("vision", torch.randn(2, 3, 56, 56))
    expected = {
        "vision.hook_patch_embed": (2, 16, 64),
        "vision.hook_embed": (2, 16, 64),
        "vision.blocks.0.hook_resid_pre": (2, 16, 64),
        "vision.blocks.0.ln1.hook_normalized": (2, 16, 64),
        "vision.blocks.0.attn.hook_q": (2, 16, 4, 16),
        "vision.blocks.0.attn.hook_z": (2, 16, 4, 16),
        "vision.blocks.2.mlp.hook_post": (2, 16, 96),
        "vision.blocks.2.hook_resid_post": (2, 16, 64),
        "vision.blocks.1.attn.hook_pattern": (2, 4, 16, 16),
        "vision.hook_out": (2, 16, 64),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    # every hook fires (per-head results only when asked for)
    assert {k for k in parts.hook_dict if not k.endswith("hook_result")} == set(cache.keys())


def test_siglip_rejects_other_sizes(siglip_pair):
    _, parts, _ = siglip_pair
    with pytest.raises(ValueError, match=r"expects 56x56 frames.*got 70x56.*Resize"):
        parts.vision(torch.randn(1, 3, 70, 56))
    with pytest.raises(ValueError, match=r"\[frames, 3, height, width\]"):
        parts.vision(torch.randn(1, 2, 3, 56, 56))


def test_siglip_names_at_full_size():
    """Every so400m tensor name is mapped or skipped, and lands on a parameter of its shape."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    with torch.device("meta"):
        reference = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=1152, image_size=384, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27, patch_size=14))
        ours = SiglipVisionTower(SiglipConfig())
    params = dict(ours.named_parameters())
    rows_seen = {k: 0 for k in params}
    for name, tensor in reference.state_dict().items():
        targets = siglip_targets(name, SiglipConfig())
        assert targets is not None, name
        for t in targets:
            assert t.param.startswith("vision.")
            param = params[t.param.removeprefix("vision.")]
            expected = param.shape if t.rows is None else (t.rows[1] - t.rows[0], *param.shape[1:])
            assert tensor.shape == expected, name
            rows_seen[t.param.removeprefix("vision.")] += expected[0] if expected else 1
    for k, p in params.items():
        assert rows_seen[k] == (p.shape[0] if p.ndim else 1), k
    assert siglip_targets("encoder.layers.27.mlp.fc1.weight", SiglipConfig()) is None
    assert siglip_targets("vision_model.embeddings.patch_embedding.weight", SiglipConfig()) is None


# ----------------------------------------------------------------------------- STC connector


@pytest.fixture(scope="module")
def timm_parts():
    try:
        regnet = import_timm_regnet()
    except ImportError as error:
        pytest.fail(f"timm is the STC connector's reference ({error}); install it with `pip install --no-deps timm`")
    from timm.layers import LayerNorm2d as TimmLayerNorm2d

    def stage(depth, in_chs, out_chs):  # exactly as VideoLLaMA2's STCConnector builds s1 / s2
        return regnet.RegStage(depth=depth, in_chs=in_chs, out_chs=out_chs, stride=1, dilation=1,
                               act_layer=nn.SiLU, norm_layer=TimmLayerNorm2d)

    return stage, TimmLayerNorm2d


def test_layer_norm_2d_matches_timm(timm_parts):
    _, TimmLayerNorm2d = timm_parts
    reference = TimmLayerNorm2d(12)
    randomize_(reference, seed=3)
    ours = LayerNorm2d(12)
    ours.load_state_dict({"w": reference.weight, "b": reference.bias})
    x = 3 * torch.randn(4, 12, 5, 6) + 1
    with torch.no_grad():
        expected = reference(x)
        assert (ours(x) - expected).abs().max() < TOL
        seen = {}
        ours.hook_scale.add_hook(lambda act, hook: seen.setdefault("scale", act))  # forces the explicit path
        try:
            assert (ours(x) - expected).abs().max() < TOL
        finally:
            ours.hook_scale.remove_hooks()
    assert seen["scale"].shape == (4, 1, 5, 6)


def test_regnet_stage_matches_timm(timm_parts):
    stage, _ = timm_parts
    reference = stage(2, 12, 16).eval()  # width changes in b1 (1x1 conv shortcut), identity in b2
    randomize_(reference, seed=4)
    ours = RegNetStage(2, 12, 16).eval()
    cfg = STCConfig(d_in=12, d_model=16, depth=2)

    def stage_targets(name):  # a stage's names sit under s1. in the connector
        targets = stc_targets(f"s1.{name}", cfg, prefix="")
        return None if targets is None else [replace(t, param=t.param.removeprefix("s1.")) for t in targets]

    assert load_(ours, reference.state_dict(), stage_targets) == []
    assert ours.blocks[0].se.fc1.out_channels == 3 and ours.blocks[1].se.fc1.out_channels == 4  # round(in * 0.25)
    x = torch.randn(4, 12, 7, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for scale in (1.0, 0.003):  # small inputs make the norms' eps (1e-5, not 1e-6) matter
            assert (ours(scale * x) - reference(scale * x)).abs().max() < TOL


@pytest.fixture(scope="module")
def stc_pair(timm_parts):
    stage, _ = timm_parts
    torch.manual_seed(6)
    reference = ReferenceSTC(d_in=12, d_model=16, depth=4).eval()
    randomize_(reference, seed=7)
    cfg = STCConfig(d_in=12, d_model=16, depth=4)
    ours = STCConnector(cfg).eval()
    assert load_(ours, reference.state_dict(), lambda name: stc_targets(name, cfg, prefix="")) == []
    return reference, Parts(vision_proj=ours)


@pytest.mark.parametrize("videos, frames, side", [(2, 3, 7), (1, 4, 6), (1, 5, 9)])
def test_stc_connector_matches_reference(stc_pair, videos, frames, side):
    reference, parts = stc_pair
    x = torch.randn(videos, frames, side * side, 12, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = reference(x)
        out = parts.vision_proj(x)
    t, h, w = parts.vision_proj.output_grid(frames, side, side)
    assert out.shape == expected.shape == (videos, t * h * w, 16)
    assert (out - expected).abs().max() < TOL


def test_stc_hook_shapes(stc_pair):
    _, parts = stc_pair
    with torch.no_grad():
        out, cache = parts.run_with_cache("vision_proj", torch.randn(2, 3, 49, 12))
    assert parts.vision_proj.output_grid(3, 7, 7) == (1, 3, 3)
    expected = {
        "vision_proj.s1.blocks.0.hook_conv1": (6, 16, 7, 7),
        "vision_proj.s1.blocks.0.se.hook_gate": (6, 16, 1, 1),
        "vision_proj.s1.blocks.0.hook_shortcut": (6, 16, 7, 7),
        "vision_proj.s1.blocks.3.hook_out": (6, 16, 7, 7),
        "vision_proj.hook_s1": (6, 16, 7, 7),
        "vision_proj.hook_sampler": (2, 16, 1, 3, 3),
        "vision_proj.s2.blocks.0.norm1.hook_normalized": (2, 16, 3, 3),
        "vision_proj.hook_s2": (2, 16, 3, 3),
        "vision_proj.readout.hook_pre.0": (2, 9, 16),
        "vision_proj.readout.hook_post.0": (2, 9, 16),
        "vision_proj.hook_out": (2, 9, 16),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert set(parts.hook_dict) == set(cache.keys())  # every hook fires
    assert torch.equal(cache["vision_proj.hook_out"], out)
    # token (t, h, w) of the output is column w of row h of merged frame t of s2's map
    s2 = cache["vision_proj.hook_s2"]
    readout = parts.vision_proj.readout
    assert (readout(s2[1, :, 2, 1]) - out[1, 2 * 3 + 1]).abs().max() < TOL


def test_stc_errors_and_grid():
    cfg = STCConfig()
    assert cfg.output_grid(16, 27, 27) == (8, 13, 13)
    assert 8 * 13 * 13 == 1352
    with pytest.raises(ValueError, match="at least"):
        cfg.output_grid(1, 27, 27)
    stc = STCConnector(STCConfig(d_in=12, d_model=16, depth=1))
    with pytest.raises(ValueError, match="square patch grid"):
        stc(torch.randn(1, 2, 12, 12))
    with pytest.raises(ValueError, match=r"\[video, frame, patch, 12\]"):
        stc(torch.randn(2, 49, 12))


def test_stc_names_at_full_size(timm_parts):
    """Every released connector name (1152 -> 3584, depth 4) lands on a parameter of its shape."""
    stage, _ = timm_parts
    cfg = STCConfig()
    with torch.device("meta"):
        reference = ReferenceSTC(cfg.d_in, cfg.d_model, cfg.depth)
        ours = STCConnector(cfg)
    params = dict(ours.named_parameters())
    seen = set()
    for name, tensor in reference.state_dict().items():
        targets = stc_targets(name, cfg)
        assert targets is not None and len(targets) == 1, name
        key = targets[0].param.removeprefix("vision_proj.")
        assert params[key].shape == tensor.shape, name
        seen.add(key)
    assert seen == set(params)
    assert params["s1.blocks.0.se.fc1.weight"].shape == (288, 3584, 1, 1)  # round(1152 * 0.25)
    assert params["s1.blocks.1.se.fc1.weight"].shape == (896, 3584, 1, 1)
    for unknown in ("s1.b5.conv1.conv.weight", "s2.b1.downsample.conv.weight", "sampler.1.weight", "readout.1.weight", "readout.4.bias"):
        assert stc_targets(unknown, cfg) is None, unknown


# ----------------------------------------------------------------------------- MLP projector


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_projector_matches_sequential(depth):
    layers = [nn.Linear(12, 20)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(20, 20)]
    reference = nn.Sequential(*layers)
    randomize_(reference, seed=9)
    ours = MLPProjector(12, 20, depth=depth)
    assert load_(ours, reference.state_dict(), lambda name: mlp_projector_targets(name, depth, "")) == []
    x = torch.randn(2, 7, 12)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < TOL


def test_mlp_projector_hooks_and_audio_names():
    parts = Parts(audio_proj=MLPProjector(12, 20, depth=2))
    with torch.no_grad():
        _, cache = parts.run_with_cache("audio_proj", torch.randn(3, 12))
    assert {k: tuple(v.shape) for k, v in cache.items()} == {
        "audio_proj.hook_pre.0": (3, 20), "audio_proj.hook_post.0": (3, 20), "audio_proj.hook_out": (3, 20)}
    # VideoLLaMA2's mlp2x_gelu audio projector, names relative to mm_projector_a.
    assert [t.param for n in ("0.weight", "0.bias", "2.weight", "2.bias") for t in mlp_projector_targets(n, 2, "audio_proj.")] == [
        "audio_proj.linears.0.weight", "audio_proj.linears.0.bias", "audio_proj.linears.1.weight", "audio_proj.linears.1.bias"]
    for unknown in ("1.weight", "4.weight", "0.scale", "weight"):
        assert mlp_projector_targets(unknown, 2, "audio_proj.") is None
    assert all(isinstance(m, HookPoint) for m in parts.hook_dict.values())
