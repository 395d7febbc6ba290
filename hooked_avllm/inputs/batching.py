"""Batch prepared inputs: several one-row (or batched) :class:`ModelInputs` into one padded batch.

Example:
    >>> batch = concat_inputs([model.prepare(prompt=p, video=v) for p, v in clips])  # doctest: +SKIP
    >>> model.generate(batch, max_new_tokens=50)                                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.processor import ModelInputs

MEDIA_FIELDS = ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw",
                "pixel_values_videos", "video_grid_thw", "video_second_per_grid")


def concat_inputs(
    items: Sequence[ModelInputs], padding_side: Literal["left", "right"] = "left", pad_id: int | None = None
) -> ModelInputs:
    """One padded batch from prepared inputs, rows in order; media concatenated in row order
    (audio features padded to the longest), the layout rebuilt and checked.

    Left padding (the default) is what ``generate`` needs.
    """
    if not items:
        raise InputError("concat_inputs needs at least one prepared input")
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    spec = items[0].layout.spec
    grid_media = any(getattr(item, name) is not None for item in items
                     for name in ("feature_attention_mask", "image_grid_thw", "video_grid_thw"))
    if all(item.layout.source == "segments" for item in items) and not grid_media:
        # built by a prompt builder, media of fixed shapes: stack the layouts, nothing to parse
        return _stack_segment_inputs(items, padding_side, pad_id if pad_id is not None else spec.pad_token_id)
    # media with grids and feature masks (the Qwen inputs): media concatenated by their rules, layout re-read
    flags = {item.use_audio_in_video for item in items if item.video_grid_thw is not None and item.input_features is not None}
    if len(flags) > 1:
        raise InputError("the inputs mix use_audio_in_video=True and False; prepare them the same way to batch them")
    rows: list[tuple[Tensor, Tensor]] = []
    for item in items:
        for ids, mask in zip(item.input_ids, item.attention_mask):
            rows.append((ids[mask.bool()], mask[mask.bool()]))
    longest = max(len(ids) for ids, _ in rows)
    pad = pad_id if pad_id is not None else (spec.pad_token_id if getattr(spec, "pad_token_id", None) is not None else 0)
    device = items[0].input_ids.device
    input_ids = torch.full((len(rows), longest), pad, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
    for r, (ids, _) in enumerate(rows):
        span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
        input_ids[r, span] = ids
        attention_mask[r, span] = 1
    media: dict = {}
    for name in MEDIA_FIELDS:
        parts = [getattr(item, name) for item in items if getattr(item, name) is not None]
        if not parts:
            continue
        if name in ("input_features", "feature_attention_mask"):
            frames = max(p.shape[-1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, frames - p.shape[-1])) for p in parts]
        media[name] = torch.cat(parts)
    counts = None
    if "feature_attention_mask" in media:  # the family's own rule (Whisper 25/s, AuT 13/s...)
        counts = spec.rules.audio_token_counts(media["feature_attention_mask"].sum(-1).cpu())
    use_av = bool(flags) and flags.pop()
    layout = TokenLayout.from_input_ids(
        input_ids.cpu(), attention_mask.cpu(), spec,
        image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
        video_second_per_grid=media.get("video_second_per_grid"), audio_token_counts=counts,
        use_audio_in_video=use_av, padding_side=padding_side,
    )
    if device.type != "cpu":
        layout = layout.to(device)
    return ModelInputs(input_ids=input_ids, attention_mask=attention_mask, layout=layout, use_audio_in_video=use_av, **media)


def _stack_segment_inputs(items: Sequence[ModelInputs], padding_side: str, pad_id: int) -> ModelInputs:
    """Batch inputs whose layouts were built from segments: media stacked in row order (their
    shapes are fixed per family, e.g. 16 frames, 30-s fbank), the layouts stacked."""
    layout = TokenLayout.stack([item.layout for item in items], pad_id=pad_id, padding_side=padding_side)
    media = {}
    for name in ("pixel_values", "pixel_values_videos", "input_features"):
        parts = [getattr(item, name) for item in items if getattr(item, name) is not None]
        if parts:
            shapes = sorted({tuple(p.shape[1:]) for p in parts})
            if len(shapes) > 1:
                raise InputError(
                    f"the inputs' {name} have different shapes {shapes}; a batch needs one shape per medium "
                    "(prepare every row the same way, e.g. the same audio length and number of frames)"
                )
            media[name] = torch.cat(parts)
    device = items[0].input_ids.device
    return ModelInputs(input_ids=layout.input_ids.to(device), attention_mask=layout.attention_mask.to(device),
                       layout=layout.to(device) if device.type != "cpu" else layout, **media)


def teacher_forced_inputs(inputs: Any, caption: Int[Tensor, "batch n_new"] | Sequence[int]) -> Any:
    """``inputs`` with ``caption`` appended to every row, its positions marked *generated*.

    The layout is a copy extended by ``n_new`` generated positions (TMRoPE positions continue
    after the prompt as in ``generate``), so ``layout.generated`` marks the caption span and a
    forward on the result equals the prompt + caption pass of generation. Left padding only.

    Example:
        >>> forced = teacher_forced_inputs(inputs, caption_ids)  # doctest: +SKIP
        >>> logits = model(forced)                               # doctest: +SKIP
        >>> int(forced.layout.generated.sum()) == len(caption_ids)  # doctest: +SKIP
        True
    """
    batch = inputs.input_ids.shape[0]
    caption = torch.as_tensor(caption, dtype=torch.long, device=inputs.input_ids.device)
    if caption.ndim == 1:
        caption = caption[None].expand(batch, -1)
    if caption.ndim != 2 or caption.shape[0] != batch:
        raise ValueError(f"caption must be [n_new] or [batch={batch}, n_new] token ids, got shape {tuple(caption.shape)}")
    layout = inputs.layout
    if layout.padding_side == "right" and bool(layout.padding.any()):
        raise ValueError("teacher forcing appends tokens on the right: prepare the batch with left padding")
    if tuple(layout.shape) != tuple(inputs.input_ids.shape):
        raise ValueError("the inputs' layout does not match their token ids; prepare them again")
    layout = layout.to(layout.attention_mask.device).extend(caption.shape[1])  # .to copies, extend grows the copy
    return replace(
        inputs,
        input_ids=torch.cat([inputs.input_ids, caption], dim=1),
        attention_mask=torch.cat([inputs.attention_mask, torch.ones_like(caption)], dim=1),
        layout=layout,
    )
