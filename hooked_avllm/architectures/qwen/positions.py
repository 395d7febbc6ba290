"""Three-row (temporal, height, width) position ids for M-RoPE / TMRoPE.

One walk over each row's real tokens gives every position its ids, following the rules of the
released Qwen2.5-Omni and Qwen2.5-VL code:

* text: ``t = h = w =`` the running index;
* image / video: ``t = s + floor(g * second_per_grid * rate)`` for frame group ``g``,
  ``h = s + row``, ``w = s + col`` in the merged grid;
* audio: ``t = h = w = s + k``;
* audio in video: both brackets' openers share one id, video and audio start from the same ``s``
  and are interleaved chunk by chunk, both closers share ``max + 1``;
* after a media item the running index resumes at ``max + 1``.

Padding positions get id 1, as in the reference. Two walks apply these rules:
:func:`rope_position_ids` over bare token ids (inputs that come without a layout; tests compare it
with the reference's ``get_rope_index``), and :func:`positions_from_layout` over a parsed layout's
spans, so prepared inputs' ids are read once (tests check the two agree).
"""

from __future__ import annotations

from bisect import bisect_left

import torch
from jaxtyping import Float, Int
from torch import Tensor


def vision_item_positions(grid_thw: list[int], merge: int, second_per_grid: float, rate: float) -> Tensor:
    """[3, t*h*w/merge**2] offsets (from the item's start) of one image or video, row-major per frame."""
    t, h, w = grid_thw
    gh, gw = h // merge, w // merge
    temporal = (torch.arange(t).float() * torch.tensor(second_per_grid, dtype=torch.float32) * rate).long()
    tt = temporal.view(-1, 1, 1).expand(t, gh, gw)
    hh = torch.arange(gh).view(1, -1, 1).expand(t, gh, gw)
    ww = torch.arange(gw).view(1, 1, -1).expand(t, gh, gw)
    return torch.stack((tt, hh, ww)).reshape(3, -1)


def interleave_chunks(values: Tensor, per_chunk: int) -> list[tuple[int, int]]:
    """Split a non-decreasing sequence of temporal offsets into chunks of ``per_chunk`` ids.

    Follows the reference's scan: the boundary advances by one chunk at each crossing, so a
    jump over several chunks still opens only one new chunk per token.
    """
    spans, start, boundary = [], 0, per_chunk
    for i, v in enumerate(values.tolist()):
        if v >= boundary:
            spans.append((start, i))
            start, boundary = i, boundary + per_chunk
    spans.append((start, len(values)))
    return spans


def audio_in_video_order(video: Tensor, audio: Tensor, per_chunk: int) -> Tensor:
    """Video and audio offsets [3, n] in sequence order: chunk j's video tokens, then its audio tokens."""
    v_spans, a_spans = interleave_chunks(video[0], per_chunk), interleave_chunks(audio[0], per_chunk)
    pieces = []
    for j in range(max(len(v_spans), len(a_spans))):
        if j < len(v_spans):
            pieces.append(video[:, v_spans[j][0] : v_spans[j][1]])
        if j < len(a_spans):
            pieces.append(audio[:, a_spans[j][0] : a_spans[j][1]])
    return torch.cat(pieces, dim=1)


