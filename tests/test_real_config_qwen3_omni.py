"""Qwen3-Omni-30B-A3B's released ``config.json`` and tensor index (tests/fixtures/hub): the config
parses to the real dimensions and every thinker tensor of the index maps to a parameter of the
shape the reference implies, filling every parameter exactly."""

from __future__ import annotations

import json
import re

import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.loading import WeightFiller, pick_architecture, pick_converter

NAME = "Qwen__Qwen3-Omni-30B-A3B-Instruct"


def load(hub_fixtures, file):
    return json.loads((hub_fixtures / NAME / file).read_text())


def test_real_config_parses_to_the_released_dimensions(hub_fixtures):
    config_json = load(hub_fixtures, "config.json")
    cfg = pick_architecture(config_json).config_from_hf(config_json)
    t, v, a = cfg.text, cfg.vision, cfg.audio
    assert cfg.architecture == "qwen3_omni_moe_thinker" and cfg.source_model_type == "qwen3_omni_moe"
    assert (t.n_layers, t.d_model, t.n_heads, t.n_kv_heads, t.d_head, t.vocab_size) == (48, 2048, 32, 4, 128, 152064)
    assert (t.n_experts, t.top_k, t.d_expert, t.norm_topk_prob, t.qk_norm) == (128, 8, 768, True, True)
    assert t.mrope_section == (24, 20, 20) and t.mrope_interleaved and t.rope_theta == 1e6 and not t.qkv_bias
    assert not t.tie_word_embeddings and all(t.is_moe_layer(layer) for layer in range(48))
    assert (v.depth, v.d_model, v.n_heads, v.d_mlp, v.out_dim, v.patch_size) == (27, 1152, 16, 4304, 2048, 16)
    assert v.deepstack_visual_indexes == (8, 16, 24) and v.num_position_embeddings == 2304
    assert (a.n_layers, a.d_model, a.n_heads, a.d_mlp, a.out_dim, a.n_window, a.n_window_infer) == (32, 1280, 20, 5120, 2048, 50, 800)
    tok = cfg.tokens
    assert (tok.audio, tok.audio_start, tok.audio_end, tok.image, tok.video, tok.vision_start, tok.vision_end) == (
        151675, 151669, 151670, 151655, 151656, 151652, 151653)
    assert cfg.position_id_per_second == 13.0 and cfg.num_experts == 128 and cfg.experts_per_token == 8
    assert cfg.d_mlp == 768  # TransformerLens's meaning for an MoE: one expert's width


def reference_shapes(config_json: dict) -> dict[str, tuple[int, ...]]:
    """On-disk tensor name -> shape, from transformers' thinker built on the meta device (its fused
    expert parameters split per expert, as transformers saves them)."""
    import transformers

    with torch.device("meta"):
        thinker = transformers.Qwen3OmniMoeThinkerForConditionalGeneration(
            transformers.Qwen3OmniMoeThinkerConfig(**config_json["thinker_config"]))
    shapes = {}
    for module_name, p in thinker.named_parameters():
        disk = re.sub(r"^model\.language_model\.", "model.", module_name)
        disk = "thinker." + re.sub(r"^model\.(visual|audio_tower)\.", r"\1.", disk)
        fused = re.fullmatch(r"(.+\.mlp\.experts)\.(gate_up_proj|down_proj)", disk)
        if fused:
            n_experts, rows, cols = p.shape
            for e in range(n_experts):
                if fused.group(2) == "down_proj":
                    shapes[f"{fused.group(1)}.{e}.down_proj.weight"] = (rows, cols)
                else:
                    shapes[f"{fused.group(1)}.{e}.gate_proj.weight"] = (rows // 2, cols)
                    shapes[f"{fused.group(1)}.{e}.up_proj.weight"] = (rows // 2, cols)
        else:
            shapes[disk] = tuple(p.shape)
    return shapes


def test_converter_maps_every_real_thinker_tensor(hub_fixtures):
    config_json = load(hub_fixtures, "config.json")
    converter = pick_converter(config_json)
    cfg = pick_architecture(config_json).config_from_hf(config_json)
    weight_map = load(hub_fixtures, "model.safetensors.index.json")["weight_map"]
    shapes = reference_shapes(config_json)
    with torch.device("meta"):
        model = HookedAVLLM(cfg)
    filler = WeightFiller(model)
    thinker = [n for n in weight_map if n.startswith("thinker.")]
    assert len(thinker) == len(shapes)  # the index holds every thinker parameter, and nothing else of the thinker
    for name in weight_map:
        targets = converter.tensor_targets(name, cfg)
        assert targets is not None, f"{name} is not mapped"
        if not targets:
            assert name.startswith(("talker.", "code2wav.")), f"{name} is skipped but belongs to the thinker"
            continue
        for target in targets:
            filler.fill(name, torch.empty(shapes[name], device="meta"), target)  # checks the shape
    assert filler.unwritten() == []
    n_params = sum(p.numel() for p in model.parameters())
    assert 31.0e9 < n_params < 32.5e9  # the thinker: ~30B LLM + ~0.6B AuT + ~0.5B ViT
