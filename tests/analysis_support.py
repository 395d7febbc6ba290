"""Tiny models and prepared inputs (with their TokenLayout) for the analysis tests.

All inputs are :class:`~hooked_avllm.inputs.ModelInputs` on ``AVLLMConfig.tiny()`` token ids
(audio 200, image 201, video 202, brackets 203-206, vocab 256), built without a tokenizer.
"""

from __future__ import annotations

import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.inputs import ModelInputs, TokenLayout, concat_inputs
from hooked_avllm.inputs.model_spec import ModelInputSpec
from hooked_avllm.inputs.interleave import audio_in_video_runs
from hooked_avllm.towers.whisper_audio import audio_token_counts

PATCH_DIM = 3 * 2 * 14 * 14


def tiny_model(seed: int = 0, audio: bool = True, vision: bool = True) -> HookedAVLLM:
    """A random tiny thinker (2 LLM layers, d_model 64) in float32, eval mode."""
    return HookedAVLLM.from_config(AVLLMConfig.tiny(audio=audio, vision=vision), seed=seed).eval()


def _text(n: int, g: torch.Generator) -> list[int]:
    return torch.randint(0, 199, (n,), generator=g).tolist()


def _features(frames: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(1, 128, frames, generator=g)


def clip_inputs(
    model: HookedAVLLM,
    *,
    video: bool = True,
    audio: bool = True,
    seconds: int = 3,
    seed: int = 0,
    audio_seed: int | None = None,
    prefix: int = 5,
    suffix: int = 4,
) -> ModelInputs:
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
    ids = _text(prefix, g) + body + _text(suffix, g)
    if video:
        kw.update(pixel_values_videos=torch.randn(seconds * 16, PATCH_DIM, generator=g),
                  video_grid_thw=torch.tensor([grid]), video_second_per_grid=torch.tensor([1.0]))
    if audio:
        kw.update(input_features=_features(frames, ga), feature_attention_mask=torch.ones(1, frames, dtype=torch.long))
    input_ids = torch.tensor([ids])
    return _with_layout(model, input_ids, torch.ones_like(input_ids), kw, use_audio_in_video=video and audio)


def batch_inputs(model: HookedAVLLM, rows: list[ModelInputs], padding_side: str = "left") -> ModelInputs:
    """Pad several one-row inputs into one batch (media concatenated in row order)."""
    return concat_inputs(rows, padding_side=padding_side, pad_id=0)


def _with_layout(model, input_ids, attention_mask, kw, use_audio_in_video: bool) -> ModelInputs:
    counts = None
    if kw.get("feature_attention_mask") is not None:
        counts = audio_token_counts(kw["feature_attention_mask"].sum(-1))
    layout = TokenLayout.from_input_ids(
        input_ids, attention_mask, ModelInputSpec.from_config(model.cfg),
        image_grid_thw=kw.get("image_grid_thw"), video_grid_thw=kw.get("video_grid_thw"),
        video_second_per_grid=kw.get("video_second_per_grid"), audio_token_counts=counts,
        use_audio_in_video=use_audio_in_video,
    )
    return ModelInputs(input_ids=input_ids, attention_mask=attention_mask, layout=layout,
                       use_audio_in_video=use_audio_in_video, **kw)
