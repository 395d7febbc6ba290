"""VideoLLaMA2.1-AV's test kit: a tiny model (SigLIP 56² frames, 4 frames per video -> 2 x 2 x 2
tokens, a 2-layer BEATs, a 2-layer Qwen2 with 1D rotary; vocab 256, placeholders 253-255) whose
layout comes from its prompt builder's segments, and a reference assembled from independent parts
(``videollama2_reference.py``: transformers' Qwen2 and SigLIP, timm's RegStage, ESPnet's BEATs) whose
LLM reads embeddings from its own embedding table and towers.

Audio: BEATs, one time patch of 8 bands per 0.16 s, time-major. Video: always its 4 frames, followed
(not bracketed) by the audio tokens. Every audio track of a batch has one length (the release pads
to 30 s), so a second row of another length has a longer text prefix.
"""

from __future__ import annotations

import warnings

import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.videollama2.config import tiny_config
from hooked_avllm.architectures.videollama2.prompt import audio_segment, input_spec, visual_segment
from hooked_avllm.components.rotary import rotary_1d
from hooked_avllm.inputs import ModelInputs, Segment, TokenLayout
from kits import ClipAnswers, FamilyKit
from kits._hf_thinker import rows
from parity import reference_pair

FBANK_FRAMES_PER_SECOND = 100  # 10-ms Kaldi fbank frames


def videollama2_model(seed: int = 0, audio: bool = True, vision: bool = True, vocab_size: int | None = None) -> HookedAVLLM:
    """A random tiny VideoLLaMA2.1-AV in float32, eval mode (a larger ``vocab_size`` moves the
    placeholders to the top of the larger vocabulary)."""
    cfg = tiny_config(audio=audio, vision=vision) if vocab_size is None else tiny_config(vocab_size=vocab_size, audio=audio, vision=vision)
    return HookedAVLLM.from_config(cfg, seed=seed).eval()


