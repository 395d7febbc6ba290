"""``model.prepare`` for Qwen3-Omni: its chat template, AuT token counts, 16-pixel patches, the
token-by-token audio-in-video merge and its float position ids, checked against transformers'
pieces (``WhisperFeatureExtractor``, ``Qwen2VLImageProcessorPil``, the real chat template) and
the reference thinker run on the prepared tensors.

The released checkpoint's tokenizer files are its ``tokenizer_config.json`` and
``chat_template.json`` (tests/fixtures/hub) over the Qwen2 BPE vocabulary it shares with
Qwen2.5-Omni (that fixture's ``vocab.json``/``merges.txt``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from parity import load_ours, save_released
from qwen3_reference import audio_in_video_body, audio_tokens
from transformers import Qwen2VLImageProcessorPil, WhisperFeatureExtractor

from hooked_avllm.architectures.qwen3_omni.config import tiny_config_json
from hooked_avllm.architectures.qwen import load_video
from hooked_avllm.inputs import InputError

QWEN3 = "Qwen__Qwen3-Omni-30B-A3B-Instruct"
IMAGE, VIDEO, AUDIO, VISION_START, VISION_END, AUDIO_START, AUDIO_END = 151655, 151656, 151675, 151652, 151653, 151669, 151670


def tokenizer_files(folder, hub_fixtures) -> None:
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((hub_fixtures / "Qwen__Qwen2.5-Omni-7B" / name).read_bytes())
    for name in ("tokenizer_config.json", "chat_template.json"):
        (folder / name).write_bytes((hub_fixtures / QWEN3 / name).read_bytes())


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hub_fixtures):
    """A tiny reference thinker with the released token ids and vocabulary, saved with the real
    tokenizer files and loaded by our from_pretrained."""
    from reference_models import randomize_
    from transformers import (
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
    )

    config = tiny_config_json()
    config["text_config"]["hidden_size"] = 32  # keep the 152k-row embedding small
    config["text_config"]["num_attention_heads"], config["text_config"]["num_key_value_heads"] = 2, 1
    config["audio_config"]["output_dim"] = config["vision_config"]["out_hidden_size"] = 32
    config.pop("model_type"), config.pop("architectures")
    torch.manual_seed(0)
    reference = Qwen3OmniMoeThinkerForConditionalGeneration(Qwen3OmniMoeThinkerConfig(**config)).eval()
    randomize_(reference, 5)
    folder = tmp_path_factory.mktemp("qwen3_real_ids")
    save_released(reference, folder)
    tokenizer_files(folder, hub_fixtures)
    return reference, load_ours(folder)


def rendered(model, content: list[dict]) -> str:
    return model.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)


def expand(ids: list[int], fills: list[list[int]]) -> list[int]:
    """Replace each bracketed placeholder, in order, with its tokens (the processor's expansion)."""
    out, fills = [], list(fills)
    for token in ids:
        out += fills.pop(0) if token in (IMAGE, VIDEO, AUDIO) else [token]
    return out


def test_image_and_audio_prompt_matches_the_processor_pieces(pair):
    reference, ours = pair
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (70, 100, 3), dtype=np.uint8)
    wave = (rng.standard_normal(16000 * 2 + 333) * 0.1).astype(np.float32)  # 2.02 s: a partial last AuT chunk
    inputs = ours.prepare(prompt="What is this?", images=image, audio=wave)

    processor = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2, min_pixels=3136, max_pixels=12845056)
    expected_image = processor(images=[Image.fromarray(image)], return_tensors="pt")
    assert torch.equal(inputs.image_grid_thw, expected_image["image_grid_thw"])
    assert (inputs.pixel_values - expected_image["pixel_values"]).abs().max() < 1e-5
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, n_fft=400)
    expected_audio = extractor(wave, sampling_rate=16000, padding=True, truncation=False, return_attention_mask=True, return_tensors="pt")
    assert torch.equal(inputs.feature_attention_mask, expected_audio["attention_mask"])
    assert (inputs.input_features - expected_audio["input_features"]).abs().max() < 1e-4

    template = ours.tokenizer(rendered(ours, [{"type": "image"}, {"type": "audio"}, {"type": "text", "text": "What is this?"}]),
                              add_special_tokens=False).input_ids
    n_image = int(expected_image["image_grid_thw"].prod()) // 4
    n_audio = audio_tokens(int(expected_audio["attention_mask"].sum()))
    assert n_audio == int(inputs.layout.audio.sum()) == 13 * 2 + 1  # 202 frames: two 100-frame chunks + a 2-frame tail (1 token)
    assert inputs.input_ids[0].tolist() == expand(template, [[IMAGE] * n_image, [AUDIO] * n_audio])
    assert not inputs.input_ids[0].tolist()[:3] == ours.tokenizer("<|im_start|>system", add_special_tokens=False).input_ids  # no default system prompt

    with torch.no_grad():
        ref = reference(**inputs.model_kwargs()).logits
        logits = ours(inputs)
    assert (logits - ref).abs().max() < 1e-4


