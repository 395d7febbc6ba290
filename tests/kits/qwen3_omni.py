"""Qwen3-Omni's test kit: a tiny thinker (``tiny_config_json``: 2 LLM layers of d_model 64, each an
8-expert top-2 MoE; a 3-layer ViT whose DeepStack taps 0 and 2 are added after decoder layers 0 and
1; a 2-layer AuT) on the same small token ids as the Qwen2.5-Omni kit, and the transformers
``Qwen3OmniMoeThinkerForConditionalGeneration`` as the reference.

Audio: AuT, 13 tokens per 100-frame (1-s) chunk. Video: 2 fps, 64 x 64 frames, 16-pixel patches ->
one frame group a second of 2 x 2 merged tokens. With both, the audio sits inside the video's
bracket, merged token by token in time order.
"""

from __future__ import annotations

import dataclasses

import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.qwen3_omni.config import config_from_hf, tiny_config_json
from hooked_avllm.architectures.qwen3_omni.positions import time_ordered_runs
from hooked_avllm.components.rotary import rotary_mrope_interleaved
from hooked_avllm.inputs import ModelInputs
from hooked_avllm.towers.aut_audio import aut_token_counts
from kits import ClipAnswers
from kits._hf_thinker import HFThinkerKit, features, rows
from qwen3_reference import build_case as build_qwen3_case
from qwen3_reference import build_thinker

PATCH_DIM = 3 * 2 * 16 * 16  # temporal patch 2, 16-pixel patches
TOKEN_IDS = dict(audio_token_id=200, image_token_id=201, video_token_id=202, audio_start_token_id=203,
                 audio_end_token_id=204, vision_start_token_id=205, vision_end_token_id=206,
                 pad_token_id=0)  # the released pad (151643) lies outside the tiny vocabulary
AUT_TOKENS_PER_SECOND = 13  # AuT: 13 tokens per 100-frame (1-s) chunk


def qwen3_model(seed: int = 0, audio: bool = True, vision: bool = True, vocab_size: int = 256) -> HookedAVLLM:
    """A random tiny Qwen3-Omni thinker on the small token ids, float32, eval mode. ``audio`` /
    ``vision`` False drop that tower (a vision-less model has no DeepStack layer).

    Example:
        >>> qwen3_model(audio=False).audio is None
        True
    """
    config_json = tiny_config_json(vocab_size=vocab_size)
    config_json.update(TOKEN_IDS)
    cfg = config_from_hf(config_json)
    if not audio:
        cfg = dataclasses.replace(cfg, audio=None)
    if not vision:
        cfg = dataclasses.replace(cfg, vision=None)
    return HookedAVLLM.from_config(cfg, seed=seed).eval()


