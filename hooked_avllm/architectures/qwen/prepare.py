"""The Qwen families' prompt builder: prompts and media to model inputs (:func:`prepare_inputs`).

Example:
    >>> from transformers import AutoTokenizer
    >>> folder = "/path/to/Qwen2.5-Omni-7B"                                   # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained(folder)                           # doctest: +SKIP
    >>> inputs = prepare_inputs(tok, folder, folder, prompt="Describe what you see and hear.",
    ...                         video="clip.mp4")                             # doctest: +SKIP
    >>> inputs.layout.audio.sum(), inputs.video_grid_thw                      # doctest: +SKIP
    >>> logits = hf_thinker(**inputs.model_kwargs()).logits                   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.architectures.qwen.media_blocks import (
    audio_block,
    audio_in_video_block,
    image_block,
    row_segments,
    video_block,
)
from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.prompt import bracket_strings, placeholder_strings, render_without_template
from hooked_avllm.architectures.qwen.spec import ModelInputSpec
from hooked_avllm.architectures.qwen.vision import check_video_size, image_patches, load_image, load_video, video_patches
from hooked_avllm.inputs.audio import Audio, audio_features, load_audio
from hooked_avllm.inputs.chat import (
    MEDIA_ARGUMENT,
    MEDIA_KINDS,
    check_options,
    conversation,
    messages_media,
    place_media,
    render,
    split_placeholders,
    tokenize,
)
from hooked_avllm.inputs.errors import InputError, about, describe, refuse_unknown
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.inputs.vision import Image, Video, check_video

PREPARE_ARGUMENTS = ("prompt", "video", "audio", "images", "use_audio_in_video", "system_prompt", "padding_side",
                     "audio_padding", "chat_template", "add_generation_prompt", "video_fps")


def prepare_inputs(
    tokenizer: Any,
    preprocessor_config: PreprocessorConfig | str | Path | None = None,
    model_config_like: Any = None,
    *,
    prompt: str | list | Sequence[str | list],
    video: Any = None,
    audio: Any = None,
    images: Any = None,
    use_audio_in_video: bool | None = None,
    system_prompt: str | None | bool = None,
    padding_side: Literal["left", "right"] = "left",
    audio_padding: Literal["max_length", "longest", "processor_longest"] = "max_length",
    chat_template: bool = True,
    add_generation_prompt: bool = True,
    video_fps: float | None = None,
    **unknown: Any,
) -> ModelInputs:
    """Turn prompts and media into :class:`ModelInputs` (token ids, media tensors, layout).

    ``prompt`` is user text (placeholders ``<|VIDEO|>``, ``<|AUDIO|>``, ``<|IMAGE|>`` mark where
    media go; without them media come first), a list of chat messages, or — for a batch — a list
    of those. Media arguments take one item or a list of items (a batch: one entry per prompt,
    each ``None``, an item or a list). Videos are paths, arrays ``[T, H, W, 3]``, lists of frames
    or :class:`Video`; audio are paths, arrays at 16 kHz, ``(array, rate)`` pairs or
    :class:`Audio`; images are paths, PIL images, arrays or tensors.

    ``use_audio_in_video`` loads each video's sound track and interleaves it with the frames in
    2-second chunks: ``None`` (default) does so where the model has audio, ``True`` on a model
    without audio raises. An empty prompt ``""`` is valid (the media alone, or an empty user turn).
    Bad inputs raise :class:`~hooked_avllm.inputs.errors.InputError` naming the argument and its
    value (unknown keyword arguments too, with the closest known ones). ``system_prompt=None`` uses the model's
    default, ``False`` none. ``audio_padding="max_length"`` pads features to 300 s like the
    reference; ``"longest"`` only to the longest clip (same model outputs, less memory);
    ``"processor_longest"`` as ``WhisperFeatureExtractor(padding="longest")`` (Qwen3-Omni's processor).
    ``chat_template=False`` takes the prompt as already-rendered text with bracketed placeholders.

    Example:
        >>> inputs = prepare_inputs(tok, cfg, None, prompt="What do you hear?",    # doctest: +SKIP
        ...                         audio="speech.wav")
        >>> inputs.input_ids.shape, int(inputs.layout.audio.sum())                 # doctest: +SKIP
    """
    refuse_unknown("prepare", unknown, PREPARE_ARGUMENTS)
    config = _preprocessor(preprocessor_config)
    spec = ModelInputSpec.from_config(model_config_like)
    check_options(padding_side=padding_side, system_prompt=system_prompt, chat_template=chat_template,
                  add_generation_prompt=add_generation_prompt, video_fps=video_fps,
                  use_audio_in_video=use_audio_in_video)
    if audio_padding not in ("max_length", "longest", "processor_longest"):
        raise InputError(f"audio_padding={audio_padding!r}: pick 'max_length', 'longest' or 'processor_longest'")
    if use_audio_in_video and not spec.supports_audio:
        raise InputError(f"use_audio_in_video=True, but this model ({spec.family}) has no audio input; leave it out or "
                         "pass use_audio_in_video=False (the video's frames are used without their sound)")
    audio_in_video = spec.supports_audio if use_audio_in_video is None else bool(use_audio_in_video)

    if isinstance(prompt, (list, tuple)) and len(prompt) == 0:
        raise InputError(f"prompt={prompt!r} is empty; pass a string (\"\" for none), a list of chat messages, or a "
                         "list of those for a batch.")
    batched = isinstance(prompt, (list, tuple)) and not isinstance(prompt[0], dict)
    prompts = list(prompt) if batched else [prompt]
    media_args = {
        "image": _rows(images, len(prompts), batched, "images"),
        "video": _rows(video, len(prompts), batched, "video"),
        "audio": _rows(audio, len(prompts), batched, "audio"),
    }
    if not spec.supports_audio and any(media_args["audio"]):
        raise InputError(f"audio= was given, but this model ({spec.family}) takes no audio input; remove audio= or use "
                         "an Omni model.")

    placeholders = placeholder_strings(tokenizer, spec)
    brackets = bracket_strings(tokenizer, spec)
    rows: list[tuple[list[int], list[tuple[str, Any, str]]]] = []  # rendered ids, ordered media and their names
    for r, row_prompt in enumerate(prompts):
        where = f"prompt {r}" if batched else "the prompt"
        ids, order = _render_row(
            tokenizer,
            row_prompt,
            {k: media_args[k][r] for k in MEDIA_KINDS},
            spec,
            placeholders,
            brackets,
            system_prompt,
            chat_template,
            add_generation_prompt,
            where,
            batched,
        )
        rows.append((ids, order))

    loaded_images, loaded_videos, loaded_audio, plans = _load_media(
        [order for _, order in rows], config, video_fps, audio_in_video
    )
    out: dict[str, Any] = {}
    if loaded_images:
        out["pixel_values"], out["image_grid_thw"] = image_patches(loaded_images, config)
    if loaded_videos:
        out["pixel_values_videos"], out["video_grid_thw"], out["video_second_per_grid"] = video_patches(
            loaded_videos, config
        )
    audio_counts = None
    if loaded_audio:
        feats = audio_features(loaded_audio, config, padding=audio_padding)
        out["input_features"], out["feature_attention_mask"] = feats.input_features, feats.feature_attention_mask
        audio_counts = spec.rules.audio_token_counts(feats.frame_counts)
        if (audio_counts < 1).any():
            raise InputError("An audio clip is shorter than 0.02 s and gives no audio token; pass a longer clip.")

    segment_rows = []
    for r, ((ids, _), plan) in enumerate(zip(rows, plans)):
        blocks = [_block_builder(step, out, audio_counts, spec) for step in plan]
        segment_rows.append(row_segments(ids, blocks, spec, f"prompt {r}" if batched else "the prompt"))
    longest = max(sum(seg.n_tokens for seg in row) for row in segment_rows)
    if longest > spec.max_positions:
        raise InputError(
            f"The prepared sequence has {longest} tokens, more than the model's {spec.max_positions}. Shorten the "
            "media (load_video/load_audio start=/end=), lower video_fps, or lower the pixel budget "
            "(PreprocessorConfig video_max_pixels / max_pixels)."
        )
    pad_id = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else spec.pad_token_id
    uses_av = audio_in_video and bool(loaded_videos)
    if out or uses_av:
        out["use_audio_in_video"] = uses_av
    layout = TokenLayout.from_segments(  # built from the blocks: nothing is parsed back from the ids
        segment_rows, pad_id=pad_id, padding_side=padding_side, positions=lambda built: spec.layout_positions(built, out),
    )
    return ModelInputs(layout.input_ids.clone(), layout.attention_mask.clone(), layout, out, spec)


def _load_media(
    orders: list[list[tuple[str, Any, str]]], config: PreprocessorConfig, video_fps: float | None, audio_in_video: bool
) -> tuple[list[Image], list[Video], list[Audio], list[list[tuple[str, int, int | None]]]]:
    """Load every row's media in sequence order (row-major); a video's sound track joins the audio list in place.
    A loader's error names the input it is about (its argument and value, ``label``).

    Returns the images, videos and audio clips, and per row its steps ``(kind, index, audio index of a video)``.
    """
    images: list[Image] = []
    videos: list[Video] = []
    clips: list[Audio] = []
    plans = []
    for order in orders:
        plan: list[tuple[str, int, int | None]] = []
        for kind, item, label in order:
            with about(label, item):
                if kind == "image":
                    images.append(load_image(item, config))
                    plan.append(("image", len(images) - 1, None))
                elif kind == "video":
                    if isinstance(item, Video):
                        check_video_size(check_video(item), config)
                    video = load_video(item, config, fps=video_fps, with_audio=audio_in_video)
                    videos.append(video)
                    if audio_in_video and video.audio is None:
                        raise InputError(
                            f"the video has no audio track but use_audio_in_video=True (the default for a model with "
                            "audio). Pass use_audio_in_video=False, or attach a sound track with "
                            "load_video(frames, audio=...)."
                        )
                    if audio_in_video:
                        clips.append(load_audio(video.audio, sampling_rate=config.sampling_rate))
                    plan.append(("video", len(videos) - 1, len(clips) - 1 if audio_in_video else None))
                else:
                    clips.append(load_audio(item, sampling_rate=config.sampling_rate))
                    plan.append(("audio", len(clips) - 1, None))
        plans.append(plan)
    return images, videos, clips, plans


def _block_builder(step: tuple[str, int, int | None], media: dict[str, Tensor], audio_counts: Tensor | None,
                   spec: ModelInputSpec):
    """The block of one media item's placeholder, given the bracket ids around it."""
    kind, index, audio_index = step
    if kind == "image":
        grid = media["image_grid_thw"][index].tolist()
        return lambda opener, closer: image_block(opener, closer, grid, spec)
    if kind == "video":
        grid, seconds = media["video_grid_thw"][index].tolist(), float(media["video_second_per_grid"][index])
        if audio_index is not None:
            n_audio = int(audio_counts[audio_index])
            return lambda opener, closer: audio_in_video_block(opener, closer, grid, seconds, n_audio, spec)
        return lambda opener, closer: video_block(opener, closer, grid, seconds, spec)
    n_audio = int(audio_counts[index])
    return lambda opener, closer: audio_block(opener, closer, n_audio, spec)


def _preprocessor(value: PreprocessorConfig | str | Path | None) -> PreprocessorConfig:
    if value is None:
        return PreprocessorConfig()
    if isinstance(value, PreprocessorConfig):
        return value
    if isinstance(value, (str, Path)):
        return PreprocessorConfig.from_pretrained(value)
    raise InputError(
        f"preprocessor_config must be a PreprocessorConfig, a checkpoint folder or None, got {type(value).__name__}."
    )


def _is_single(kind: str, value: Any) -> bool:
    """Whether a list/tuple media argument is one item (frames of a video, an (array, rate) pair)."""
    if kind == "audio":
        return (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[1], (int, float))
            and not isinstance(value[0], (str, Path))
        )
    if kind == "video":
        return len(value) > 0 and all(
            isinstance(v, PILImage.Image) or (isinstance(v, (np.ndarray, Tensor)) and v.ndim in (2, 3)) for v in value
        )
    return False


