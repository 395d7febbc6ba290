"""MiniCPM-o's activation cache on a whole model: a hook in every tower (the navit SigLIP, the
resampler's cross-attention pattern queries x patches, the Whisper encoder's block-causal patterns,
the pooled projector), and ``cache.select`` by modality, audio time, frame time and frame / slice
origin, all counted by hand from the inputs."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.minicpm_o.config import config_from_hf, tiny_config_json
from minicpm_cases import QUERIES, TOKENS, VOCAB, batch, case


@pytest.fixture(scope="module")
def model():
    return HookedAVLLM.from_config(config_from_hf(tiny_config_json(vocab_size=VOCAB), TOKENS), seed=0).eval()


@pytest.fixture(scope="module")
def omni_cache(model):
    ids, media = case("omni")  # 3 units of a 4 x 5-patch frame and 1.0, 1.0, 0.6 s of sound
    inputs = model.to_inputs(torch.tensor([ids]), None, **media)
    return inputs, model.run_with_cache(inputs)[1]


def test_every_tower_has_its_hooks_with_their_shapes(model, omni_cache):
    inputs, cache = omni_cache
    d_vision, d = model.cfg.vision.navit.d_model, model.cfg.d_model
    heads = model.cfg.vision.resampler.n_heads
    assert cache["vision.hook_patch_embed"].shape == (1, 60, d_vision)  # 3 slices x 4 x 5 patches, packed
    assert cache["vision.blocks.1.hook_resid_post"].shape == (1, 60, d_vision)
    assert cache["vision_proj.attn.hook_pattern"].shape == (3, heads, QUERIES, 20)  # [slice, head, query, patch]
    torch.testing.assert_close(cache["vision_proj.attn.hook_pattern"].sum(-1), torch.ones(3, heads, QUERIES))
    assert cache["vision_proj.hook_out"].shape == (3, QUERIES, d)
    # 2.6 s of sound: 260 mel frames -> 130 post-conv frames in 1-s (50-frame) attention blocks
    pattern = cache["audio.blocks.0.attn.hook_pattern"]
    assert pattern.shape[-2:] == (130, 130)
    assert float(pattern[0, :, 10, 50:].abs().max()) == 0.0  # the first second sees no later second
    assert float(pattern[0, :, 60, :100].sum(-1).min()) > 0.99  # the second second sees the first two
    assert cache["audio_proj.hook_out"].shape == (1, 65, d)  # pooled to 25 a second: 25 + 25 + 15
    assert cache["blocks.1.hook_resid_post"].shape == (1, inputs.input_ids.shape[1], d)


def test_select_by_modality_audio_time_and_frame(model, omni_cache):
    inputs, cache = omni_cache
    name = "blocks.1.hook_resid_post"
    assert cache.select(name, "video").shape == (3 * QUERIES, model.cfg.d_model)
    assert cache.select(name, "audio").shape == (65, model.cfg.d_model)
    assert cache.select(name, "audio", time=(1.0, 2.0)).shape[0] == 25  # the second second of sound
    assert cache.select(name, "audio", time=(2.0, 3.0)).shape[0] == 15  # its last 0.6 s
    # the recipe's frames sit at 1, 2, 2 s (the last unit repeats the previous frame)
    assert cache.select(name, "video", time=(0.5, 1.5)).shape[0] == QUERIES
    assert cache.select(name, "video", time=(1.5, 2.5)).shape[0] == 2 * QUERIES
    layout = cache.layout
    second_frame = layout.video & (layout.frame_group == 1)
    rows = cache.select(name, second_frame)
    positions = torch.nonzero(second_frame[0]).flatten()
    assert torch.equal(rows, cache[name][0, positions])
    unit = torch.nonzero(inputs.input_ids[0] == TOKENS.unit).flatten()
    assert positions.tolist() == list(range(int(unit[1]) + 2, int(unit[1]) + 2 + QUERIES))  # <unit><image> then the rows


def test_an_image_slice_and_a_padded_batch(model):
    input_ids, mask, media = batch([case("image", 1), case("audio", 2), case("text", 3)])
    inputs = model.to_inputs(input_ids, mask, **media)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n == "blocks.0.hook_resid_post")
    layout = cache.layout
    # the image: its overview (slice 0) and a 2 x 1 grid of cells (slices 1, 2), 8 rows each
    assert layout.frame_group[0][layout.image[0]].tolist() == [0] * QUERIES + [1] * QUERIES + [2] * QUERIES
    assert cache.select("blocks.0.hook_resid_post", "image", batch=0).shape[0] == 3 * QUERIES
    assert cache.select("blocks.0.hook_resid_post", "audio", batch=1).shape[0] == 57  # 2.3 s at 25 a second
    assert cache.select("blocks.0.hook_resid_post", "media", batch=2).shape[0] == 0
    assert cache.select("blocks.0.hook_resid_post", "audio", item=0).shape[0] == 57
