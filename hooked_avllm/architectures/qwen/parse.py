"""A Qwen layout read from bare token ids (a Hugging Face processor's output): find each media block
in the ids (``<|vision_bos|>`` + placeholders + ``<|vision_eos|>``; audio in ``<|audio_bos|>`` ...;
a video with its sound track in both), check it against the media metadata (grids, audio lengths),
and build the layout from the same blocks the Qwen prompt builder emits, so prepared and parsed
inputs lay out identically.

Example:
    >>> import torch
    >>> from hooked_avllm.architectures.qwen.spec import MediaTokens, ModelInputSpec
    >>> spec = ModelInputSpec(tokens=MediaTokens(image=201, video=202, audio=200, vision_start=205,
    ...                       vision_end=206, audio_start=203, audio_end=204))
    >>> layout = layout_from_ids(torch.tensor([[1, 205, 201, 201, 201, 201, 206, 2]]), None, spec,
    ...                          {"image_grid_thw": torch.tensor([[1, 4, 4]])})
    >>> layout.image.sum().item(), layout.row[layout.image].tolist()
    (4, [0, 0, 1, 1])
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.architectures.qwen.interleave import merge_runs
from hooked_avllm.architectures.qwen.media_blocks import audio_block, audio_in_video_block, image_block, video_block
from hooked_avllm.architectures.qwen.spec import ModelInputSpec
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.segments import Segment


def audio_counts(spec: ModelInputSpec, media: Mapping[str, Any]) -> Int[Tensor, "n_audio"] | None:
    """Audio tokens per clip by the family's rule, from the feature mask (or the full feature length)."""
    features, mask = media.get("input_features"), media.get("feature_attention_mask")
    if features is None:
        return None
    if mask is not None:
        check_feature_mask(mask, features)
    lengths = mask.sum(-1) if mask is not None else torch.full((features.shape[0],), features.shape[-1])
    return spec.rules.audio_token_counts(lengths.long().cpu())


def check_feature_mask(mask: Any, features: Tensor) -> None:
    """``feature_attention_mask`` must be ``[n_audio, n_frames]`` like ``input_features`` ``[n_audio,
    mel, n_frames]``, 1 at real frames and 0 at padding, with a real frame in every clip.

    Example:
        >>> check_feature_mask(torch.ones(2, 300), torch.zeros(1, 128, 300))
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: feature_attention_mask has shape (2, 300) but input_features are (1, 128, 300): give one row of n_frames 0/1 per audio clip ([n_audio, n_frames] = [1, 300])
    """
    if not isinstance(mask, Tensor):
        raise InputError(f"feature_attention_mask must be a tensor [n_audio, n_frames]; got {type(mask).__name__}")
    expected = (features.shape[0], features.shape[-1])
    if mask.ndim != 2 or tuple(mask.shape) != expected:
        raise InputError(
            f"feature_attention_mask has shape {tuple(mask.shape)} but input_features are {tuple(features.shape)}: give "
            f"one row of n_frames 0/1 per audio clip ([n_audio, n_frames] = {list(expected)})"
        )
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        values = sorted({float(v) for v in mask[~binary].tolist()})[:5]
        raise InputError(f"feature_attention_mask must hold 1 (real frame) and 0 (padding) only; got the values {values}")
    empty = ~mask.bool().any(-1)
    if bool(empty.any()):
        raise InputError(
            f"feature_attention_mask row {int(torch.nonzero(empty)[0])} has no real frame (all 0): drop that audio clip"
        )


def check_seconds_per_grid(seconds: Tensor) -> None:
    """Seconds per frame group (``video_second_per_grid``) must be finite and positive: they set
    the videos' time positions.

    Example:
        >>> check_seconds_per_grid(torch.tensor([1.0, -0.5]))
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: video_second_per_grid must be positive seconds per frame group (temporal_patch_size / fps, e.g. 1.0 for 2 frames a group at 2 fps); got -0.5 for video 1
    """
    bad = ~(torch.isfinite(seconds) & (seconds > 0))
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0])
        raise InputError(
            "video_second_per_grid must be positive seconds per frame group (temporal_patch_size / fps, e.g. 1.0 for 2 "
            f"frames a group at 2 fps); got {float(seconds[index]):g} for video {index}"
        )


