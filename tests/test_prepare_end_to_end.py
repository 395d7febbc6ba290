"""``model.prepare`` -> forward / run_with_cache / generate, with the real Qwen2.5-Omni tokenizer."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.loading import load_tokenizer_from


def test_prepare_runs_through_the_model(hub_fixtures):
    tiny = AVLLMConfig.tiny()
    real_ids = dataclasses.replace(tiny.tokens, image=151655, video=151656, audio=151646, vision_start=151652,
                                   vision_end=151653, audio_start=151647, audio_end=151648, eos=(151645,))
    cfg = dataclasses.replace(tiny, text=dataclasses.replace(tiny.text, vocab_size=151936), tokens=real_ids)
    model = HookedAVLLM.from_config(cfg)
    model.tokenizer = load_tokenizer_from(hub_fixtures / "Qwen__Qwen2.5-Omni-7B")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, size=(6, 56, 84, 3), dtype=np.uint8)  # 3 s at 2 fps
    audio = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    from hooked_avllm.architectures.qwen import load_video

    clip = load_video(video, source_fps=2.0, audio=audio)  # frames with their soundtrack
    inputs = model.prepare(prompt="Describe what you see and hear.", video=clip, use_audio_in_video=True)
    logits, cache = model.run_with_cache(inputs)
    layout = cache.layout
    assert layout is inputs.layout
    n_pos = inputs.input_ids.shape[1]
    assert logits.shape == (1, n_pos, 151936)
    assert int(layout.audio.sum()) == 75  # 3 s at 25 tokens/s
    assert inputs.video_grid_thw[0, 0] == 3 and int(layout.video.sum()) == int(inputs.video_grid_thw.prod()) // 4
    # the layout's masks partition the positions, and its position ids are the ones the model used
    total = layout.text.long() + layout.audio.long() + layout.video.long() + layout.image.long() + layout.padding.long()
    assert torch.equal(total, torch.ones_like(total))
    ours, _ = model.compute_position_ids(inputs.input_ids, inputs.attention_mask, None, inputs.video_grid_thw,
                                         inputs.video_second_per_grid, inputs.feature_attention_mask,
                                         inputs.input_features, True)
    assert torch.equal(ours, layout.position_ids)
    audio_resid = cache["blocks.1.hook_resid_post"][layout.audio]
    assert audio_resid.shape == (75, 64)
    out = model.generate(inputs, max_new_tokens=3, eos_token_id=[])
    assert out.shape == (1, n_pos + 3)