def videollama2_clip_inputs(model: HookedAVLLM, *, video: bool = True, audio: bool = True, audio_frames: int = 320,
                            seed: int = 0, audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
    """One row as VideoLLaMA2's prompt builder lays it out: text, the video tokens, then the audio
    tokens (BEATs patches of ``audio_frames`` fbank frames: 320 -> 20 x 8), then text.

    ``audio_seed`` fixes the fbank separately, so an audio-only run and an audio+video run carry
    the same audio (the patching setting).
    """
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    ga = torch.Generator().manual_seed(audio_seed if audio_seed is not None else seed + 1000)
    segments = [Segment.text(rows(prefix, g))]
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
    segments.append(Segment.text(rows(suffix, g)))
    layout = TokenLayout.from_segments([segments], pad_id=cfg.tokens.pad or 0)
    return ModelInputs(layout.input_ids.clone(), layout.attention_mask.clone(), layout, kw, input_spec(cfg))


def videollama2_text_inputs(model: HookedAVLLM, input_ids: torch.Tensor) -> ModelInputs:
    """Text-only VideoLLaMA2 inputs ``[1, n]``: one text segment."""
    layout = TokenLayout.from_segments([[Segment.text(input_ids[0].tolist())]], pad_id=model.cfg.tokens.pad or 0)
    return ModelInputs(layout.input_ids.clone(), layout.attention_mask.clone(), layout, spec=input_spec(model.cfg))


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
    layout = TokenLayout.from_segments(all_segments, pad_id=model.cfg.tokens.pad or 0, padding_side=padding_side)
    media = {}
    for name in ("pixel_values", "pixel_values_videos", "input_features"):
        parts = [getattr(item, name) for item in rows if getattr(item, name) is not None]
        if parts:
            media[name] = torch.cat(parts)
    return ModelInputs(layout.input_ids.clone(), layout.attention_mask.clone(), layout, media, input_spec(model.cfg))


def videollama2_reference_pair(seed: int, folder) -> tuple:
    """The independent VideoLLaMA2.1-AV reference and our model loaded from its checkpoint."""
    from videollama2_reference import ReferenceVideoLLaMA2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ESPnet / timm deprecations
        reference = ReferenceVideoLLaMA2(seed=seed)
    return reference_pair(reference, folder, load_tokenizer=False)


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


class VideoLLaMA2Kit(FamilyKit):
    name = "videollama2"
    # rows of one batch share the audio length (the release pads every track to 30 s): the second
    # row has a longer text prefix instead
    other_length = dict(seconds=3, prefix=12)
    frames_per_group = 2  # the STC sampler merges 2 frames
    audio_tokens_per_second = 50  # 6.25 time patches a second, 8 bands each
    audio_inside_video_bracket = False
    lays_out_bare_ids = False
    release_video_grid = (8, 13, 13)  # 16 frames of 27 x 27 SigLIP patches -> the STC connector's 8 x 13 x 13
    reference_generates_prompt = False  # the reference LLM generates from embeddings: new tokens only
    answers = ClipAnswers(
        early_audio=2 * 13 * 8,  # BEATs: time patches 0, 0.16 .. 1.92 s of each 3-s clip, 8 bands each
        other_row_audio=18 * 8,  # 3 s of fbank = 18 time patches x 8 bands
        window_audio=3 * 8,  # patches at 0.64, 0.80, 0.96 s
        audio_in_second_two=6 * 8,
        # the 2-s clip's BEATs patches end at 1.92 s (12 whole patches of 0.16 s): its common window
        # with the 3-s clip stops there
        aligned_windows=(((0.0, 1.9), 12 * 8), 18 * 8, ((1.0, 1.5), 3 * 8, float(torch.tensor(7.0) * 0.16))),
        # no brackets: the text target is the audio+video clip with 2 more prompt tokens
        patching_counts=dict(audio=(144, 96), text=(9, 11), last_audio=156, two=105),
        clip_grid=(2, 2, 2),  # the STC connector makes 4 frames of 4 x 4 SigLIP patches into 2 x 2 x 2 tokens
        other_clip_grid=(2, 2, 2),
    )

    def model(self, seed=0, *, audio=True, vision=True, vocab_size=None):
        return videollama2_model(seed=seed, audio=audio, vision=vision, vocab_size=vocab_size)

    def clip(self, model, *, video=True, audio=True, seconds=3, seed=0, audio_seed=None, prefix=5, suffix=4):
        return videollama2_clip_inputs(model, video=video, audio=audio, audio_frames=seconds * FBANK_FRAMES_PER_SECOND,
                                       seed=seed, audio_seed=audio_seed, prefix=prefix, suffix=suffix)

    def text(self, model, input_ids):
        return videollama2_text_inputs(model, input_ids)

    def batch(self, model, rows, padding_side="left"):
        return videollama2_batch_inputs(model, rows, padding_side)

    def audio_token_times(self, n_tokens):
        return (torch.arange(n_tokens) // 8) * 0.16  # BEATs: 0.16 s per time patch, 8 bands, time-major

    def decoder_rotary(self, text_cfg, position_ids):
        return rotary_1d(position_ids[0], text_cfg.d_head, text_cfg.rope_theta)  # 1D rotary over the one row

    # ---- the reference: its LLM on its own embeddings (text and towers)
    def reference_pair(self, seed, folder, variant="a"):
        return videollama2_reference_pair(seed=seed, folder=folder)

    def reference_forward(self, reference, inputs, mask):
        return reference.llm(inputs_embeds=videollama2_reference_embeds(reference, inputs), attention_mask=mask,
                             position_ids=inputs.layout.position_ids[0], output_hidden_states=True)

    def reference_decoder(self, reference, inputs):
        return reference.llm.model, inputs.layout.position_ids[0]  # Qwen2: one row of 1D positions

    def reference_generator(self, reference, inputs):
        return reference.llm, dict(inputs_embeds=videollama2_reference_embeds(reference, inputs),
                                   attention_mask=inputs.attention_mask)

    def generation_case(self, ours, case, seed, padding_side="left"):
        """A video with its sound track (its video tokens, then its audio tokens), a padded batch (that
        clip and an audio-only clip with a longer prompt), or text."""
        if case == "audio_in_video":
            return self.clip(ours, seed=seed)
        if case == "padded_batch":
            rows = [self.clip(ours, seed=seed), self.clip(ours, video=False, seed=seed + 1, prefix=9)]
            return self.batch(ours, rows, padding_side)
        if case == "text":
            return self.text(ours, torch.randint(0, 199, (1, 11), generator=torch.Generator().manual_seed(seed)))
        raise KeyError(case)


KIT = VideoLLaMA2Kit()
