"""MiniCPM-o's token layout, read from the ids the way its processor finds its bounds.

Media positions are ``<unk>`` placeholders inside bounds: ``<image>`` ... ``</image>`` (an image's
first slice, or a video frame) and ``<slice>`` ... ``</slice>`` (the image's grid cells), each
exactly ``n_queries`` (64) resampler rows; ``<|audio_start|>`` ... ``<|audio_end|>`` groups of at
most 25 audio rows. Items:

- an image: its ``<image>`` bound and the ``<slice>`` bounds after it (frame group = slice index:
  0 the downscaled whole image, 1.. the grid cells row-major); ``<image_id>k</image_id>`` and the
  newlines between slice rows are text;
- a video with its sound (the audio-visual "omni" recipe): consecutive ``<unit>`` seconds, each a
  frame (frame group = the unit) and that second's audio groups; one video item and one audio
  item tied to it (``in_video``), the audio at 25 tokens a second from the video's start;
- an audio clip: consecutive audio groups (``<|audio_end|><|audio_start|>`` between them);
- a vision-only video (frames prepared as images): images whose ``frames`` entry marks them.

Resampler rows have no patch position, so ``row`` / ``col`` stay -1.

Example:
    >>> import torch
    >>> from hooked_avllm.architectures.minicpm_o.config import MiniCPMTokenIds
    >>> t = MiniCPMTokenIds(image=9, video=9, audio=9, image_start=3, image_end=4, slice_start=5, slice_end=6,
    ...                     audio_start=7, audio_end=8, unit=2, image_id_start=10, image_id_end=11)
    >>> ids = torch.tensor([[1, 3, 9, 9, 4, 5, 9, 9, 6, 7, 9, 8, 1]])
    >>> layout = layout_from_ids(ids, None, t, n_queries=2)
    >>> layout.image.sum().item(), layout.frame_group[layout.image].tolist(), layout.audio.sum().item()
    (4, [0, 0, 1, 1], 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.segments import Segment

AUDIO_TOKENS_PER_SECOND = 25


@dataclass(frozen=True)
class FrameInfo:
    """What the prompt builder knows of an image-bound item that is a video frame: the video it
    belongs to (its number among the row's videos: consecutive frames of one video make one video
    item, frame group = the frame's number) and the frame's time in seconds."""

    video: int
    time: float


@dataclass
class _Bound:
    kind: str  # "image", "slice" or "audio"
    open: int  # position of the opening bracket
    close: int  # position of the closing bracket


def _bounds(ids: list[int], t, n_queries: int, row: int) -> list[_Bound]:
    """Every bound of a row, in order, checked: brackets paired, bodies of placeholders only,
    image and slice bodies ``n_queries`` long."""
    opener = {t.image_start: "image", t.slice_start: "slice"}
    closer = {t.image_end: "image", t.slice_end: "slice"}
    if t.audio_start is not None:
        opener[t.audio_start], closer[t.audio_end] = "audio", "audio"
    bounds, current = [], None
    for i, token in enumerate(ids):
        if token in opener:
            if current is not None:
                raise InputError(f"row {row}: a {opener[token]} bound opens at position {i} inside the {current.kind} bound "
                                 f"opened at {current.open}; build prompts with model.prepare")
            current = _Bound(opener[token], i, -1)
        elif token in closer:
            if current is None or closer[token] != current.kind:
                raise InputError(f"row {row}: a closing {closer[token]} bracket at position {i} has no opening one")
            current.close = i
            body = ids[current.open + 1 : i]
            if any(x != t.image for x in body):
                raise InputError(f"row {row}: the {current.kind} bound at {current.open} holds tokens other than the "
                                 f"placeholder {t.image}")
            if current.kind != "audio" and len(body) != n_queries:
                raise InputError(f"row {row}: the {current.kind} bound at {current.open} has {len(body)} placeholders; "
                                 f"each image slice takes the resampler's {n_queries} rows")
            if current.kind == "audio" and not body:
                raise InputError(f"row {row}: the audio bound at {current.open} is empty")
            bounds.append(current)
            current = None
    if current is not None:
        raise InputError(f"row {row}: the {current.kind} bound opened at {current.open} is never closed")
    return bounds


def _row_segments(ids: list[int], t, n_queries: int, row: int, frames: dict[int, FrameInfo], videos_before: int
                  ) -> tuple[list[Segment], int]:
    """Text runs and one block segment per media item of one row's real tokens."""
    bounds = _bounds(ids, t, n_queries, row)
    units = [i for i, token in enumerate(ids) if token == t.unit]
    items: list[dict] = []  # {"kind": "image" | "audio" | "omni", "bounds": [...], "first": position}
    for b in bounds:
        last = items[-1] if items else None
        between = ids[last["bounds"][-1].close + 1 : b.open] if last is not None else []
        after_unit = b.open > 0 and ids[b.open - 1] == t.unit
        if last is not None and last["kind"] == "omni" and all(x == t.unit for x in between) and (after_unit or b.kind == "audio"):
            last["bounds"].append(b)  # the same audio-visual video: the next unit's frame, or a unit's sound
        elif after_unit and b.kind == "image":
            items.append({"kind": "omni", "bounds": [b], "first": b.open - 1})
        elif b.kind == "slice":
            if last is None or last["kind"] != "image":
                raise InputError(f"row {row}: a slice bound at {b.open} follows no image bound")
            last["bounds"].append(b)
        elif b.kind == "audio" and last is not None and last["kind"] == "audio" and not between:
            last["bounds"].append(b)  # the next group of at most 25 placeholders of the same clip
        else:
            first = b.open
            if b.kind == "image" and b.open > 0 and ids[b.open - 1] == t.image_id_end and t.image_id_start in ids[: b.open]:
                first = max(i for i in range(b.open) if ids[i] == t.image_id_start)  # <image_id>k</image_id><image>
            items.append({"kind": b.kind, "bounds": [b], "first": first})
    merged: list[dict] = []  # a vision-only video's frames (image items the builder marked) become one video item
    for item in items:
        info = frames.get(item["bounds"][0].open) if item["kind"] == "image" else None
        previous = merged[-1] if merged else None
        if info is not None and previous is not None and previous["kind"] == "frames" and previous["video"] == info.video:
            previous["frames"].append((item, info))
        elif info is not None:
            merged.append({"kind": "frames", "video": info.video, "frames": [(item, info)], "first": item["first"],
                           "bounds": item["bounds"]})
        else:
            merged.append(item)
        if merged[-1]["kind"] == "frames":
            merged[-1]["bounds"] = merged[-1]["frames"][-1][0]["bounds"]  # the last bound closes the item
    items = merged
    segments, at, video_count = [], 0, videos_before
    for item in items:
        first, last = item["first"], item["bounds"][-1].close + 1
        if first > at:
            segments.append(Segment.text(ids[at:first]))
        body = ids[first:last]
        kinds = ["text"] * len(body)
        time = torch.full((len(body),), float("nan"))
        group = torch.full((len(body),), -1, dtype=torch.long)
        if item["kind"] == "omni":
            unit_starts = sorted(u for u in units if first <= u < last)
            n_units = len(unit_starts)
            recipe = [float(u + 1) for u in range(n_units)]  # the recipe's frame of unit u is at t = u + 1 s,
            if n_units > 1:
                recipe[-1] = recipe[-2]  # the last one past the end: the previous frame again (moviepy)
            elif n_units == 1:
                recipe[0] = 0.0
            audio_index = 0
            for b in item["bounds"]:
                unit = sum(1 for u in unit_starts if u < b.open) - 1
                span = range(b.open + 1 - first, b.close - first)
                if b.kind == "image":
                    info = frames.get(b.open)
                    for k in span:
                        kinds[k], group[k] = "video", unit
                        time[k] = info.time if info is not None else recipe[unit]
                else:
                    for k in span:
                        kinds[k], time[k] = "audio", audio_index / AUDIO_TOKENS_PER_SECOND
                        audio_index += 1
            segment = Segment("video", ids=body, token_kinds=kinds, time=time, frame_group=group)
            video_count += 1
        elif item["kind"] == "audio":
            index = 0
            for b in item["bounds"]:
                for k in range(b.open + 1 - first, b.close - first):
                    kinds[k], time[k] = "audio", index / AUDIO_TOKENS_PER_SECOND
                    index += 1
            segment = Segment("audio", ids=body, token_kinds=kinds, time=time)
        elif item["kind"] == "frames":
            for f, (frame, info) in enumerate(item["frames"]):
                for bound in frame["bounds"]:
                    for k in range(bound.open + 1 - first, bound.close - first):
                        kinds[k], group[k], time[k] = "video", f, info.time
            segment = Segment("video", ids=body, token_kinds=kinds, time=time, frame_group=group)
            video_count += 1
        else:
            for slice_index, bound in enumerate(item["bounds"]):
                for k in range(bound.open + 1 - first, bound.close - first):
                    kinds[k], group[k] = "image", slice_index
            segment = Segment("image", ids=body, token_kinds=kinds, frame_group=group)
        segments.append(segment)
        at = last
    if at < len(ids):
        segments.append(Segment.text(ids[at:]))
    return segments, video_count


def layout_from_ids(
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"] | None,
    tokens,
    *,
    n_queries: int = 64,
    frames: Sequence[dict[int, FrameInfo]] | None = None,
    padding_side: str | None = None,
    pad_id: int = 0,
) -> TokenLayout:
    """The layout of MiniCPM-o ids (see the module docstring). ``frames`` (per row: the position
    of an image bound -> :class:`FrameInfo`) marks image-bound items that are video frames and
    gives their times, as the prompt builder knows them; without it, omni units' frames take the
    recipe's times (unit ``u`` at ``u + 1`` s, the last unit repeating the previous frame).
    Padding is on the left or the right of every row, never between real tokens."""
    ids = input_ids.long().cpu()
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long().cpu()
    rows, videos = [], 0
    for b in range(ids.shape[0]):
        real = torch.nonzero(mask[b]).flatten()
        if len(real) and int(real[-1]) - int(real[0]) + 1 != len(real):
            raise InputError(f"row {b}: the attention mask has padding between real tokens; pad each row on one side")
        start = int(real[0]) if len(real) else 0
        row_frames = {p - start: info for p, info in (frames[b] if frames is not None else {}).items()}
        segments, videos = _row_segments(ids[b][mask[b].bool()].tolist(), tokens, n_queries, b, row_frames, videos)
        rows.append(segments)
    if padding_side is None:
        padding_side = "left" if bool(mask[:, -1].all()) else "right"
    layout = TokenLayout.from_segments(rows, pad_id=pad_id, padding_side=padding_side, width=ids.shape[1])
    if not torch.equal(layout.attention_mask, mask):
        raise InputError("rows are padded on different sides; pad every row on the left (or every row on the right)")
    layout.input_ids = ids
    return layout


def frames_from_video_slices(
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"] | None,
    tokens,
    video_slices: Tensor,
) -> list[dict[int, FrameInfo]]:
    """Which image bounds of bare ids are video frames, from ``video_slices`` (one flag per slice,
    slices in sequence order, row-major): per row, the position of each frame's ``<image>`` bound
    -> :class:`FrameInfo` (frames in a run without an image between them are one video; time NaN).
    Frames inside ``<unit>`` seconds are the layout's own and are left out.

    Example:
        >>> from hooked_avllm.architectures.minicpm_o.config import MiniCPMTokenIds
        >>> t = MiniCPMTokenIds(image=9, image_start=3, image_end=4, slice_start=5, slice_end=6, unit=2)
        >>> ids = torch.tensor([[1, 3, 9, 4, 3, 9, 4, 5, 9, 6, 1]])
        >>> {p: f.video for p, f in frames_from_video_slices(ids, None, t, torch.tensor([True, True, True]))[0].items()}
        {1: 0, 4: 0}
    """
    ids = input_ids.long().cpu()
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long().cpu()
    flags = video_slices.bool().cpu().flatten().tolist()
    opens = {tokens.image_start, tokens.slice_start}
    rows, at = [], 0
    for b in range(ids.shape[0]):
        real = torch.nonzero(mask[b]).flatten()
        start = int(real[0]) if len(real) else 0
        row = ids[b][mask[b].bool()].tolist()
        frames: dict[int, FrameInfo] = {}
        video, in_run = -1, False
        for i, token in enumerate(row):
            if token not in opens:
                continue
            if at >= len(flags):
                raise InputError(f"video_slices has {len(flags)} flags, but the ids hold more image and slice bounds")
            is_frame = flags[at]
            at += 1
            if token != tokens.image_start:
                continue  # a slice goes with its image
            if is_frame and not (i > 0 and row[i - 1] == tokens.unit):
                if not in_run:
                    video, in_run = video + 1, True
                frames[start + i] = FrameInfo(video=video, time=float("nan"))
            elif not is_frame:
                in_run = False
        rows.append(frames)
    if at != len(flags):
        raise InputError(f"video_slices has {len(flags)} flags, but the ids hold {at} image and slice bounds")
    return rows


__all__ = ["AUDIO_TOKENS_PER_SECOND", "FrameInfo", "frames_from_video_slices", "layout_from_ids"]
