"""The released checkpoints' own config and tensor-index files (tests/fixtures/hub)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.loading import WeightFiller, pick_architecture, pick_converter

EXPECTED = {  # (layers, d_model, heads, kv heads, d_mlp, vocab, vision out, audio out, tied)
    "Qwen__Qwen2.5-Omni-3B": (36, 2048, 16, 2, 11008, 151936, 2048, 2048, False),
    "Qwen__Qwen2.5-Omni-7B": (28, 3584, 28, 4, 18944, 152064, 3584, 3584, False),
    "Qwen__Qwen2.5-VL-3B-Instruct": (36, 2048, 16, 2, 11008, 151936, 2048, None, True),
    "Qwen__Qwen2.5-VL-7B-Instruct": (28, 3584, 28, 4, 18944, 152064, 3584, None, False),
}


def load_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_config_dimensions(hub_fixtures, name):
    config_json = load_json(hub_fixtures / name / "config.json")
    cfg = pick_architecture(config_json).config_from_hf(config_json)
    layers, d, heads, kv, mlp, vocab, v_out, a_out, tied = EXPECTED[name]
    t = cfg.text
    assert (t.n_layers, t.d_model, t.n_heads, t.n_kv_heads, t.d_mlp, t.vocab_size) == (layers, d, heads, kv, mlp, vocab)
    assert t.d_head == 128 and t.mrope_section == (16, 24, 24) and t.rope_theta == 1e6
    assert t.tie_word_embeddings == tied
    v = cfg.vision
    assert (v.depth, v.d_model, v.n_heads, v.d_mlp, v.out_dim, v.window_size) == (32, 1280, 16, 3420, v_out, 112)
    assert v.fullatt_block_indexes == (7, 15, 23, 31)
    if a_out is None:
        assert cfg.audio is None and cfg.position_id_per_second == 2.0
    else:
        a = cfg.audio
        assert (a.n_layers, a.d_model, a.n_heads, a.d_mlp, a.out_dim, a.n_window) == (32, 1280, 20, 5120, a_out, 100)
        assert cfg.position_id_per_second == 25.0
        assert (cfg.tokens.audio, cfg.tokens.audio_start, cfg.tokens.vision_start, cfg.tokens.image, cfg.tokens.video) == (
            151646, 151647, 151652, 151655, 151656)


def test_legacy_and_new_rope_spellings_agree(hub_fixtures):
    legacy = load_json(hub_fixtures / "Qwen__Qwen2.5-Omni-3B" / "config.json")
    modern = json.loads(json.dumps(legacy))
    text = modern["thinker_config"]["text_config"]
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": text.pop("rope_theta"),
                               "mrope_section": text.pop("rope_scaling")["mrope_section"]}
    from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf as convert
    assert convert(legacy) == convert(modern)


def reference_shapes(name: str, config_json: dict) -> dict[str, tuple[int, ...]]:
    """On-disk tensor name -> shape, from the Hugging Face model built on the meta device."""
    import transformers

    with torch.device("meta"):
        if config_json["model_type"] == "qwen2_5_omni":
            model = transformers.Qwen2_5OmniForConditionalGeneration(transformers.Qwen2_5OmniConfig(**config_json)).thinker
            prefix = "thinker."
        else:
            model = transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(**config_json))
            prefix = ""
    shapes = {}
    for module_name, p in model.named_parameters(remove_duplicate=False):
        # transformers 5.x module names -> the names on disk (see ARCHITECTURES.md)
        disk = re.sub(r"^model\.language_model\.", "model.", module_name)
        disk = re.sub(r"^model\.(visual|audio_tower)\.", r"\1.", disk)
        shapes[prefix + disk] = tuple(p.shape)
    return shapes


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_converter_maps_every_real_tensor(hub_fixtures, name):
    config_json = load_json(hub_fixtures / name / "config.json")
    converter = pick_converter(config_json)
    cfg = pick_architecture(config_json).config_from_hf(config_json)
    weight_map = load_json(hub_fixtures / name / "model.safetensors.index.json")["weight_map"]
    shapes = reference_shapes(name, config_json)
    with torch.device("meta"):
        model = HookedAVLLM(cfg)
    filler = WeightFiller(model)
    skipped = 0
    for tensor_name in weight_map:
        targets = converter.tensor_targets(tensor_name, cfg)
        assert targets is not None, f"{tensor_name} is not mapped"
        if not targets:
            skipped += 1
            assert tensor_name.startswith(("talker.", "token2wav.")) or tensor_name.endswith("audio_bos_eos_token.weight")
            continue
        assert tensor_name in shapes, f"{tensor_name} is not a parameter of the reference model"
        for target in targets:
            filler.fill(tensor_name, torch.empty(shapes[tensor_name], device="meta"), target)  # checks the shape
    for target in converter.implicit_zeros(cfg):
        filler.zero(target)
    assert filler.unwritten() == []  # nothing missing
    n_thinker = sum(1 for n in weight_map if not n.startswith(("talker.", "token2wav.")))
    assert n_thinker > 0 and (skipped > 0) == name.startswith("Qwen__Qwen2.5-Omni")


def test_tokenizer_is_loaded_with_the_checkpoint(tmp_path, hub_fixtures):
    from reference_models import build_omni_thinker

    build_omni_thinker("a").save_pretrained(tmp_path)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json", "chat_template.json"):
        (tmp_path / f).write_bytes((hub_fixtures / "Qwen__Qwen2.5-Omni-7B" / f).read_bytes())
    model = HookedAVLLM.from_pretrained(tmp_path)
    assert model.tokenizer is not None
    assert model.tokenizer.convert_tokens_to_ids("<|AUDIO|>") == 151646