def rope_position_ids(
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    *,
    tokens,
    image_grid_thw: Int[Tensor, "image 3"] | None = None,
    video_grid_thw: Int[Tensor, "video 3"] | None = None,
    video_second_per_grid: Float[Tensor, "video"] | None = None,
    audio_token_counts: Int[Tensor, "audio"] | None = None,
    use_audio_in_video: bool = False,
    spatial_merge_size: int = 2,
    position_id_per_second: float = 25.0,
    seconds_per_chunk: float = 2.0,
) -> tuple[Int[Tensor, "3 batch pos"], Int[Tensor, "batch 1"]]:
    """Position ids and rope deltas (``max id + 1 - real length`` per row).

    ``tokens`` has the special ids as attributes ``image, video, audio, vision_start,
    audio_start`` (a :class:`~hooked_avllm.config.TokenIds`). Media items are taken in order
    across the whole batch, as the processor lists them.

    Example:
        >>> from hooked_avllm.config import TokenIds
        >>> ids = torch.tensor([[1, 205, 201, 201, 201, 201, 206, 2]])
        >>> pos, delta = rope_position_ids(ids, None, tokens=TokenIds(201, 202, 205, 206),
        ...                                image_grid_thw=torch.tensor([[1, 4, 4]]))
        >>> pos[:, 0].tolist()
        [[0, 1, 2, 2, 2, 2, 4, 5], [0, 1, 2, 2, 3, 3, 4, 5], [0, 1, 2, 3, 2, 3, 4, 5]]
    """
    batch, length = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    real = attention_mask.bool().cpu()
    ids_cpu = input_ids.cpu()
    images = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    videos = iter(video_grid_thw.tolist() if video_grid_thw is not None else [])
    seconds = iter(video_second_per_grid.tolist() if video_second_per_grid is not None else [])
    audios = iter(audio_token_counts.tolist() if audio_token_counts is not None else [])
    merge = spatial_merge_size
    per_chunk = int(position_id_per_second * seconds_per_chunk)

    def take(iterator, what):
        try:
            return next(iterator)
        except StopIteration:
            raise ValueError(
                f"the input ids hold more {what} placeholder runs than {what} inputs were given; "
                f"pass one {what} per placeholder run (as the processor produced them)"
            ) from None

    def expect_run(seq, at, token, count, what):
        run = seq[at : at + count]
        if len(run) != count or any(t != token for t in run):
            actual = 0
            while at + actual < len(seq) and seq[at + actual] == token:
                actual += 1
            raise ValueError(
                f"{what} placeholder run at position {at} has {actual} tokens but the {what} input "
                f"yields {count}; expand the placeholders with the processor's counts"
            )

    position_ids = torch.ones(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    for row in range(batch):
        seq = ids_cpu[row][real[row]].tolist()
        pieces: list[Tensor] = []
        start = 0  # id for the next token
        i = 0
        while i < len(seq):
            tok = seq[i]
            opens_av = (
                use_audio_in_video and tok == tokens.vision_start and i + 1 < len(seq) and seq[i + 1] == tokens.audio_start
            )
            if opens_av:
                grid = take(videos, "video")
                sec = take(seconds, "video_second_per_grid")
                n_audio = take(audios, "audio")
                video = vision_item_positions(grid, merge, sec, position_id_per_second)
                audio = torch.arange(n_audio).expand(3, -1)
                media = audio_in_video_order(video, audio, per_chunk) + start + 1
                n_video = video.shape[1]
                body = seq[i + 2 : i + 2 + n_video + n_audio]
                if sum(t == tokens.video for t in body) != n_video or sum(t == tokens.audio for t in body) != n_audio:
                    raise ValueError(
                        f"audio-in-video bracket at position {i} does not hold {n_video} video and {n_audio} audio "
                        "tokens; build the prompt with use_audio_in_video=True and the same media"
                    )
                end = int(media.max()) + 1
                pieces += [torch.full((3, 2), start), media, torch.full((3, 2), end)]
                start, i = end + 1, i + 4 + n_video + n_audio
            elif tok in (tokens.image, tokens.video):
                is_image = tok == tokens.image
                grid = take(images if is_image else videos, "image" if is_image else "video")
                sec = 1.0 if is_image else take(seconds, "video_second_per_grid")
                media = vision_item_positions(grid, merge, sec, position_id_per_second if not is_image else 0.0) + start
                expect_run(seq, i, tok, media.shape[1], "image" if is_image else "video")
                pieces.append(media)
                start, i = int(media.max()) + 1, i + media.shape[1]
            elif tokens.audio is not None and tok == tokens.audio:
                n_audio = take(audios, "audio")
                expect_run(seq, i, tok, n_audio, "audio")
                pieces.append(torch.arange(n_audio).expand(3, -1) + start)
                start, i = start + n_audio, i + n_audio
            else:
                pieces.append(torch.full((3, 1), start))
                start, i = start + 1, i + 1
        ids = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)
        position_ids[:, row, real[row]] = ids
        deltas[row, 0] = (int(ids.max()) + 1 if ids.numel() else 0) - len(seq)
    return position_ids.to(input_ids.device), deltas.to(input_ids.device)


