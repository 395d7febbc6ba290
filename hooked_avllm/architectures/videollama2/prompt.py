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

import warnings
from typing import Any, Literal, Sequence

import torch

from hooked_avllm.architectures.videollama2.preprocess import (
    audio_stream,
    load_audio_input,
    load_frames,
    load_image_pixels,
    video_audio_clips,
)
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.audio import load_audio
from hooked_avllm.inputs.chat import check_message, check_options
from hooked_avllm.inputs.errors import InputError, InputWarning, about, describe, refuse_unknown
from hooked_avllm.inputs.layout import Segment, TokenLayout
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.inputs.spec import InputSpec

SYSTEM_PROMPT = "You are a helpful assistant."
MODAL_TAGS = ("<video>", "<audio>", "<image>")


MEDIA_NAMES = ("pixel_values", "pixel_values_videos", "input_features")
PREPARE_ARGUMENTS = ("prompt", "video", "audio", "images", "use_audio_in_video", "system_prompt", "padding_side",
                     "chat_template", "add_generation_prompt", "video_fps", "audio_start")


def input_spec(cfg: AVLLMConfig) -> InputSpec:
    """The input contract of a VideoLLaMA2 config: its media tensors (images ``[image, 3, H, W]``,
    videos ``[video, frame, 3, H, W]``, fbank ``[audio, frame, 128]``, all float features), 1D
    positions, its padding id and length limit; media of a batch stack when their shapes agree."""
    t = cfg.tokens
    return InputSpec(
        family="videollama2", media_names=MEDIA_NAMES, float_media=MEDIA_NAMES,
        pad_token_id=t.pad if t.pad is not None else 0, max_positions=cfg.text.max_position_embeddings,
    )


def render_chat(messages: list[dict], system_prompt: str | None, add_generation_prompt: bool = True) -> str:
    """The Qwen2 chat template's text for ``messages`` (``{"role", "content": str}``): the system
    turn ``system_prompt`` first unless the messages open with their own system message."""
    for index, message in enumerate(messages):
        check_message(message, index, media_items=False)
        if not isinstance(message.get("content"), str):
            raise InputError(
                f"chat message {index}'s content is {describe(message['content'])}; VideoLLaMA2's chat messages hold "
                "text {'role': ..., 'content': str} (it takes its media as video=/audio=/images=, not inside the messages)"
            )
    opens_with_system = bool(messages) and messages[0]["role"] == "system"
    text = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if system_prompt and not opens_with_system else ""
    for message in messages:
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _tag_for(row: int, has_video: bool, has_audio: bool, has_image: bool) -> str | None:
    if has_image and (has_video or has_audio):
        given = "video=" if has_video else "audio="
        raise InputError(
            f"prompt {row} was given both images= and {given}; VideoLLaMA2 takes one medium per prompt (an image, a "
            "video with or without sound, or an audio clip): drop one of them, or put them in separate prompts"
        )
    return "<video>" if has_video else "<audio>" if has_audio else "<image>" if has_image else None