def _items(kind: str, value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and not _is_single(kind, value):
        return list(value)
    return [value]


def _rows(value: Any, n_rows: int, batched: bool, name: str) -> list[list]:
    kind = {"images": "image"}.get(name, name)
    if not batched:
        return [_items(kind, value)]
    if value is None:
        return [[] for _ in range(n_rows)]
    if not isinstance(value, (list, tuple)) or len(value) != n_rows:
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else describe(value)
        raise InputError(
            f"With {n_rows} prompts, {name}= must be a list of {n_rows} entries (None, one {kind} or a list of them per "
            f"prompt); got {got}."
        )
    return [_items(kind, entry) for entry in value]


def _labels(kind: str, n: int, where: str, batched: bool) -> list[str]:
    """How an error names each of ``n`` media inputs of ``kind`` given as arguments: ``images=``,
    ``images= item 1``, ``images= (prompt 2)``."""
    argument = MEDIA_ARGUMENT[kind]
    row = f" ({where})" if batched else ""
    return [f"{argument}{row}" if n == 1 else f"{argument} item {k}{row}" for k in range(n)]


def _render_row(
    tokenizer: Any,
    prompt: Any,
    media: dict[str, list],
    spec: ModelInputSpec,
    placeholders: dict[str, str],
    brackets: dict[str, tuple[str, str]],
    system_prompt: str | None | bool,
    chat_template: bool,
    add_generation_prompt: bool,
    where: str,
    batched: bool = False,
) -> tuple[list[int], list[tuple[str, Any, str]]]:
    """Rendered token ids (one placeholder token per media item) and the media in their order, each
    with the name an error gives it (:func:`_labels`, or the chat message it came from)."""
    counts = {kind: len(items) for kind, items in media.items()}
    queues = {kind: list(zip(items, _labels(kind, len(items), where, batched))) for kind, items in media.items()}
    if isinstance(prompt, list):
        messages, found = messages_media(prompt, system_prompt, spec.default_system_prompt)
        order = []
        for k, (kind, value) in enumerate(found):
            if value is None:
                if not queues[kind]:
                    raise InputError(
                        f"{where} has more {kind} items without a value than {kind} inputs given; pass the {kind} "
                        f"inside the message ({{'type': '{kind}', '{kind}': ...}}) or as {MEDIA_ARGUMENT[kind]}."
                    )
                order.append((kind, *queues[kind].pop(0)))
            else:
                order.append((kind, value, f"the {kind} in {where}'s chat messages"))
        leftover = [kind for kind, items in queues.items() if items]
        if leftover:
            kind = leftover[0]
            raise InputError(
                f"{MEDIA_ARGUMENT[kind]} gave {counts[kind]} {kind} input(s), but {where}'s chat messages have no place for "
                f"the {kind} input(s) given ({len(queues[kind])} left over: each {{'type': '{kind}'}} item without a value "
                f"takes one); add such items, or leave {MEDIA_ARGUMENT[kind]} out where the messages hold the media."
            )
        ids = tokenize(tokenizer, _render(tokenizer, messages, spec, add_generation_prompt))
        return ids, order
    if not isinstance(prompt, str):
        raise InputError(
            f"{where} must be a string or a list of chat messages, got {describe(prompt)}; e.g. prompt=\"What do you "
            "hear?\" or prompt=[{'role': 'user', 'content': 'What do you hear?'}]."
        )
    if not chat_template:
        ids = tokenize(tokenizer, prompt)
        kind_of = {token: kind for kind, token in spec.tokens.placeholders.items()}
        kinds = [kind_of[i] for i in ids if i in kind_of]
        for kind in MEDIA_KINDS:
            if kinds.count(kind) != counts.get(kind, 0):
                raise InputError(
                    f"{where} (raw text) has {kinds.count(kind)} {kind} placeholder(s) but {counts.get(kind, 0)} {kind} "
                    "input(s) were given; write one bracketed placeholder per item."
                )
        return ids, [(kind, *queues[kind].pop(0)) for kind in kinds]
    parts = place_media(split_placeholders(prompt, placeholders, brackets), counts, where)
    order = [(p.kind, *queues[p.kind].pop(0)) for p in parts if p.kind != "text"]
    ids = tokenize(tokenizer, _render(tokenizer, conversation(parts, system_prompt, spec.default_system_prompt), spec,
                                      add_generation_prompt))
    return ids, order


def _render(tokenizer: Any, messages: list, spec: ModelInputSpec, add_generation_prompt: bool) -> str:
    """The chat template's text, or the Qwen format for a tokenizer without a template."""
    return render(tokenizer, messages, add_generation_prompt,
                  fallback=lambda msgs, gen: render_without_template(tokenizer, spec, msgs, gen))


__all__ = ["prepare_inputs"]
