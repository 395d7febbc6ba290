"""MiniCPM-o 2.6's released files (``tests/fixtures/hub/openbmb__MiniCPM-o-2_6``): the real config
parses to the published dimensions, the real tokenizer config gives the layout's ids, and every
tensor a full-size checkpoint holds (the reference assembly's modules built at the real dimensions
on the meta device, under the released names; the hub index itself could not be found) maps onto
our parameters with its shape, filling every one; the TTS head is skipped by name."""

from __future__ import annotations

import json

import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.minicpm_o.config import MiniCPMTokenIds, config_from_hf, tokens_from_tokenizer_config
from hooked_avllm.loading import WeightFiller, pick_architecture
from minicpm_reference import ReferenceMiniCPMO

FOLDER = "openbmb__MiniCPM-o-2_6"


def load(hub, name: str) -> dict:
    return json.loads((hub / FOLDER / name).read_text())


def test_the_real_config_parses_to_the_published_dimensions(hub_fixtures):
    config = load(hub_fixtures, "config.json")
    assert pick_architecture(config).name == "minicpm_o"
    cfg = config_from_hf(config)
    t, v, r, a = cfg.text, cfg.vision.navit, cfg.vision.resampler, cfg.audio
    assert (t.n_layers, t.d_model, t.n_heads, t.n_kv_heads, t.d_head, t.d_mlp, t.vocab_size) == (28, 3584, 28, 4, 128, 18944, 151700)
    assert t.mrope_section is None and t.qkv_bias and not t.tie_word_embeddings and t.rope_theta == 1e6
    assert (v.n_layers, v.d_model, v.n_heads, v.d_mlp, v.grid, v.patch_size) == (27, 1152, 16, 4304, 70, 14)
    assert (r.n_queries, r.d_model, r.n_heads, r.kv_dim) == (64, 3584, 28, 1152)
    assert (a.n_layers, a.d_model, a.n_heads, a.d_mlp, a.n_mels, a.block_frames, a.pool_step, a.out_dim) == \
        (24, 1024, 16, 4096, 80, 50, 2, 3584)


def test_the_real_tokenizer_config_gives_the_layout_ids(hub_fixtures):
    assert tokens_from_tokenizer_config(load(hub_fixtures, "tokenizer_config.json")) == MiniCPMTokenIds()


def test_every_tensor_of_a_full_size_checkpoint_maps_and_fills_every_parameter(hub_fixtures):
    config = load(hub_fixtures, "config.json")
    cfg = config_from_hf(config)
    with torch.device("meta"):
        reference = ReferenceMiniCPMO(config, cfg.tokens, randomize=False)
        ours = HookedAVLLM(cfg)
    state = reference.released_state_dict()
    counts = {prefix: sum(v.numel() for k, v in state.items() if k.startswith(prefix))
              for prefix in ("llm.", "vpm.", "resampler.", "apm.", "audio_projection_layer.")}
    assert counts == {"llm.": 7_613_007_360, "vpm.": 417_792_240, "resampler.": 68_619_264, "apm.": 307_216_384,
                      "audio_projection_layer.": 16_522_240}  # ARCHITECTURES.md G section 1
    converter = ours.architecture.converter
    filler, skipped = WeightFiller(ours), []
    for name, tensor in state.items():
        targets = converter.tensor_targets(name, cfg)
        assert targets is not None, f"the converter does not know {name}"
        if not targets:
            skipped.append(name)
        for target in targets:
            filler.fill(name, tensor, target)
    for target in converter.implicit_zeros(cfg):
        filler.zero(target)
    assert filler.unwritten() == []
    assert skipped and all(name.startswith("tts.") for name in skipped)
    assert sum(p.numel() for p in ours.parameters()) == sum(counts.values()) + 24 * 1024  # + the key biases (zeros)