def layout_from_ids(
    input_ids: Int[Tensor, "batch seq"],
    attention_mask: Int[Tensor, "batch seq"] | None,
    spec: ModelInputSpec,
    media: Mapping[str, Any],
    *,
    padding_side: str = "left",
) -> TokenLayout:
    """Parse the placeholders of ``input_ids``, check them against ``media`` (``image_grid_thw``,
    ``video_grid_thw``, ``video_second_per_grid``, ``input_features`` / ``feature_attention_mask``,
    ``use_audio_in_video``) and build the layout from the media blocks found, with the family's
    position ids.

    Raises :class:`InputError` when a placeholder run does not have the length its grid or audio
    length implies, when a media token sits outside its bracket, or when there are more or fewer
    media items in the ids than in the metadata.
    """
    input_ids = input_ids.long().cpu()
    batch, seq = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.long().cpu()
    merge = spec.spatial_merge_size**2
    image_grid_thw, video_grid_thw = media.get("image_grid_thw"), media.get("video_grid_thw")
    video_second_per_grid = media.get("video_second_per_grid")
    audio_token_counts = audio_counts(spec, media)
    grids = {
        "image": image_grid_thw.reshape(-1, 3).long().cpu() if image_grid_thw is not None else torch.zeros(0, 3, dtype=torch.long),
        "video": video_grid_thw.reshape(-1, 3).long().cpu() if video_grid_thw is not None else torch.zeros(0, 3, dtype=torch.long),
    }
    n_audio_items = (
        audio_token_counts.long().cpu() if audio_token_counts is not None else torch.zeros(0, dtype=torch.long)
    )
    if video_second_per_grid is None:
        video_second_per_grid = torch.ones(len(grids["video"]), dtype=torch.float32)
    seconds_per_grid = torch.as_tensor(video_second_per_grid).float().reshape(-1).cpu()
    check_seconds_per_grid(seconds_per_grid)
    if len(seconds_per_grid) != len(grids["video"]):
        raise InputError(
            f"video_second_per_grid has {len(seconds_per_grid)} entries for {len(grids['video'])} videos; give one per video."
        )

    blocks: list[list[tuple[int, int, Segment]]] = [[] for _ in range(batch)]  # per row: (start, stop, block)
    counters = {"image": 0, "video": 0, "audio": 0}
    t = spec.tokens

    def take(kind: str) -> int:
        index = counters[kind]
        available = len(n_audio_items) if kind == "audio" else len(grids[kind])
        if index >= available:
            raise InputError(
                f"input_ids hold more {kind} items than the {available} given; give one {kind} per placeholder (pass "
                f"the {kind} with the ids, or build the inputs with model.prepare)."
            )
        counters[kind] += 1
        return index

    for b in range(batch):
        real = attention_mask[b].bool()
        ids = input_ids[b].masked_fill(~real, -1)
        starts = (
            torch.nonzero(
                (ids == t.vision_start) | ((ids == t.audio_start) if t.audio_start is not None else False)
            )
            .flatten()
            .tolist()
        )
        media_ids = [x for x in (t.image, t.video, t.audio) if x is not None]
        is_media = torch.isin(ids, torch.tensor(media_ids))
        run_ends = torch.nonzero(~is_media).flatten()  # a media run ends at the next non-media position
        covered = torch.zeros(seq, dtype=torch.bool)
        skip_until = -1
        for start in starts:
            if start < skip_until:
                continue
            opener = int(ids[start])
            nxt = int(ids[start + 1]) if start + 1 < seq else -1
            if opener == t.vision_start and nxt == t.audio_start and t.audio_start is not None:
                body_start, closers = start + 2, (t.audio_end, t.vision_end)
            elif opener == t.vision_start and nxt in (t.image, t.video):
                body_start, closers = start + 1, (t.vision_end,)
            elif opener == t.audio_start and nxt == t.audio:
                body_start, closers = start + 1, (t.audio_end,)
            else:
                continue  # a bracket token used as text
            after = run_ends[torch.searchsorted(run_ends, body_start) :]
            body_end = int(after[0]) if len(after) else seq
            stop = body_end + len(closers)
            if [int(x) for x in ids[body_end:stop]] != list(closers):
                raise InputError(
                    f"Row {b}: the media placeholders starting at position {start} are not closed by their "
                    "end token(s); build prompts with prepare_inputs rather than by hand."
                )
            body = ids[body_start:body_end]
            positions = torch.arange(body_start, body_end)
            covered[body_start:body_end] = True
            skip_until = stop
            if len(closers) == 2:  # a video with its audio track
                v, a = take("video"), take("audio")
                expected = merge_runs(spec.rules.audio_in_video_runs(
                    tuple(grids["video"][v].tolist()), float(seconds_per_grid[v]), int(n_audio_items[a]), spec))
                found = merge_runs(
                    [("video" if x == t.video else "audio" if x == t.audio else "image", 1) for x in body.tolist()]
                )
                if found != expected:
                    raise InputError(
                        f"Row {b}: the audio-in-video block at position {start} does not interleave video and audio "
                        f"tokens in the order the model expects (found runs {found[:6]}..., expected "
                        f"{expected[:6]}...). Check use_audio_in_video and the audio length."
                    )
                block = audio_in_video_block(t.vision_start, t.vision_end, grids["video"][v].tolist(),
                                             float(seconds_per_grid[v]), int(n_audio_items[a]), spec)
                blocks[b].append((start, stop, block))
                continue
            kind = {t.image: "image", t.video: "video", t.audio: "audio"}[int(body[0])]
            if (body != body[0]).any():
                raise InputError(f"Row {b}: the {kind} block at position {start} mixes placeholder kinds.")
            index = take(kind)
            expected_len = int(n_audio_items[index]) if kind == "audio" else int(grids[kind][index].prod()) // merge
            if len(positions) != expected_len:
                raise InputError(
                    f"Row {b}: {kind} {index} has {len(positions)} placeholder tokens but its "
                    f"{'length' if kind == 'audio' else 'grid'} needs {expected_len}. Let prepare_inputs expand "
                    "the placeholders, or fix the grid / feature mask."
                )
            if kind == "audio":
                block = audio_block(opener, closers[0], expected_len, spec)
            elif kind == "video":
                block = video_block(opener, closers[0], grids[kind][index].tolist(), float(seconds_per_grid[index]), spec)
            else:
                block = image_block(opener, closers[0], grids[kind][index].tolist(), spec)
            blocks[b].append((start, stop, block))
        stray = is_media & ~covered
        if stray.any():
            position = int(torch.nonzero(stray)[0])
            raise InputError(
                f"Row {b}: media placeholder token {int(ids[position])} at position {position} is outside a "
                "media bracket. Put placeholders only where media go (prepare_inputs adds the brackets)."
            )
    for kind, count in counters.items():
        available = len(n_audio_items) if kind == "audio" else len(grids[kind])
        if count != available:
            raise InputError(
                f"{available} {kind} item(s) were given but input_ids place {count}; give one placeholder per {kind}."
            )

    rows = []
    for b in range(batch):  # text between the blocks; the real tokens must sit on one side
        real = torch.nonzero(attention_mask[b]).flatten()
        if len(real) and int(real[-1]) - int(real[0]) + 1 != len(real):
            raise InputError(f"Row {b}: the attention mask has padding between real tokens; pad each row on one side.")
        first, last = (int(real[0]), int(real[-1]) + 1) if len(real) else (0, 0)
        segments, at = [], first
        for start, stop, block in blocks[b]:
            segments.append(Segment.text(input_ids[b, at:start].tolist()))
            segments.append(block)
            at = stop
        segments.append(Segment.text(input_ids[b, at:last].tolist()))
        rows.append(segments)
    ends = {(int(m.nonzero()[0]) > 0, int(m.nonzero()[-1]) < seq - 1) for m in attention_mask if m.any()}
    side = "right" if any(right for _, right in ends) else "left" if any(left for left, _ in ends) else padding_side
    media = dict(media)
    if video_grid_thw is not None and media.get("video_second_per_grid") is None:
        media["video_second_per_grid"] = seconds_per_grid  # the reference's default: 1 s per frame group
    layout = TokenLayout.from_segments(rows, pad_id=0, padding_side=side, width=seq,
                                       positions=lambda built: spec.layout_positions(built, media))
    if not torch.equal(layout.attention_mask, attention_mask):
        raise InputError("rows are padded on different sides; pad every row on the left (or every row on the right).")
    layout.input_ids = input_ids  # as given, padding ids included
    return layout


__all__ = ["audio_counts", "check_feature_mask", "check_seconds_per_grid", "layout_from_ids"]
