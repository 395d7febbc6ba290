"""Qwen2.5-Omni's test kit: the tiny thinker of ``AVLLMConfig.tiny()`` (token ids: audio 200,
image 201, video 202, brackets 203-206, vocab 256), inputs built without a tokenizer, and the
transformers ``Qwen2_5OmniThinkerForConditionalGeneration`` as the reference.

Audio: Whisper, 25 tokens a second (0.04 s each). Video: 2 fps, 56 x 56 frames -> one frame group a
second of 2 x 2 merged tokens. With both, the audio sits inside the video's bracket, interleaved in
2-s chunks (each chunk's video tokens, then its audio tokens).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from cases import build_case as build_omni_case
from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.architectures.qwen.interleave import audio_in_video_runs
from hooked_avllm.components.rotary import rotary_mrope
from hooked_avllm.inputs import ModelInputs, concat_inputs
from hooked_avllm.towers.whisper_audio import audio_token_counts
from kits import ClipAnswers
from kits._hf_thinker import HFThinkerKit, features, rows
from reference_models import build_omni_thinker

PATCH_DIM = 3 * 2 * 14 * 14


def tiny_model(seed: int = 0, audio: bool = True, vision: bool = True, vocab_size: int | None = None) -> HookedAVLLM:
    """A random tiny thinker (2 LLM layers, d_model 64) in float32, eval mode (``audio=False``: the
    Qwen2.5-VL shape)."""
    cfg = AVLLMConfig.tiny(audio=audio, vision=vision)
    if vocab_size is not None:
        cfg = replace(cfg, text=replace(cfg.text, vocab_size=vocab_size))
    return HookedAVLLM.from_config(cfg, seed=seed).eval()


def clip_inputs(model: HookedAVLLM, *, video: bool = True, audio: bool = True, seconds: int = 3, seed: int = 0,
                audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
    """One row: text, then a clip (2 fps, 56x56 frames -> 2x2 tokens per frame group; audio at
    25 tokens/s) with audio interleaved when both are given, then text.

    ``audio_seed`` fixes the audio features separately, so an audio-only run and an audio+video
    run can carry the same audio (the patching setting).
    """
    g = torch.Generator().manual_seed(seed)
    ga = torch.Generator().manual_seed(audio_seed if audio_seed is not None else seed + 1000)
    tok, cfg = model.cfg.tokens, model.cfg
    frames = seconds * 100
    n_audio = int(audio_token_counts(torch.tensor([frames]))[0])
    grid = (seconds, 4, 4)
    kw: dict = {}
    if video and audio:
        runs = audio_in_video_runs(grid, 1.0, n_audio, position_id_per_second=cfg.position_id_per_second,
                                   seconds_per_chunk=cfg.seconds_per_chunk)
        body = [tok.vision_start, tok.audio_start]
        body += [t for kind, count in runs for t in [tok.video if kind == "video" else tok.audio] * count]
        body += [tok.audio_end, tok.vision_end]
    elif video:
        body = [tok.vision_start] + [tok.video] * (seconds * 4) + [tok.vision_end]
    else:
        body = [tok.audio_start] + [tok.audio] * n_audio + [tok.audio_end]
    ids = rows(prefix, g) + body + rows(suffix, g)
    if video:
        kw.update(pixel_values_videos=torch.randn(seconds * 16, PATCH_DIM, generator=g),
                  video_grid_thw=torch.tensor([grid]), video_second_per_grid=torch.tensor([1.0]))
    if audio:
        kw.update(input_features=features(frames, ga), feature_attention_mask=torch.ones(1, frames, dtype=torch.long))
    if kw:
        kw["use_audio_in_video"] = video and audio
    input_ids = torch.tensor([ids])
    return model.to_inputs(input_ids, torch.ones_like(input_ids), **kw)


def batch_inputs(model: HookedAVLLM, rows: list[ModelInputs], padding_side: str = "left") -> ModelInputs:
    """Pad several one-row inputs into one batch (media concatenated in row order)."""
    return concat_inputs(rows, padding_side=padding_side, pad_id=0)


class Qwen25OmniKit(HFThinkerKit):
    name = "qwen2_5_omni"
    other_length = dict(seconds=2)  # 2 s of audio and video instead of 3
    frames_per_group = 2  # temporal_patch_size: 2 frames a group
    audio_tokens_per_second = 25
    audio_inside_video_bracket = True
    answers = ClipAnswers(
        early_audio=2 * 50,  # two clips, 2 s each at 25 tokens/s
        other_row_audio=50,  # 2 s at 25/s
        window_audio=15,  # tokens at 0.52 .. 1.08 s
        audio_in_second_two=25,
        aligned_windows=(((0.0, 2.0), 50), 75, ((1.0, 1.5), 13, 1.0)),
        patching_counts=dict(audio=(75, 50), text=(11, 13), last_audio=93, two=61),
        clip_grid=(3, 2, 2),  # 3 s at 1 frame group a second of 2 x 2 merged cells
        other_clip_grid=(2, 2, 2),
        # 25 tokens a second, each 2-s chunk's video (2 frame groups of 6 x 8) then its audio
        interleaved_runs=[("video", 96), ("audio", 50)] * 2,
    )
    build_reference = staticmethod(build_omni_thinker)
    build_case = staticmethod(build_omni_case)

    def model(self, seed=0, *, audio=True, vision=True, vocab_size=None):
        return tiny_model(seed=seed, audio=audio, vision=vision, vocab_size=vocab_size)

    def clip(self, model, *, video=True, audio=True, seconds=3, seed=0, audio_seed=None, prefix=5, suffix=4):
        return clip_inputs(model, video=video, audio=audio, seconds=seconds, seed=seed, audio_seed=audio_seed,
                           prefix=prefix, suffix=suffix)

    def audio_token_times(self, n_tokens):
        return torch.arange(n_tokens) * 0.04  # Whisper: 0.04 s per token

    def decoder_rotary(self, text_cfg, position_ids):
        # M-RoPE over the three position rows, in sections
        return rotary_mrope(position_ids, text_cfg.d_head, text_cfg.rope_theta, text_cfg.mrope_section)

    def audio_in_video_runs(self, model, grid_thw, second_per_grid, n_audio):
        return audio_in_video_runs(grid_thw, second_per_grid, n_audio, position_id_per_second=model.cfg.position_id_per_second,
                                   seconds_per_chunk=model.cfg.seconds_per_chunk)


KIT = Qwen25OmniKit()
