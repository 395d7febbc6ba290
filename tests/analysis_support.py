"""Tiny models and prepared inputs (with their TokenLayout) for the analysis tests.

All inputs are :class:`~hooked_avllm.inputs.ModelInputs` on ``AVLLMConfig.tiny()`` token ids
(audio 200, image 201, video 202, brackets 203-206, vocab 256), built without a tokenizer; the
``videollama2_*`` helpers build the same kind of inputs for a tiny VideoLLaMA2.1-AV (placeholders
253-255), whose layout comes from its prompt builder's segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.architectures.videollama2.config import tiny_config as tiny_videollama2_config
from hooked_avllm.architectures.videollama2.prompt import audio_segment, input_spec, visual_segment
from hooked_avllm.inputs import ModelInputs, TokenLayout, concat_inputs
from hooked_avllm.inputs.layout import Segment
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


# ----------------------------------------------------------------------------- both families

FAMILIES = ("qwen2_5_omni", "videollama2")
FBANK_FRAMES_PER_SECOND = 100  # 10-ms frames, Whisper log-mel and Kaldi fbank alike


@dataclass(frozen=True)
class Family:
    """One family's tiny model and clip builders behind one signature, so an analysis test runs on
    each family with the same known answers.

    ``seconds`` is the audio length (100 feature frames a second: Qwen2.5-Omni 25 audio tokens a
    second; VideoLLaMA2 one BEATs time patch of 8 bands per 0.16 s). For Qwen2.5-Omni it is also
    the video's length (one 2 x 2 frame group a second, audio interleaved in 2-s chunks); a
    VideoLLaMA2 video is always its 4 frames (2 x 2 x 2 tokens), followed by its audio.
    """

    name: str

    @property
    def other_length(self) -> dict:
        """Clip arguments for a second row of another sequence length (a left-padded batch). Qwen2.5-Omni:
        2 s of audio instead of 3. VideoLLaMA2 pads every audio track to one length (the release: 30 s),
        so rows of one batch share the audio length; its second row has a longer text prefix."""
        return dict(seconds=2) if self.is_qwen else dict(seconds=3, prefix=12)

    @property
    def is_qwen(self) -> bool:
        return self.name == "qwen2_5_omni"

    def model(self, seed: int = 0, audio: bool = True, vision: bool = True) -> HookedAVLLM:
        build = tiny_model if self.is_qwen else videollama2_model
        return build(seed=seed, audio=audio, vision=vision)

    def clip(self, model: HookedAVLLM, *, video: bool = True, audio: bool = True, seconds: int = 3, seed: int = 0,
             audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
        kw = dict(video=video, audio=audio, seed=seed, audio_seed=audio_seed, prefix=prefix, suffix=suffix)
        if self.is_qwen:
            return clip_inputs(model, seconds=seconds, **kw)
        return videollama2_clip_inputs(model, audio_frames=seconds * FBANK_FRAMES_PER_SECOND, **kw)

    def text(self, model: HookedAVLLM, input_ids: torch.Tensor) -> ModelInputs:
        """Text-only inputs ``[1, n]`` with their layout (no media)."""
        if self.is_qwen:
            return _with_layout(model, input_ids, torch.ones_like(input_ids), {}, False)
        layout = TokenLayout.from_segments([[Segment.text(input_ids[0].tolist())]], input_spec(model.cfg),
                                           pad_id=model.cfg.tokens.pad or 0)
        return ModelInputs(input_ids=layout.input_ids.clone(), attention_mask=layout.attention_mask.clone(), layout=layout)

    def batch(self, model: HookedAVLLM, rows: list[ModelInputs], padding_side: str = "left") -> ModelInputs:
        if self.is_qwen:
            return batch_inputs(model, rows, padding_side)
        return videollama2_batch_inputs(model, rows, padding_side)

    def audio_token_times(self, n_tokens: int) -> torch.Tensor:
        """The clip time (s) of a clip's k-th audio token, from the tower's token rate alone (not
        from a layout): Whisper 0.04 s per token; BEATs 0.16 s per time patch, 8 bands, time-major."""
        k = torch.arange(n_tokens)
        return k * 0.04 if self.is_qwen else (k // 8) * 0.16


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
