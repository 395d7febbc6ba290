"""VideoLLaMA2.1-AV's prompt builder: a Qwen2 chat turn with one media placeholder, expanded into
segments whose counts and token origins the preprocessing knows, so the layout is built, not parsed.

The released inference puts ``<video>`` (a video, with or without sound), ``<audio>`` or
``<image>`` plus a newline before the user's text, renders the Qwen2 chat template (system
"You are a helpful assistant.") and replaces the tag with the media features: for a video with
sound, its video tokens then its audio tokens.

Example:
    >>> inputs = model.prepare(prompt="What is happening?", video="clip.mp4")  # doctest: +SKIP
    >>> inputs.layout.video.sum(), inputs.layout.audio.sum()  # 8 x 13 x 13 and 187 x 8  # doctest: +SKIP
    (tensor(1352), tensor(1496))
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from hooked_avllm.architectures.videollama2.preprocess import (
    audio_stream,
    load_audio_waveform,
    load_frames,
    load_image_pixels,
    video_audio_clips,
)
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import Segment, TokenLayout
from hooked_avllm.inputs.model_spec import MediaTokens, ModelInputSpec
from hooked_avllm.inputs.processor import ModelInputs

SYSTEM_PROMPT = "You are a helpful assistant."
MODAL_TAGS = ("<video>", "<audio>", "<image>")


def input_spec(cfg: AVLLMConfig) -> ModelInputSpec:
    """The input pipeline's view of a VideoLLaMA2 config (placeholder ids, padding id, system prompt)."""
    t = cfg.tokens
    return ModelInputSpec(
        family="videollama2",
        tokens=MediaTokens(image=t.image, video=t.video, audio=t.audio),
        max_positions=cfg.text.max_position_embeddings,
        pad_token_id=t.pad if t.pad is not None else 0,
        default_system_prompt=SYSTEM_PROMPT,
    )


def render_chat(messages: list[dict], system_prompt: str | None, add_generation_prompt: bool = True) -> str:
    """The Qwen2 chat template's text for ``messages`` (``{"role", "content": str}``)."""
    text = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if system_prompt else ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise InputError(f"chat messages must be {{'role': ..., 'content': str}}; got {message!r}")
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _tag_for(has_video: bool, has_audio: bool, has_image: bool) -> str | None:
    if has_image and (has_video or has_audio):
        raise InputError("VideoLLaMA2 takes one medium per prompt: an image, a video (with or without sound) or an audio clip")
    return "<video>" if has_video else "<audio>" if has_audio else "<image>" if has_image else None