def _with_tag(prompt: Any, tag: str | None, chat_template: bool) -> Any:
    """Put the modality tag and a newline first in the (first user) text unless the prompt holds it
    already, as the released inference does (a text-only prompt gets the newline alone: its tag is
    the empty string)."""
    if not chat_template:
        return prompt
    if isinstance(prompt, str):
        return f"\n{prompt}" if tag is None else prompt if tag in prompt else f"{tag}\n{prompt}"
    if tag is None:  # text only: the newline alone, where the content is text (other content is refused later)
        first = next((m for m in prompt if isinstance(m, dict) and m.get("role") == "user"), None)
        if first is None or not isinstance(first.get("content"), str):
            return prompt
        tag = ""
    messages = [dict(m) if isinstance(m, dict) else m for m in prompt]
    if not tag or not any(isinstance(m, dict) and tag in str(m.get("content", "")) for m in messages):
        first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
        if first is None:
            raise InputError("the chat messages have no user message to put the media in; add {'role': 'user', 'content': ...}")
        if not isinstance(first.get("content"), str):
            raise InputError(f"chat message content must be a string; got {first.get('content')!r}")
        first["content"] = f"{tag}\n{first['content']}"
    return messages


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def visual_segment(kind: str, cfg: AVLLMConfig, frame_times: torch.Tensor | None, token_id: int) -> Segment:
    """One image's or video's connector tokens: (frame group, row, col) in the sampler's grid
    (8 x 13 x 13 at full size), each group at its first frame's time (videos).

    Example:
        >>> from hooked_avllm.architectures.videollama2.config import tiny_config
        >>> cfg = tiny_config()
        >>> visual_segment("video", cfg, torch.arange(4.0), cfg.tokens.video).time.tolist()
        [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]
    """
    t, h, w = cfg.vision.token_grid()
    order = torch.arange(t * h * w)
    group = order // (h * w)
    time = None
    if frame_times is not None:  # a group merges downsample[0] consecutive frames: its first frame's time
        time = frame_times[group * cfg.vision.stc.downsample[0]]
    return Segment(kind, n_tokens=t * h * w, token_id=token_id, time=time, frame_group=group,
                   row=(order % (h * w)) // w, col=order % w)


def audio_segment(cfg: AVLLMConfig, frame_source_time: torch.Tensor, n_frames: int, in_video: int | None) -> Segment:
    """One audio input's BEATs tokens (time-major: 8 frequency patches per 16 fbank frames), each
    at the source time of its patch's first frame.

    Example:
        >>> from hooked_avllm.architectures.videollama2.config import tiny_config
        >>> segment = audio_segment(tiny_config(), torch.arange(40) * 0.01, 40, None)
        >>> segment.n_tokens, segment.time[::8].tolist()
        (16, [0.0, 0.1599999964237213])
    """
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
    use_audio_in_video: bool | None = None,
    system_prompt: str | None | bool = None,
    padding_side: Literal["left", "right"] = "left",
    chat_template: bool = True,
    add_generation_prompt: bool = True,
    video_fps: float | None = None,
    audio_start: float | None = None,
    **unknown: Any,
) -> ModelInputs:
    """Prompts and media -> :class:`~hooked_avllm.inputs.ModelInputs` with a layout built from segments.

    One medium per prompt: ``images`` (one image), ``video`` (a path, a frame array
    ``[T, H, W, 3]`` taken at ``video_fps``, or a :class:`~hooked_avllm.inputs.Video`) with its
    sound track when ``use_audio_in_video`` and the model has an audio tower, ``audio`` (a path,
    an array at 16 kHz, ``(array, rate)``), or ``video`` and ``audio`` together (the frames with
    this sound instead of the video's own, e.g. a conflicting track; the sound is then read as an
    audio input, 30 s from ``audio_start``). A batch: lists, one entry per prompt.
    ``audio_start`` (s) picks the 30-s window of a longer audio input.

    ``prompt`` is the user's text (the tag and a newline are put first unless the text holds the
    tag where the media should go) or a list of chat messages ``{"role", "content": str}`` (the
    tag goes into the first user message). ``system_prompt``: ``None`` the released default,
    ``False`` none, or a string; messages that open with a system message keep theirs.
    ``chat_template=False`` tokenizes the prompt string as given (it must hold the tag).
    A text-only prompt is rendered without the leading newline the released ``mm_infer`` puts
    there for ``modal="text"``. ``use_audio_in_video=None`` (default) takes a video's sound where
    the model has an audio tower; ``True`` on a model without one raises. Bad inputs raise an
    :class:`~hooked_avllm.inputs.errors.InputError` naming the argument and its value; unknown
    keyword arguments are named with the closest known ones.
    """
    refuse_unknown("prepare", unknown, PREPARE_ARGUMENTS)
    check_options(padding_side=padding_side, system_prompt=system_prompt, chat_template=chat_template,
                  add_generation_prompt=add_generation_prompt, video_fps=video_fps, use_audio_in_video=use_audio_in_video)
    if audio_start is not None and (isinstance(audio_start, bool) or not isinstance(audio_start, (int, float))
                                    or not 0 <= audio_start < float("inf")):
        raise InputError(f"audio_start={audio_start!r}: pick a number of seconds >= 0 (where the 30-s audio window starts)")
    if use_audio_in_video and cfg.audio is None:
        raise InputError("use_audio_in_video=True, but this VideoLLaMA2 model has no audio tower; leave it out or pass "
                         "use_audio_in_video=False (the video's frames are used without their sound)")
    use_audio_in_video = cfg.audio is not None and use_audio_in_video is not False
    if isinstance(prompt, str):
        batched = False
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, (str, list, tuple)) for p in prompt):
        batched = True
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        batched = False  # one chat
    else:
        raise InputError(
            f"prompt must be a string, a list of chat messages, or a list of those for a batch; got {describe(prompt)}"
        )
    prompts = list(prompt) if batched else [prompt]

    def per_row(value: Any, name: str) -> list:
        if not batched:
            return [value]
        if value is None:
            return [None] * len(prompts)
        if not isinstance(value, (list, tuple)) or len(value) != len(prompts):
            got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else describe(value)
            raise InputError(
                f"{name}= got {got} for a batch of {len(prompts)} prompts; give a list with one entry (or None) per prompt"
            )
        return list(value)

    videos, audios, image_rows = per_row(video, "video"), per_row(audio, "audio"), per_row(images, "images")
    if cfg.audio is None and any(a is not None for a in audios):
        raise InputError("audio= was given, but this VideoLLaMA2 model has no audio tower, so it cannot take audio=; remove "
                         "audio= (or load an -AV checkpoint)")
    if cfg.vision is None and any(v is not None for v in videos + image_rows):
        raise InputError("video=/images= were given, but this VideoLLaMA2 model has no vision tower; remove them")
    system = SYSTEM_PROMPT if system_prompt is None else None if system_prompt in (False, "") else system_prompt
    spec = input_spec(cfg)
    tokens = cfg.tokens
    rows, pixel_images, pixel_videos, fbanks = [], [], [], []
    for r, (row_prompt, row_video, row_audio, row_image) in enumerate(zip(prompts, videos, audios, image_rows)):
        if isinstance(row_image, (list, tuple)):
            if len(row_image) != 1:
                raise InputError(
                    f"VideoLLaMA2 takes one image per prompt; images= for prompt {r} holds {len(row_image)}: pass one, "
                    "or one prompt per image in a batch (prompt=[...], images=[...])"
                )
            row_image = row_image[0]
        if not isinstance(row_prompt, str) and not (row_prompt and all(isinstance(m, dict) for m in row_prompt)):
            raise InputError(f"prompt {r} must be a string or a non-empty list of chat messages (dicts); got {row_prompt!r:.80}")
        _tag_for(r, row_video is not None, row_audio is not None, row_image is not None)  # refuse before decoding
        media: list[Segment] = []
        sampled = None
        row = f" (prompt {r})" if batched else ""
        if row_video is not None:
            v = cfg.vision
            with about(f"video={row}", row_video):
                sampled = load_frames(row_video, v.num_frames, v.siglip.image_size, v.image_mean, v.image_std,
                                      fps=video_fps, with_audio=use_audio_in_video and row_audio is None)
            pixel_videos.append(sampled.pixels)
            media.append(visual_segment("video", cfg, sampled.frame_times, tokens.video))
        wants_track = sampled is not None and row_audio is None and use_audio_in_video
        track_from_video = wants_track
        if wants_track and sampled.audio is None:
            warnings.warn(
                f"video= (prompt {r}): the video has no sound track; as the released processor does, 30 s of silence "
                "stand in for it (pass use_audio_in_video=False for video tokens only)",
                InputWarning, stacklevel=4,  # the caller of model.prepare
            )
        if row_audio is not None or track_from_video:
            a = cfg.audio
            if track_from_video and sampled.audio is None:  # silence with no source time
                n = int(a.clip_seconds * a.sample_rate)
                wave, times = torch.zeros(n), torch.full((n,), float("nan"), dtype=torch.float64)
            elif track_from_video:
                track = load_audio(sampled.audio, sampling_rate=a.sample_rate)
                wave, times = video_audio_clips(track, a.clips_per_video, a.clip_duration)
            else:
                with about(f"audio={row}", row_audio):
                    clip, offset = load_audio_input(row_audio, a.sample_rate, start=audio_start, seconds=a.clip_seconds)
                wave = clip.waveform
                times = torch.arange(wave.shape[0], dtype=torch.float64) / a.sample_rate + offset
            stream = audio_stream(wave, a.sample_rate, a.clip_seconds, times)
            fbanks.append(stream.fbank)
            in_video = len(pixel_videos) - 1 if sampled is not None else None
            media.append(audio_segment(cfg, stream.frame_source_time, stream.fbank.shape[0], in_video))
        if row_image is not None:
            v = cfg.vision
            with about(f"images={row}", row_image):
                pixel_images.append(load_image_pixels(row_image, v.siglip.image_size, v.image_mean, v.image_std))
            media.append(visual_segment("image", cfg, None, tokens.image))
        tag = _tag_for(r, row_video is not None, row_audio is not None or track_from_video, row_image is not None)
        tagged = _with_tag(row_prompt, tag, chat_template)
        if chat_template:
            if isinstance(tagged, str):
                tagged = [{"role": "user", "content": tagged}]
            if isinstance(system_prompt, str) and system_prompt and tagged[0].get("role") == "system":
                raise InputError(
                    f"prompt {r} opens with a system message and system_prompt= is given too; give the system prompt once"
                )
            text = render_chat(list(tagged), system, add_generation_prompt)
        elif isinstance(tagged, str):
            text = tagged
        else:
            raise InputError("chat_template=False takes the prompt as rendered text (a string), not chat messages")
        present = [t for t in MODAL_TAGS if t in text]
        if tag is None and present:
            raise InputError(
                f"prompt {r} holds {', '.join(present)} but no media were given for it; pass the media "
                "(video=, audio= or images=) or remove the tag from the text"
            )
        if tag is not None and (text.count(tag) != 1 or len(present) != 1):
            counts = {t: text.count(t) for t in present}
            where = "put it in the text where the media go" if not chat_template else "write it once, or leave it out to have it put first"
            raise InputError(
                f"prompt {r} must hold the {tag} tag exactly once for its media and no other tag; it holds {counts or 'none'} "
                f"(VideoLLaMA2 takes one medium per prompt): {where}"
            )
        if tag is None:
            rows.append([Segment.text(_text_ids(tokenizer, text))])
        else:
            before, after = text.split(tag)
            rows.append([Segment.text(_text_ids(tokenizer, before)), *media, Segment.text(_text_ids(tokenizer, after))])
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else spec.pad_token_id
    layout = TokenLayout.from_segments(rows, pad_id=pad, padding_side=padding_side)
    if layout.shape[1] > spec.max_positions:
        raise InputError(f"the prepared sequence has {layout.shape[1]} tokens, more than the model's {spec.max_positions}")
    return ModelInputs(
        layout.input_ids.clone(), layout.attention_mask.clone(), layout, spec=spec,
        pixel_values=torch.stack(pixel_images) if pixel_images else None,
        pixel_values_videos=torch.stack(pixel_videos) if pixel_videos else None,
        input_features=torch.stack(fbanks) if fbanks else None,
    )