def qwen3_clip_inputs(model: HookedAVLLM, *, video: bool = True, audio: bool = True, seconds: int = 3, seed: int = 0,
                      audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
    """One Qwen3-Omni row: text, a clip, text. The video is at 2 fps with one frame group (2 frames)
    a second (``video_second_per_grid`` 1.0), 64x64 frames -> 2x2 merged tokens per group; the audio
    is ``seconds * 100`` mel frames -> 13 AuT tokens a second. With both, the audio-in-video block
    ``[vision_start, audio_start, <merged>, audio_end, vision_end]`` merges the tokens one by one in
    time order (a frame group's 4 tokens at id ``13 g`` go before audio token ``13 g``).

    ``audio_seed`` fixes the audio features separately (the patching setting)."""
    g = torch.Generator().manual_seed(seed)
    ga = torch.Generator().manual_seed(audio_seed if audio_seed is not None else seed + 1000)
    tok, spec = model.cfg.tokens, model.architecture.input_spec(model.cfg)
    frames = seconds * 100
    n_audio = int(aut_token_counts(torch.tensor([frames]))[0])
    grid = (seconds, 4, 4)
    if video and audio:
        runs = time_ordered_runs(grid, 1.0, n_audio, spec)
        merged = [t for kind, count in runs for t in [tok.video if kind == "video" else tok.audio] * count]
        body = [tok.vision_start, tok.audio_start] + merged + [tok.audio_end, tok.vision_end]
    elif video:
        body = [tok.vision_start] + [tok.video] * (seconds * 4) + [tok.vision_end]
    else:
        body = [tok.audio_start] + [tok.audio] * n_audio + [tok.audio_end]
    input_ids = torch.tensor([rows(prefix, g) + body + rows(suffix, g)])
    kw: dict = {}
    if video:
        kw.update(pixel_values_videos=torch.randn(seconds * 16, PATCH_DIM, generator=g),
                  video_grid_thw=torch.tensor([grid]), video_second_per_grid=torch.tensor([1.0]))
    if audio:
        kw.update(input_features=features(frames, ga), feature_attention_mask=torch.ones(1, frames, dtype=torch.long))
    if kw:
        kw["use_audio_in_video"] = video and audio
    return model.to_inputs(input_ids, torch.ones_like(input_ids), **kw)


class Qwen3OmniKit(HFThinkerKit):
    name = "qwen3_omni"
    other_length = dict(seconds=2)  # 2 s of audio and video instead of 3
    frames_per_group = 2  # temporal_patch_size: 2 frames a group
    audio_tokens_per_second = AUT_TOKENS_PER_SECOND
    audio_inside_video_bracket = True
    answers = ClipAnswers(
        early_audio=2 * 26,  # AuT: tokens k / 13 s < 2 s, k = 0 .. 25, of each clip (3 s and 2 s)
        other_row_audio=26,  # 2 s at 13/s
        window_audio=8,  # k / 13 in [0.5, 1.1): k = 7 .. 14 (0.54 .. 1.08 s)
        audio_in_second_two=13,
        # AuT: token k at k / 13 s; [0, 2) holds k = 0 .. 25, [1, 1.5) k = 13 .. 19 (token 13 at 1 s)
        aligned_windows=(((0.0, 2.0), 26), 39, ((1.0, 1.5), 7, 1.0)),
        # the target: 5 text, 2 openers, then per second a frame group's 4 video tokens and 13 audio
        # tokens (positions 7 .. 57), 2 closers, 4 text; the 2-s run is 5 + 1 + 26 + 1 + 4 tokens
        patching_counts=dict(audio=(39, 26), text=(11, 13), last_audio=57, two=37),
        clip_grid=(3, 2, 2),  # 3 s at 1 frame group a second of 2 x 2 merged cells
        other_clip_grid=(2, 2, 2),
        # 13 AuT tokens a second, each frame group's 48 tokens before the audio token of its second
        interleaved_runs=[("video", 48), ("audio", 13)] * 4,
    )
    build_reference = staticmethod(build_thinker)  # 3 MoE layers, DeepStack into layers 0-1
    build_case = staticmethod(build_qwen3_case)

    def model(self, seed=0, *, audio=True, vision=True, vocab_size=None):
        return qwen3_model(seed=seed, audio=audio, vision=vision, vocab_size=256 if vocab_size is None else vocab_size)

    def clip(self, model, *, video=True, audio=True, seconds=3, seed=0, audio_seed=None, prefix=5, suffix=4):
        return qwen3_clip_inputs(model, video=video, audio=audio, seconds=seconds, seed=seed, audio_seed=audio_seed,
                                 prefix=prefix, suffix=suffix)

    def audio_token_times(self, n_tokens):
        return torch.arange(n_tokens) / AUT_TOKENS_PER_SECOND  # 13 tokens per 1-s chunk: k / 13 s

    def decoder_rotary(self, text_cfg, position_ids):
        # interleaved M-RoPE over the three (float) position rows
        return rotary_mrope_interleaved(position_ids, text_cfg.d_head, text_cfg.rope_theta, text_cfg.mrope_section)

    def audio_in_video_runs(self, model, grid_thw, second_per_grid, n_audio):
        return time_ordered_runs(grid_thw, second_per_grid, n_audio, model.architecture.input_spec(model.cfg))


KIT = Qwen3OmniKit()