def _with_tag(prompt: Any, tag: str | None, chat_template: bool) -> Any:
    """Put the modality tag first in the (first user) text unless the prompt already holds it."""
    if tag is None:
        return prompt
    if isinstance(prompt, str):
        return prompt if tag in prompt or not chat_template else f"{tag}\n{prompt}"
    messages = [dict(m) for m in prompt]
    if not any(tag in str(m.get("content", "")) for m in messages):
        first = next((m for m in messages if m.get("role") == "user"), None)
        if first is None:
            raise InputError("the chat messages have no user message to put the media in")
        first["content"] = f"{tag}\n{first['content']}"
    return messages


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _visual_segment(kind: str, cfg: AVLLMConfig, frame_times: torch.Tensor | None, token_id: int) -> Segment:
    t, h, w = cfg.vision.token_grid()
    order = torch.arange(t * h * w)
    group = order // (h * w)
    time = None
    if frame_times is not None:  # a group merges downsample[0] consecutive frames: its first frame's time
        time = frame_times[group * cfg.vision.stc.downsample[0]]
    return Segment(kind, n_tokens=t * h * w, token_id=token_id, time=time, frame_group=group,
                   row=(order % (h * w)) // w, col=order % w)


def _audio_segment(cfg: AVLLMConfig, frame_source_time: torch.Tensor, n_frames: int, in_video: int | None) -> Segment:
    beats = cfg.audio.beats
    time_patches, freq_patches = beats.token_grid(n_frames)
    patch = torch.arange(time_patches * freq_patches) // freq_patches
    return Segment("audio", n_tokens=time_patches * freq_patches, token_id=cfg.tokens.audio,
                   time=frame_source_time[patch * beats.input_patch_size], in_video=in_video)


def prepare_videollama2(
    tokenizer: Any,
    cfg: AVLLMConfig,
    *,
    prompt: str | list | Sequence,
    video: Any = None,
    audio: Any = None,
    images: Any = None,
    use_audio_in_video: bool = True,
    system_prompt: str | None | bool = None,
    padding_side: Literal["left", "right"] = "left",
    chat_template: bool = True,
    add_generation_prompt: bool = True,
    video_fps: float | None = None,
    audio_start: float | None = None,
) -> ModelInputs:
    """Prompts and media -> :class:`~hooked_avllm.inputs.ModelInputs` with a layout built from segments.

    One medium per prompt: ``images`` (one image), ``video`` (a path, a frame array
    ``[T, H, W, 3]`` taken at ``video_fps``, or a :class:`~hooked_avllm.inputs.Video`) with its
    sound track when ``use_audio_in_video`` and the model has an audio tower, ``audio`` (a path,
    an array at 16 kHz, ``(array, rate)``), or ``video`` and ``audio`` together (the frames with
    this sound instead of the video's own, e.g. a conflicting track). A batch: lists, one entry per
    prompt. ``audio_start`` (s) picks the 30-s window of a longer audio input.
    """
    batched = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and not isinstance(prompt[0], dict)
    prompts = list(prompt) if batched else [prompt]

    def per_row(value: Any, name: str) -> list:
        if not batched:
            return [value]
        if value is None:
            return [None] * len(prompts)
        if not isinstance(value, (list, tuple)) or len(value) != len(prompts):
            raise InputError(f"{name} must be a list with one entry (or None) per prompt for a batch of {len(prompts)}")
        return list(value)

    videos, audios, image_rows = per_row(video, "video"), per_row(audio, "audio"), per_row(images, "images")
    if cfg.audio is None and any(a is not None for a in audios):
        raise InputError("this VideoLLaMA2 model has no audio tower; remove audio=")
    if cfg.vision is None and any(v is not None for v in videos + image_rows):
        raise InputError("this VideoLLaMA2 model has no vision tower; remove video=/images=")
    system = SYSTEM_PROMPT if system_prompt is None else (system_prompt or None)
    spec = input_spec(cfg)
    tokens = cfg.tokens
    rows, pixel_images, pixel_videos, fbanks = [], [], [], []
    for r, (row_prompt, row_video, row_audio, row_image) in enumerate(zip(prompts, videos, audios, image_rows)):
        if isinstance(row_image, (list, tuple)):
            if len(row_image) != 1:
                raise InputError(f"VideoLLaMA2 takes one image per prompt; prompt {r} has {len(row_image)}")
            row_image = row_image[0]
        media: list[Segment] = []
        sampled = None
        if row_video is not None:
            v = cfg.vision
            sampled = load_frames(row_video, v.num_frames, v.siglip.image_size, v.image_mean, v.image_std, fps=video_fps,
                                  with_audio=use_audio_in_video and cfg.audio is not None and row_audio is None)
            pixel_videos.append(sampled.pixels)
            media.append(_visual_segment("video", cfg, sampled.frame_times, tokens.video))
        track_from_video = sampled is not None and sampled.audio is not None and row_audio is None
        if row_audio is not None or track_from_video:
            a = cfg.audio
            if track_from_video:
                wave, times = video_audio_clips(load_audio_waveform(sampled.audio, a.sample_rate), sampled.duration,
                                                a.clips_per_video, a.clip_duration)
            else:
                clip = load_audio_waveform(row_audio, a.sample_rate, start=audio_start)
                wave = clip.waveform
                times = torch.arange(wave.shape[0], dtype=torch.float64) / a.sample_rate + (audio_start or 0.0)
            stream = audio_stream(wave, a.sample_rate, a.clip_seconds, times)
            fbanks.append(stream.fbank)
            in_video = len(pixel_videos) - 1 if sampled is not None else None
            media.append(_audio_segment(cfg, stream.frame_source_time, stream.fbank.shape[0], in_video))
        if row_image is not None:
            v = cfg.vision
            pixel_images.append(load_image_pixels(row_image, v.siglip.image_size, v.image_mean, v.image_std))
            media.append(_visual_segment("image", cfg, None, tokens.image))
        tag = _tag_for(row_video is not None, row_audio is not None or track_from_video, row_image is not None)
        tagged = _with_tag(row_prompt, tag, chat_template)
        if chat_template:
            text = render_chat([{"role": "user", "content": tagged}] if isinstance(tagged, str) else tagged,
                               system, add_generation_prompt)
        elif isinstance(tagged, str):
            text = tagged
        else:
            raise InputError("chat_template=False takes the prompt as rendered text (a string)")
        present = [t for t in MODAL_TAGS if t in text]
        if tag is None and present:
            raise InputError(f"prompt {r} holds {present} but no media were given for it")
        if tag is not None and (text.count(tag) != 1 or len(present) != 1):
            raise InputError(f"prompt {r} must hold exactly one {tag} tag (it holds {present}); VideoLLaMA2 takes one medium per prompt")
        if tag is None:
            rows.append([Segment.text(_text_ids(tokenizer, text))])
        else:
            before, after = text.split(tag)
            rows.append([Segment.text(_text_ids(tokenizer, before)), *media, Segment.text(_text_ids(tokenizer, after))])
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else spec.pad_token_id
    layout = TokenLayout.from_segments(rows, spec, pad_id=pad, padding_side=padding_side)
    if layout.shape[1] > spec.max_positions:
        raise InputError(f"the prepared sequence has {layout.shape[1]} tokens, more than the model's {spec.max_positions}")
    return ModelInputs(
        input_ids=layout.input_ids.clone(), attention_mask=layout.attention_mask.clone(), layout=layout,
        pixel_values=torch.stack(pixel_images) if pixel_images else None,
        pixel_values_videos=torch.stack(pixel_videos) if pixel_videos else None,
        input_features=torch.stack(fbanks) if fbanks else None,
    )
