"""Tiny models and prepared inputs (with their TokenLayout) for the analysis tests.

All inputs are :class:`~hooked_avllm.inputs.ModelInputs` on ``AVLLMConfig.tiny()`` token ids
(audio 200, image 201, video 202, brackets 203-206, vocab 256), built without a tokenizer; the
``videollama2_*`` helpers build the same kind of inputs for a tiny VideoLLaMA2.1-AV (placeholders
253-255), whose layout comes from its prompt builder's segments; the ``qwen3_*`` helpers for a tiny
Qwen3-Omni thinker (same ids as the Qwen2.5 helpers, AuT audio at 13 tokens a second, 16-pixel
patches, DeepStack rows added after decoder layers 0 and 1, an 8-expert top-2 MoE in both layers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.architectures.qwen3_omni.config import config_from_hf as qwen3_config_from_hf
from hooked_avllm.architectures.qwen3_omni.config import tiny_config_json as qwen3_tiny_config_json
from hooked_avllm.architectures.qwen3_omni.positions import time_ordered_runs
from hooked_avllm.architectures.videollama2.config import tiny_config as tiny_videollama2_config
from hooked_avllm.architectures.videollama2.prompt import audio_segment, input_spec, visual_segment
from hooked_avllm.inputs import ModelInputs, TokenLayout, concat_inputs
from hooked_avllm.inputs.layout import Segment
from hooked_avllm.inputs.model_spec import ModelInputSpec
from hooked_avllm.inputs.interleave import audio_in_video_runs
from hooked_avllm.towers.aut_audio import aut_token_counts
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


# ----------------------------------------------------------------------------- VideoLLaMA2.1-AV


def videollama2_model(seed: int = 0, audio: bool = True, vision: bool = True) -> HookedAVLLM:
    """A random tiny VideoLLaMA2.1-AV (SigLIP 56² frames, 4 frames per video -> 2x2x2 tokens, a
    2-layer BEATs, a 2-layer Qwen2 with 1D rotary; vocab 256) in float32, eval mode."""
    return HookedAVLLM.from_config(tiny_videollama2_config(audio=audio, vision=vision), seed=seed).eval()


def videollama2_clip_inputs(
    model: HookedAVLLM,
    *,
    video: bool = True,
    audio: bool = True,
    audio_frames: int = 320,
    seed: int = 0,
    audio_seed: int | None = None,
    prefix: int = 5,
    suffix: int = 4,
) -> ModelInputs:
    """One row as VideoLLaMA2's prompt builder lays it out: text, the video tokens, then the audio
    tokens (BEATs patches of ``audio_frames`` fbank frames: 320 -> 20 x 8), then text.

    ``audio_seed`` fixes the fbank separately, so an audio-only run and an audio+video run carry
    the same audio (the patching setting).
    """
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    ga = torch.Generator().manual_seed(audio_seed if audio_seed is not None else seed + 1000)
    segments = [Segment.text(_text(prefix, g))]
    kw: dict = {}
    if video:
        frames = cfg.vision.num_frames
        # frames 0.5 s apart: frame group g (frames 2g, 2g + 1) at g seconds
        segments.append(visual_segment("video", cfg, torch.arange(frames) / 2, cfg.tokens.video))
        size = cfg.vision.siglip.image_size
        kw["pixel_values_videos"] = torch.randn(1, frames, 3, size, size, generator=g)
    if audio:
        segments.append(audio_segment(cfg, torch.arange(audio_frames) * 0.01, audio_frames, 0 if video else None))
        kw["input_features"] = 10 + 5 * torch.randn(1, audio_frames, 128, generator=ga)
    segments.append(Segment.text(_text(suffix, g)))
    layout = TokenLayout.from_segments([segments], input_spec(cfg), pad_id=cfg.tokens.pad or 0)
    return ModelInputs(input_ids=layout.input_ids.clone(), attention_mask=layout.attention_mask.clone(), layout=layout, **kw)


# ----------------------------------------------------------------------------- Qwen3-Omni

QWEN3_PATCH_DIM = 3 * 2 * 16 * 16  # temporal patch 2, 16-pixel patches
QWEN3_TOKEN_IDS = dict(audio_token_id=200, image_token_id=201, video_token_id=202, audio_start_token_id=203,
                       audio_end_token_id=204, vision_start_token_id=205, vision_end_token_id=206,
                       pad_token_id=0)  # the released pad (151643) lies outside the tiny vocabulary


def qwen3_model(seed: int = 0, audio: bool = True, vision: bool = True, vocab_size: int = 256) -> HookedAVLLM:
    """A random tiny Qwen3-Omni thinker (``tiny_config_json``: 2 LLM layers of d_model 64, each an
    8-expert top-2 MoE; a 3-layer ViT whose DeepStack taps 0 and 2 are added after decoder layers 0
    and 1; a 2-layer AuT) on the small token ids of the other Qwen helpers, float32, eval mode.
    ``audio`` / ``vision`` False drop that tower (a vision-less model has no DeepStack layer).

    Example:
        >>> qwen3_model(audio=False).audio is None
        True
    """
    config_json = qwen3_tiny_config_json(vocab_size=vocab_size)
    config_json.update(QWEN3_TOKEN_IDS)
    cfg = qwen3_config_from_hf(config_json)
    if not audio:
        cfg = dataclasses.replace(cfg, audio=None)
    if not vision:
        cfg = dataclasses.replace(cfg, vision=None)
    return HookedAVLLM.from_config(cfg, seed=seed).eval()


def qwen3_clip_inputs(
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
    input_ids = torch.tensor([_text(prefix, g) + body + _text(suffix, g)])
    kw: dict = {}
    if video:
        kw.update(pixel_values_videos=torch.randn(seconds * 16, QWEN3_PATCH_DIM, generator=g),
                  video_grid_thw=torch.tensor([grid]), video_second_per_grid=torch.tensor([1.0]))
    if audio:
        kw.update(input_features=_features(frames, ga), feature_attention_mask=torch.ones(1, frames, dtype=torch.long))
    return _with_model_layout(model, input_ids, torch.ones_like(input_ids), kw, use_audio_in_video=video and audio)


def _with_model_layout(model, input_ids, attention_mask, kw, use_audio_in_video: bool) -> ModelInputs:
    """Inputs with the layout the model's family reads from these ids and media (``model.layout_of``)."""
    layout = model.layout_of(input_ids, attention_mask, use_audio_in_video=use_audio_in_video, **kw)
    return ModelInputs(input_ids=input_ids, attention_mask=attention_mask, layout=layout,
                       use_audio_in_video=use_audio_in_video, **kw)