def test_audio_in_video_is_merged_in_time_order_and_runs_like_the_reference(pair):
    reference, ours = pair
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (6, 64, 96, 3), dtype=np.uint8)  # 3 s at 2 fps -> 3 frame groups
    track = (rng.standard_normal(16000 * 3 + 800) * 0.1).astype(np.float32)
    clip = load_video(frames, ours.preprocessor, source_fps=2.0, audio=track)
    inputs = ours.prepare(prompt="Describe what you see and hear.", video=clip, use_audio_in_video=True)
    grid = tuple(inputs.video_grid_thw[0].tolist())
    n_audio = audio_tokens(int(inputs.feature_attention_mask.sum()))
    assert float(inputs.video_second_per_grid[0]) == 1.0 and grid[0] == 3
    ids = inputs.input_ids[0].tolist()
    start = ids.index(VISION_START)
    body = audio_in_video_body(grid, 1.0, n_audio)
    body = [VIDEO if t == 202 else AUDIO for t in body]  # the helper writes the small test ids
    assert ids[start : start + len(body) + 4] == [VISION_START, AUDIO_START, *body, AUDIO_END, VISION_END]

    kwargs = inputs.model_kwargs()
    with torch.no_grad():
        ref = reference(**kwargs).logits
        logits = ours(inputs)
    assert (logits - ref).abs().max() < 1e-4
    ref_positions, _ = reference.model.get_rope_index(
        inputs.input_ids, None, inputs.video_grid_thw, inputs.attention_mask, True,
        inputs.feature_attention_mask.sum(-1), inputs.video_second_per_grid)
    assert torch.equal(inputs.layout.position_ids, ref_positions.float())


def test_a_padded_batch_of_prompts_generates_like_the_reference(pair):
    reference, ours = pair
    rng = np.random.default_rng(2)
    wave = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    inputs = ours.prepare(prompt=["Listen.", "Look at this image and tell me about it."], audio=[wave, None], images=[None, image])
    assert inputs.attention_mask[0, 0] == 1 and inputs.attention_mask[1, 0] == 0 or inputs.attention_mask[0, 0] == 0
    with torch.no_grad():
        ref = reference.generate(**inputs.model_kwargs(), max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=151643)
    assert torch.equal(ours.generate(inputs, max_new_tokens=5, eos_token_id=[]), ref)


def test_media_loaded_for_another_model_is_refused_with_directions(pair):
    _, ours = pair
    frames = np.zeros((4, 64, 96, 3), dtype=np.uint8)
    clip = load_video(frames, source_fps=2.0)  # the default (Qwen2.5, 28-pixel) settings
    with pytest.raises(InputError, match=r"model.preprocessor"):
        ours.prepare(prompt="Describe.", video=clip, use_audio_in_video=False)


def test_config_round_trips_through_to_dict(pair):
    _, ours = pair
    again = ours.architecture.config_from_dict(ours.cfg.to_dict())
    assert again == ours.cfg
