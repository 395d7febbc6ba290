"""MiniCPM-o's prompt builder: a prompt and media -> prepared inputs, as the released ``chat()`` and
processor make them (:mod:`hooked_avllm.architectures.minicpm_o.preprocess`), with a layout that
knows which image bounds are video frames and when each frame and audio token is.

- ``images=``: sliced images (up to ``max_slice_nums``, 9 by default; ``<image_id>`` numbers);
- ``audio=``: clips (16 kHz), at 25 tokens a second in groups of at most 25;
- ``video=`` with its sound (the model has audio and ``use_audio_in_video``): the audio-visual
  "omni" recipe: one ``<unit>`` a second with the frame shown at ``t = i + 1`` s (one slice, no
  image id) and that second's sound, the omni system prompt (a user message) and the TTS template;
- ``video=`` with ``use_audio_in_video=False`` (or on MiniCPM-V): the vision-only recipe, about
  one frame a second (at most 64) as images, ``max_slice_nums=2``, no image ids; a video without a
  sound track is refused unless ``use_audio_in_video=False`` says to take its frames only.

A string prompt puts the media first and the text after them (as the released examples do); a list
of chat messages may hold media objects in its contents (the released ``chat()`` format). Any
audio switches to the TTS template (no default system prompt; the generation prompt ends with
``<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>``).

Example:
    >>> inputs = model.prepare(prompt="Describe what you see and hear.", video="clip.mp4")  # doctest: +SKIP
    >>> inputs.layout.video.sum(), inputs.layout.audio_time[inputs.layout.audio][:3]       # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from hooked_avllm.architectures.minicpm_o.layout import FrameInfo, layout_from_ids
from hooked_avllm.architectures.minicpm_o.preprocess import (
    OMNI_MAX_SLICE_NUMS,
    OMNI_SYSTEM_PROMPT,
    VIDEO_MAX_SLICE_NUMS,
    MiniCPMPreprocessorConfig,
    as_rgb_image,
    load_omni_video,
    load_video_frames,
    omni_content,
    omni_system_message,
    omni_video_from,
    prepare_chat,
)
from hooked_avllm.inputs.audio import load_audio
from hooked_avllm.inputs.chat import check_options
from hooked_avllm.inputs.errors import InputError, about, describe, refuse_unknown
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.inputs.vision import Video, check_video, frames_from_arrays, to_pil
from hooked_avllm.towers.navit_siglip import patch_rows


PREPARE_ARGUMENTS = ("prompt", "video", "audio", "images", "use_audio_in_video", "system_prompt", "max_slice_nums",
                     "use_image_id", "chunk_input", "language", "padding_side", "add_generation_prompt")
MAX_SLICE_NUMS = 64  # slices per image: far above the released 9, below a sequence no checkpoint holds


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) and not (isinstance(value, tuple) and len(value) == 2
                                                                    and isinstance(value[1], (int, float))) else [value]


def _audio_array(item: Any) -> np.ndarray:
    """A clip (path, array at 16 kHz, ``(array, rate)``, :class:`Audio`) as a 16-kHz float array."""
    return load_audio(item, sampling_rate=16000).waveform.numpy()


def _check_tokens(tokenizer: Any, tokens: Any) -> None:
    """The layout's ids must be the tokenizer's (a checkpoint with other ids would be misread)."""
    for name, string in tokens.STRINGS.items():
        expected = getattr(tokens, name)
        if expected is None:
            continue
        found = tokenizer.convert_tokens_to_ids(string)
        if found != expected:
            raise InputError(f"the tokenizer's {string} is id {found}, but the model's config expects {expected}; "
                             "load the checkpoint's own tokenizer (or give its tokenizer_config.json)")


def _video_media(video: Any, with_sound: bool, explicit_sound: bool) -> tuple[list[Any], dict[str, Any]]:
    """One video's content items and the chat() options its recipe sets: the omni recipe (a file
    or a :class:`Video` with sound, ``with_sound``) or the vision-only one (frames)."""
    has_track = isinstance(video, (str, Path)) or (isinstance(video, Video) and video.audio is not None)
    if with_sound and explicit_sound and not has_track:
        raise InputError("use_audio_in_video=True, but frames given as an array or list carry no sound track; pass the "
                         "file, a Video with audio (load_video(frames, audio=...)), or use_audio_in_video=False")
    if with_sound and has_track:
        clip = load_omni_video(video) if isinstance(video, (str, Path)) else omni_video_from(check_video(video))
        frames = [to_pil(f) for f in clip.frames]
        options = dict(omni=True, max_slice_nums=OMNI_MAX_SLICE_NUMS, use_image_id=False, use_tts_template=True,
                       frames=[u.frame_index / clip.fps for u in clip.units])
        return omni_content(frames, [a.numpy() for a in clip.audios]), options
    if isinstance(video, (str, Path)):
        sampled = load_video_frames(video)
        frames, times = [to_pil(f) for f in sampled.frames], sampled.times
    elif isinstance(video, Video):
        check_video(video)
        frames = [to_pil(f.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()) for f in video.frames]
        times = [i / video.sample_fps for i in range(len(frames))]
    else:
        pixels = frames_from_arrays(video)  # [T, 3, H, W] uint8: checks rank, channels, frames
        frames = [to_pil(f.permute(1, 2, 0).numpy()) for f in pixels]
        times = [float(i) for i in range(len(frames))]
    return frames, dict(max_slice_nums=VIDEO_MAX_SLICE_NUMS, use_image_id=False, frames=times)


def _row_messages(prompt: Any, images: list, audios: list, video: Any, *, has_audio: bool,
                  use_audio_in_video: bool | None, system_prompt: str | None | bool, language: str,
                  where: str) -> tuple[list[dict], dict[str, Any]]:
    """One row's chat messages (the released format) and the chat() arguments the recipe sets;
    ``info["frames"]`` are the video's frames as (time, video number) in content order. A loader's
    error names the argument and value it is about."""
    options: dict[str, Any] = {"frames": [], "omni": False}
    media: list[Any] = []
    for k, image in enumerate(images):
        with about(f"images={'' if len(images) == 1 else f' item {k}'}{where}", image):
            media.append(as_rgb_image(image))
    for k, clip in enumerate(audios):
        with about(f"audio={'' if len(audios) == 1 else f' item {k}'}{where}", clip):
            media.append(_audio_array(clip))
    if video is not None:
        with about(f"video={where}", video):
            frames, recipe = _video_media(video, has_audio and use_audio_in_video is not False, use_audio_in_video is True)
        media = frames + media
        options.update(recipe)
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": [*media, prompt]}]
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        if media:
            raise InputError("with chat messages as the prompt, put the media inside the messages' contents "
                             "(the released chat() format), not in images=/audio=/video=")
        messages = [dict(m) for m in prompt]
    else:
        raise InputError(f"prompt{where} must be a string or a list of chat messages (dicts); got {describe(prompt)}")
    if options["omni"]:
        messages = [omni_system_message(language)] + messages
    if isinstance(system_prompt, str) and system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages, options


def prepare_minicpm(
    model: Any,
    spec: Any,
    *,
    prompt: str | list | Sequence,
    video: Any = None,
    audio: Any = None,
    images: Any = None,
    use_audio_in_video: bool | None = None,
    system_prompt: str | None | bool = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
    chunk_input: bool = True,
    language: Literal["en", "zh"] = "en",
    padding_side: Literal["left", "right"] = "left",
    add_generation_prompt: bool = True,
    **unknown: Any,
) -> ModelInputs:
    """Prompts and media -> :class:`~hooked_avllm.inputs.ModelInputs` (see the module docstring).
    A batch: a list of prompts, and for each media argument a list with one entry per prompt.

    ``use_audio_in_video=None`` (default) takes a video's sound where the model has audio and the
    video has a track; ``True`` requires both. ``max_slice_nums`` (a whole number from 1) and
    ``use_image_id`` apply to images; a video's recipe sets its own, so giving them with a video
    raises. Bad inputs raise an :class:`~hooked_avllm.inputs.errors.InputError` naming the argument
    and its value; unknown keyword arguments are named with the closest known ones.
    """
    refuse_unknown("prepare", unknown, PREPARE_ARGUMENTS)
    check_options(padding_side=padding_side, system_prompt=system_prompt, use_audio_in_video=use_audio_in_video,
                  use_image_id=use_image_id, chunk_input=chunk_input, add_generation_prompt=add_generation_prompt)
    if max_slice_nums is not None and (isinstance(max_slice_nums, bool) or not isinstance(max_slice_nums, int)
                                       or not 1 <= max_slice_nums <= MAX_SLICE_NUMS):
        raise InputError(f"max_slice_nums={max_slice_nums!r}: pick a whole number from 1 (no slicing) to {MAX_SLICE_NUMS} "
                         "(the released default is 9)")
    if language not in OMNI_SYSTEM_PROMPT:
        raise InputError(f"language={language!r}: pick one of {sorted(OMNI_SYSTEM_PROMPT)} (the omni recipe's system prompt)")
    tokenizer = model._require_tokenizer()
    _check_tokens(tokenizer, spec.tokens)
    batched = isinstance(prompt, (list, tuple)) and not (prompt and isinstance(prompt[0], dict))
    prompts = list(prompt) if batched else [prompt]
    if not prompts:
        raise InputError(f"prompt={prompt!r} is empty; pass a string (\"\" for none), a list of chat messages, or a list of "
                         "those for a batch")
    has_audio_tower = model.cfg.audio is not None
    if use_audio_in_video and not has_audio_tower:
        raise InputError("use_audio_in_video=True, but this model (MiniCPM-V) has no audio tower; leave it out or pass "
                         "use_audio_in_video=False (the video's frames are used without their sound)")
    recipe_set = {name: value for name, value in (("max_slice_nums", max_slice_nums), ("use_image_id", use_image_id))
                  if value is not None}
    if recipe_set and video is not None and any(v is not None for v in (video if batched else [video])):
        raise InputError(f"{', '.join(f'{k}={v!r}' for k, v in recipe_set.items())} cannot apply with video=: the video "
                         "recipe sets its own (max_slice_nums=1 or 2, no image ids) for every image of the prompt; leave "
                         "it out, or put the images in a prompt without a video")

    def per_row(value: Any, name: str) -> list:
        if not batched:
            return [value]
        if value is None:
            return [None] * len(prompts)
        if not isinstance(value, (list, tuple)) or len(value) != len(prompts):
            got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else describe(value)
            raise InputError(f"with {len(prompts)} prompts, {name}= must be a list of {len(prompts)} entries (None or the "
                             f"row's media); got {got}")
        return list(value)

    has_audio, has_vision = has_audio_tower, model.cfg.vision is not None
    config = MiniCPMPreprocessorConfig.from_pretrained(model.checkpoint_folder) \
        if getattr(model, "checkpoint_folder", None) is not None and (Path(model.checkpoint_folder) / "preprocessor_config.json").exists() \
        else MiniCPMPreprocessorConfig(image_feature_size=spec.n_queries)
    if config.image_feature_size != spec.n_queries:
        raise InputError(f"preprocessor_config.json's image_feature_size {config.image_feature_size} differs from the "
                         f"resampler's {spec.n_queries} queries (config.json's query_num); the checkpoint is inconsistent")
    rows, pixels, sizes, video_flags, features, lens, frames_at = [], [], [], [], [], [], []
    for r, (p, v, a, i) in enumerate(zip(prompts, per_row(video, "video"), per_row(audio, "audio"), per_row(images, "images"))):
        row_images, row_audio = _as_list(i), _as_list(a)
        if (row_images or v is not None) and not has_vision:
            raise InputError("images=/video= were given, but this model has no vision tower; remove them")
        if row_audio and not has_audio:
            raise InputError("audio= was given, but this model (MiniCPM-V) has no audio tower; remove audio= (or load "
                             "MiniCPM-o)")
        messages, options = _row_messages(p, row_images, row_audio, v, has_audio=has_audio, use_audio_in_video=use_audio_in_video,
                                          system_prompt=system_prompt, language=language,
                                          where=f" (prompt {r})" if batched else "")
        chat = prepare_chat(
            messages, config, chat_template=getattr(tokenizer, "chat_template", None),
            max_slice_nums=options.get("max_slice_nums", max_slice_nums),
            use_image_id=options.get("use_image_id", use_image_id), chunk_input=chunk_input,
            omni_input=options["omni"], use_tts_template=options.get("use_tts_template", False),
            add_generation_prompt=add_generation_prompt,
        )
        ids = list(tokenizer(chat.text, add_special_tokens=False)["input_ids"])
        image_starts = [k for k, x in enumerate(ids) if x == spec.tokens.image_start]
        n_frames = len(options["frames"])
        frame_images = list(range(n_frames)) if options["frames"] else []  # frames come first in the content
        row_frames = {image_starts[k]: FrameInfo(video=0, time=float(options["frames"][k])) for k in frame_images}
        for k, image in enumerate(chat.images):
            for slice_pixels in image.pixel_values:
                pixels.append(patch_rows(slice_pixels))
            sizes.append(image.tgt_sizes)
            video_flags.append(torch.full((len(image.pixel_values),), k < n_frames, dtype=torch.bool))
        if chat.audio is not None:
            features.append(chat.audio.input_features)
            lens.append(chat.audio.feature_lens)
        rows.append(ids)
        frames_at.append(row_frames)
    longest = max(len(ids) for ids in rows)
    if longest > spec.max_positions:
        raise InputError(f"the prepared sequence has {longest} tokens, more than the model's {spec.max_positions}; "
                         "shorten the media")
    input_ids = torch.full((len(rows), longest), spec.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    shifted = []
    for r, ids in enumerate(rows):
        at = longest - len(ids) if padding_side == "left" else 0
        input_ids[r, at : at + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[r, at : at + len(ids)] = 1
        shifted.append({p + at: info for p, info in frames_at[r].items()})
    layout = layout_from_ids(input_ids, attention_mask, spec.tokens, n_queries=spec.n_queries, frames=shifted,
                             padding_side=padding_side, pad_id=spec.pad_token_id)
    media: dict[str, Tensor] = {}
    if pixels:
        media.update(pixel_values=torch.cat(pixels), tgt_sizes=torch.cat(sizes).long(), video_slices=torch.cat(video_flags))
    if features:
        frames = max(f.shape[-1] for f in features)
        media["input_features"] = torch.cat([torch.nn.functional.pad(f, (0, frames - f.shape[-1])) for f in features])
        media["feature_lens"] = torch.cat(lens).long()
    return ModelInputs(input_ids, attention_mask, layout, media, spec)


__all__ = ["prepare_minicpm"]
