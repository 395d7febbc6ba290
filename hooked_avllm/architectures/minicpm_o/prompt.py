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
    VIDEO_MAX_SLICE_NUMS,
    MiniCPMPreprocessorConfig,
    load_omni_video,
    load_video_frames,
    omni_content,
    omni_system_message,
    prepare_chat,
)
from hooked_avllm.inputs.audio import load_audio
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.inputs.vision import Video, to_pil
from hooked_avllm.towers.navit_siglip import patch_rows


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


def _row_messages(prompt: Any, images: list, audios: list, video: Any, *, has_audio: bool, use_audio_in_video: bool,
                  system_prompt: str | None | bool, language: str) -> tuple[list[dict], dict[str, Any]]:
    """One row's chat messages (the released format) and the chat() arguments the recipe sets;
    ``info["frames"]`` are the video's frames as (time, video number) in content order."""
    options: dict[str, Any] = {"frames": [], "omni": False}
    media: list[Any] = [to_pil(image) if not hasattr(image, "size") else image for image in images]
    media += [_audio_array(a) for a in audios]
    if video is not None:
        with_sound = has_audio and use_audio_in_video
        if isinstance(video, (str, Path)) and with_sound:
            clip = load_omni_video(video)
            frames = [to_pil(f) for f in clip.frames]
            media = omni_content(frames, [a.numpy() for a in clip.audios]) + media
            options.update(omni=True, max_slice_nums=OMNI_MAX_SLICE_NUMS, use_image_id=False, use_tts_template=True)
            options["frames"] = [u.frame_index / clip.fps for u in clip.units]
        else:
            if isinstance(video, (str, Path)):
                sampled = load_video_frames(video)
                frames, times = [to_pil(f) for f in sampled.frames], sampled.times
            elif isinstance(video, Video):
                frames = [to_pil(f.permute(1, 2, 0).clamp(0, 255).to(torch.uint8).numpy()) for f in video.frames]
                times = [i / video.sample_fps for i in range(len(frames))]
            else:
                frames = [to_pil(f) for f in (video if isinstance(video, (list, tuple)) else list(video))]
                times = [float(i) for i in range(len(frames))]
            media = frames + media
            options.update(max_slice_nums=VIDEO_MAX_SLICE_NUMS, use_image_id=False)
            options["frames"] = times
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": [*media, prompt]}]
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
        if media:
            raise InputError("with chat messages as the prompt, put the media inside the messages' contents "
                             "(the released chat() format), not in images=/audio=/video=")
        messages = [dict(m) for m in prompt]
    else:
        raise InputError(f"prompt must be a string or a list of chat messages (dicts); got {prompt!r:.80}")
    if options["omni"]:
        messages = [omni_system_message(language)] + messages
    if isinstance(system_prompt, str) and system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + messages
    elif system_prompt not in (None, False, ""):
        raise InputError(f"system_prompt must be a string, None (the recipe's default) or False; got {system_prompt!r}")
    return messages, options


def prepare_minicpm(
    model: Any,
    spec: Any,
    *,
    prompt: str | list | Sequence,
    video: Any = None,
    audio: Any = None,
    images: Any = None,
    use_audio_in_video: bool = True,
    system_prompt: str | None | bool = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
    chunk_input: bool = True,
    language: Literal["en", "zh"] = "en",
    padding_side: Literal["left", "right"] = "left",
    add_generation_prompt: bool = True,
) -> ModelInputs:
    """Prompts and media -> :class:`~hooked_avllm.inputs.ModelInputs` (see the module docstring).
    A batch: a list of prompts, and for each media argument a list with one entry per prompt."""
    tokenizer = model._require_tokenizer()
    _check_tokens(tokenizer, spec.tokens)
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
    batched = isinstance(prompt, (list, tuple)) and not (prompt and isinstance(prompt[0], dict))
    prompts = list(prompt) if batched else [prompt]
    if not prompts:
        raise InputError("prompt is empty; pass a string, a list of chat messages, or a list of those")

    def per_row(value: Any, name: str) -> list:
        if not batched:
            return [value]
        if value is None:
            return [None] * len(prompts)
        if not isinstance(value, (list, tuple)) or len(value) != len(prompts):
            raise InputError(f"with {len(prompts)} prompts, {name}= must be a list of {len(prompts)} entries (None or the row's media)")
        return list(value)

    has_audio, has_vision = model.cfg.audio is not None, model.cfg.vision is not None
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
            raise InputError("this model has no vision tower; remove images= and video=")
        if row_audio and not has_audio:
            raise InputError("this model (MiniCPM-V) has no audio tower; remove audio= (or load MiniCPM-o)")
        messages, options = _row_messages(p, row_images, row_audio, v, has_audio=has_audio, use_audio_in_video=use_audio_in_video,
                                          system_prompt=system_prompt, language=language)
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