def positions_from_layout(layout, spec, media) -> tuple[Int[Tensor, "3 batch pos"], Int[Tensor, "batch 1"]]:
    """The same ids as :func:`rope_position_ids`, from a prompt :class:`TokenLayout`'s spans (each
    media item's placeholder positions and bracket bounds) and the media's grids
    (``image_grid_thw``, ``video_grid_thw``, ``video_second_per_grid``: 1 s per frame group when
    absent), so the ids are not read again.

    Example:
        >>> from hooked_avllm.architectures.qwen.parse import layout_from_ids
        >>> from hooked_avllm.architectures.qwen.spec import MediaTokens, ModelInputSpec
        >>> spec = ModelInputSpec(tokens=MediaTokens(image=201, video=202, audio=200, vision_start=205,
        ...                       vision_end=206, audio_start=203, audio_end=204))
        >>> ids = torch.tensor([[1, 205, 201, 201, 201, 201, 206, 2]])
        >>> media = {"image_grid_thw": torch.tensor([[1, 4, 4]])}
        >>> layout = layout_from_ids(ids, None, spec, media)
        >>> positions_from_layout(layout, spec, media)[0][:, 0].tolist()
        [[0, 1, 2, 2, 2, 2, 4, 5], [0, 1, 2, 2, 3, 3, 4, 5], [0, 1, 2, 3, 2, 3, 4, 5]]
    """
    mask = layout.attention_mask[:, : layout.n_prompt].bool().cpu()
    batch, length = mask.shape
    merge, rate = spec.spatial_merge_size, spec.position_id_per_second
    per_chunk = int(rate * spec.seconds_per_chunk)
    grids = {"image": media.get("image_grid_thw"), "video": media.get("video_grid_thw")}
    seconds = media.get("video_second_per_grid")
    if seconds is None and grids["video"] is not None:  # the reference's default: 1 s per frame group
        seconds = torch.ones(len(grids["video"]))
    position_ids = torch.ones(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    for row in range(batch):
        spans = sorted(layout.spans_of(batch=row), key=lambda s: (s.start, s.kind != "video"))
        blocks = []  # (first position, last position + 1, spans of the block); an audio-in-video pair is one block
        for span in spans:
            if span.kind == "audio" and span.in_video is not None and blocks and blocks[-1][2][0].kind == "video" \
                    and blocks[-1][2][0].start == span.start:
                blocks[-1][2].append(span)
            else:
                blocks.append((span.start, span.stop, [span]))
        ids = torch.ones(3, length, dtype=torch.long)
        start, at = 0, 0
        real_positions = torch.nonzero(mask[row]).flatten()
        real = real_positions.tolist()

        def text_run(until: int) -> None:  # text (and plain media brackets) before ``until``: the running index
            nonlocal start, at
            end = bisect_left(real, until, at)
            ids[:, real_positions[at:end]] = torch.arange(start, start + end - at)
            start, at = start + end - at, end

        for begin, stop, items in blocks:
            av = len(items) == 2
            first = begin if av else int(items[0].positions[0])
            text_run(first)
            if av:
                video, audio = items
                v = vision_item_positions(grids["video"][video.index].tolist(), merge, float(seconds[video.index]), rate)
                a = torch.arange(len(audio.positions)).expand(3, -1)
                body = torch.cat([video.positions, audio.positions]).sort().values
                media = audio_in_video_order(v, a, per_chunk) + start + 1
                end = int(media.max()) + 1
                ids[:, begin : begin + 2] = start
                ids[:, body] = media
                ids[:, stop - 2 : stop] = end
                start, last = end + 1, stop
            else:
                item = items[0]
                if item.kind == "audio":
                    media = torch.arange(len(item.positions)).expand(3, -1) + start
                else:
                    sec = float(seconds[item.index]) if item.kind == "video" else 1.0
                    media = vision_item_positions(grids[item.kind][item.index].tolist(), merge, sec,
                                                  rate if item.kind == "video" else 0.0) + start
                ids[:, item.positions] = media
                start, last = int(media.max()) + 1, int(item.positions[-1]) + 1
            at = bisect_left(real, last, at)
        text_run(length)
        position_ids[:, row] = ids
        deltas[row, 0] = (int(ids[:, mask[row]].max()) + 1 if real else 0) - len(real)
    return position_ids, deltas


__all__ = ["audio_in_video_order", "interleave_chunks", "positions_from_layout", "rope_position_ids", "vision_item_positions"]