# ----------------------------------------------------------------------------- both families

FAMILIES = ("qwen2_5_omni", "videollama2", "qwen3_omni")
FBANK_FRAMES_PER_SECOND = 100  # 10-ms frames, Whisper/AuT log-mel and Kaldi fbank alike
AUT_TOKENS_PER_SECOND = 13  # AuT: 13 tokens per 100-frame (1-s) chunk


@dataclass(frozen=True)
class Family:
    """One family's tiny model and clip builders behind one signature, so an analysis test runs on
    each family with the same known answers.

    ``seconds`` is the audio length (100 feature frames a second: Qwen2.5-Omni 25 audio tokens a
    second; Qwen3-Omni 13 AuT tokens a second; VideoLLaMA2 one BEATs time patch of 8 bands per
    0.16 s). For the Qwen families it is also the video's length (one 2 x 2 frame group a second;
    with audio, Qwen2.5-Omni interleaves in 2-s chunks, Qwen3-Omni merges token by token in time
    order); a VideoLLaMA2 video is always its 4 frames (2 x 2 x 2 tokens), followed by its audio.

    Each family's builders are picked by name (``_pick``), so a new family cannot silently fall
    back to another's.

    Example:
        >>> Family("qwen3_omni").audio_token_times(3).tolist()  # doctest: +ELLIPSIS
        [0.0, 0.0769..., 0.1538...]
    """

    name: str

    def __post_init__(self):
        if self.name not in FAMILIES:
            raise ValueError(f"Family({self.name!r}): unknown family; use one of {FAMILIES}")

    def _pick(self, **by_family):
        """The value given for this family (every family must be given)."""
        return by_family[self.name]

    @property
    def other_length(self) -> dict:
        """Clip arguments for a second row of another sequence length (a left-padded batch). The Qwen
        families: 2 s of audio and video instead of 3. VideoLLaMA2 pads every audio track to one
        length (the release: 30 s), so rows of one batch share the audio length; its second row has a
        longer text prefix."""
        return self._pick(qwen2_5_omni=dict(seconds=2), qwen3_omni=dict(seconds=2), videollama2=dict(seconds=3, prefix=12))

    def model(self, seed: int = 0, audio: bool = True, vision: bool = True) -> HookedAVLLM:
        build = self._pick(qwen2_5_omni=tiny_model, qwen3_omni=qwen3_model, videollama2=videollama2_model)
        return build(seed=seed, audio=audio, vision=vision)

    def clip(self, model: HookedAVLLM, *, video: bool = True, audio: bool = True, seconds: int = 3, seed: int = 0,
             audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
        kw = dict(video=video, audio=audio, seed=seed, audio_seed=audio_seed, prefix=prefix, suffix=suffix)
        build = self._pick(
            qwen2_5_omni=lambda: clip_inputs(model, seconds=seconds, **kw),
            qwen3_omni=lambda: qwen3_clip_inputs(model, seconds=seconds, **kw),
            videollama2=lambda: videollama2_clip_inputs(model, audio_frames=seconds * FBANK_FRAMES_PER_SECOND, **kw),
        )
        return build()

    def text(self, model: HookedAVLLM, input_ids: torch.Tensor) -> ModelInputs:
        """Text-only inputs ``[1, n]`` with their layout (no media)."""
        mask = torch.ones_like(input_ids)
        build = self._pick(
            qwen2_5_omni=lambda: _with_layout(model, input_ids, mask, {}, False),
            qwen3_omni=lambda: _with_model_layout(model, input_ids, mask, {}, False),
            videollama2=lambda: videollama2_text_inputs(model, input_ids),
        )
        return build()

    def batch(self, model: HookedAVLLM, rows: list[ModelInputs], padding_side: str = "left") -> ModelInputs:
        build = self._pick(qwen2_5_omni=batch_inputs, qwen3_omni=batch_inputs, videollama2=videollama2_batch_inputs)
        return build(model, rows, padding_side)

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        """The clip time (s) of a clip's k-th audio token, from the tower's token rate alone (not
        from a layout): Whisper 0.04 s per token; AuT 13 tokens per 1-s chunk, so k / 13 s; BEATs
        0.16 s per time patch, 8 bands, time-major."""
        k = torch.arange(n_tokens)
        return self._pick(qwen2_5_omni=k * 0.04, qwen3_omni=k / AUT_TOKENS_PER_SECOND, videollama2=(k // 8) * 0.16)


def videollama2_text_inputs(model: HookedAVLLM, input_ids: torch.Tensor) -> ModelInputs:
    """Text-only VideoLLaMA2 inputs ``[1, n]``: one text segment."""
    layout = TokenLayout.from_segments([[Segment.text(input_ids[0].tolist())]], input_spec(model.cfg),
                                       pad_id=model.cfg.tokens.pad or 0)
    return ModelInputs(input_ids=layout.input_ids.clone(), attention_mask=layout.attention_mask.clone(), layout=layout)


def videollama2_batch_inputs(model: HookedAVLLM, rows: list[ModelInputs], padding_side: str = "left") -> ModelInputs:
    """Several one-row VideoLLaMA2 inputs as one padded batch, laid out the way the family's prompt
    builder lays out a batch (``model.prepare(prompt=[...])``): one ``TokenLayout.from_segments``
    over every row's segments, media stacked in row order. Each row's segments are read back from
    its own layout (text runs, then each media span with its times and grid cells)."""
    if len({tuple(item.input_features.shape[1:]) for item in rows if item.input_features is not None}) > 1:
        raise ValueError("rows of a VideoLLaMA2 batch share one audio length (the family pads every track to it)")
    all_segments, videos_before = [], 0
    for item in rows:
        layout = item.layout
        ids = layout.input_ids[0]
        at = int(torch.nonzero(layout.attention_mask[0]).flatten()[0])
        segments = []
        for span in sorted(layout.spans_of(batch=0), key=lambda s: s.start):
            if span.start > at:
                segments.append(Segment.text(ids[at : span.start].tolist()))
            p = span.positions
            time = (layout.audio_time if span.kind == "audio" else layout.video_time)[0, p]
            grid = {} if span.kind == "audio" else {k: getattr(layout, k)[0, p] for k in ("frame_group", "row", "col")}
            in_video = None if span.in_video is None else span.in_video + videos_before
            segments.append(Segment(span.kind, n_tokens=len(p), token_id=int(ids[p[0]]), time=time, in_video=in_video, **grid))
            at = span.stop
        if at < len(ids):
            segments.append(Segment.text(ids[at:].tolist()))
        videos_before += len(layout.spans_of("video", batch=0))
        all_segments.append(segments)
    layout = TokenLayout.from_segments(all_segments, rows[0].layout.spec, pad_id=model.cfg.tokens.pad or 0,
                                       padding_side=padding_side)
    media = {}
    for name in ("pixel_values", "pixel_values_videos", "input_features"):
        parts = [getattr(item, name) for item in rows if getattr(item, name) is not None]
        if parts:
            media[name] = torch.cat(parts)
    return ModelInputs(input_ids=layout.input_ids.clone(), attention_mask=layout.attention_mask.clone(), layout=layout, **media)


def videollama2_reference_pair(seed: int, folder) -> tuple:
    """The independent VideoLLaMA2.1-AV reference (``videollama2_reference.py``: transformers'
    Qwen2 and SigLIP, timm's RegStage, ESPnet's BEATs) and our model loaded from its checkpoint."""
    import warnings

    from videollama2_reference import ReferenceVideoLLaMA2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ESPnet / timm deprecations
        reference = ReferenceVideoLLaMA2(seed=seed)
    reference.save_checkpoint(folder)
    return reference, HookedAVLLM.from_pretrained(folder, load_tokenizer=False)


@torch.no_grad()
def videollama2_reference_embeds(reference, inputs: ModelInputs) -> torch.Tensor:
    """The reference LLM's input embeddings for our prepared inputs: its own token embeddings, and
    at the video and audio positions its own towers' outputs (row by row, in sequence order)."""
    embeds = reference.llm.get_input_embeddings()(inputs.input_ids).clone()
    layout, v, a = inputs.layout, 0, 0
    for b in range(embeds.shape[0]):
        for span in sorted(layout.spans_of(batch=b), key=lambda s: s.start):
            if span.kind == "video":
                embeds[b, span.positions] = reference.encode_frames(inputs.pixel_values_videos[v : v + 1])[0]
                v += 1
            elif span.kind == "audio":
                embeds[b, span.positions] = reference.encode_audio(inputs.input_features[a : a + 1])[0]
                a += 1
    return embeds
