"""Qwen3-Omni's position rule: interleaved M-RoPE ids with time at 13 ids per second, and a
video's frames merged with its sound track token by token in time order.

Rules of the released code (``get_rope_index`` of the thinker), walked over each row's real tokens:

* text: ``t = h = w =`` the running index ``s``;
* image / video: ``t = s + g * second_per_grid * 13`` for frame group ``g`` (float: ids are
  fractional when ``second_per_grid * 13`` is), ``h = s + row``, ``w = s + col``;
* audio: ``t = h = w = s + k``;
* audio in video: the two openers take ``s, s + 1``; video and audio start from ``s + 2`` and are
  merged in time order (a video token first when its ``t`` is not after the audio token's); the
  two closers take ``m + 1, m + 2`` where ``m`` is the largest id of the last merged piece;
* after a media item the running index resumes at the closer + 1.

Padding positions get id 1. Ids are float32, computed with the reference's float32 operations so
fractional ids agree bit for bit.

Example:
    >>> from hooked_avllm.config import TokenIds
    >>> tokens = TokenIds(image=5, video=6, vision_start=7, vision_end=8, audio=9, audio_start=10, audio_end=11)
    >>> ids = torch.tensor([[1, 7, 5, 5, 5, 5, 8, 2]])
    >>> pos, delta = qwen3_position_ids(ids, None, tokens, image_grid_thw=torch.tensor([[1, 4, 4]]))
    >>> pos[:, 0].tolist()
    [[0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 4.0, 5.0], [0.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 5.0]]
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError


def vision_offsets(grid_thw: list[int], merge: int, second_per_grid: float, rate: float) -> Float[Tensor, "3 token"]:
    """[3, tokens] ids of one image or video relative to its start, in float32 (t fractional)."""
    t, h, w = (int(x) for x in grid_thw)
    gh, gw = h // merge, w // merge
    temporal = torch.arange(t) * torch.tensor(second_per_grid, dtype=torch.float32) * rate  # float32, as the reference
    tt = temporal.view(-1, 1).expand(-1, gh * gw).flatten()
    hh = torch.arange(gh).view(1, -1, 1).expand(t, -1, gw).flatten().float()
    ww = torch.arange(gw).view(1, 1, -1).expand(t, gh, -1).flatten().float()
    return torch.stack([tt, hh, ww])


def time_order(video_t: Tensor, n_audio: int) -> list[str]:
    """Kinds in sequence order when video tokens with times ``video_t`` merge with audio tokens
    ``0, 1, ...``: a video token goes first when its time is not after the audio token's."""
    order, v, a = [], 0, 0
    values = video_t.tolist()
    while v < len(values) and a < n_audio:
        if values[v] <= a:
            order.append("video")
            v += 1
        else:
            order.append("audio")
            a += 1
    return order + ["video"] * (len(values) - v) + ["audio"] * (n_audio - a)


def time_ordered_runs(grid_thw: tuple[int, int, int], second_per_grid: float, n_audio: int, spec: Any) -> list[tuple[str, int]]:
    """The ``(kind, count)`` runs inside a Qwen3-Omni audio-in-video bracket (an
    :class:`~hooked_avllm.architectures.qwen.rules.InputRules` ``audio_in_video_runs``).

    The released processor compares each frame group's ``g * second_per_grid * 13`` (float64) with
    the audio token index.

    Example:
        >>> time_ordered_runs((2, 4, 4), 1.0, 15, type("S", (), {"spatial_merge_size": 2, "position_id_per_second": 13})())
        [('video', 4), ('audio', 13), ('video', 4), ('audio', 2)]
    """
    t, h, w = (int(x) for x in grid_thw)
    per_group = (h // spec.spatial_merge_size) * (w // spec.spatial_merge_size)
    video_t = torch.arange(t, dtype=torch.float64).repeat_interleave(per_group) * float(second_per_grid) * spec.position_id_per_second
    runs: list[tuple[str, int]] = []
    for kind in time_order(video_t, n_audio):
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return runs


def qwen3_position_ids(
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    tokens: Any,
    *,
    image_grid_thw: Int[Tensor, "image 3"] | None = None,
    video_grid_thw: Int[Tensor, "video 3"] | None = None,
    video_second_per_grid: Float[Tensor, "video"] | None = None,
    audio_token_counts: Int[Tensor, "audio"] | None = None,
    spatial_merge_size: int = 2,
    position_id_per_second: float = 13.0,
) -> tuple[Float[Tensor, "3 batch pos"], Float[Tensor, "batch 1"]]:
    """Position ids (float32) and deltas (``max id + 1 - real length`` per row) of Qwen3-Omni
    prompts; media items are taken in order across the batch, as the processor lists them."""
    batch, length = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    real = attention_mask.bool().cpu()
    images = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    videos = iter(video_grid_thw.tolist() if video_grid_thw is not None else [])
    seconds = iter(video_second_per_grid.float().tolist() if video_second_per_grid is not None else [])
    audios = iter(audio_token_counts.tolist() if audio_token_counts is not None else [])
    merge, rate = spatial_merge_size, position_id_per_second

    def take(iterator, what: str):
        try:
            return next(iterator)
        except StopIteration:
            raise InputError(
                f"the input ids hold more {what} items than {what} inputs were given; pass one per placeholder run "
                "(as the processor produced them)"
            ) from None

    def expect(seq: list[int], at: int, kinds: list[str], what: str) -> None:
        ids = {"image": tokens.image, "video": tokens.video, "audio": tokens.audio}
        found = seq[at : at + len(kinds)]
        if len(found) != len(kinds) or any(t != ids[k] for t, k in zip(found, kinds)):
            raise InputError(
                f"the {what} placeholders at position {at} do not match the media metadata ({len(kinds)} tokens "
                "expected in the model's order); build the prompt with model.prepare or the model's processor"
            )

    position_ids = torch.ones(3, batch, length, dtype=torch.float32)
    deltas = torch.zeros(batch, 1, dtype=torch.float32)
    for row in range(batch):
        seq = input_ids[row].cpu()[real[row]].tolist()
        pieces: list[Tensor] = []
        start = torch.tensor(0.0)
        i = 0
        while i < len(seq):
            tok = seq[i]
            if tok == tokens.vision_start and i + 1 < len(seq) and seq[i + 1] == tokens.audio_start:
                grid, sec, n_audio = take(videos, "video"), take(seconds, "video_second_per_grid"), take(audios, "audio")
                pieces.append(torch.arange(2).float().expand(3, -1) + start)
                s = start + 2
                video = vision_offsets(grid, merge, sec, rate) + s
                audio = torch.arange(n_audio).float().expand(3, -1) + s
                merged, kinds, v, a = [], [], 0, 0
                while v < video.shape[1] and a < n_audio:  # one token at a time, as the reference
                    if video[0, v] <= audio[0, a]:
                        merged.append(video[:, v : v + 1])
                        kinds.append("video")
                        v += 1
                    else:
                        merged.append(audio[:, a : a + 1])
                        kinds.append("audio")
                        a += 1
                if v < video.shape[1]:
                    merged.append(video[:, v:])
                    kinds += ["video"] * (video.shape[1] - v)
                if a < n_audio:
                    merged.append(audio[:, a:])
                    kinds += ["audio"] * (n_audio - a)
                expect(seq, i + 2, kinds, "audio-in-video")
                pieces += merged
                end = merged[-1].max() + 1
                pieces.append(torch.arange(2).float().expand(3, -1) + end)
                start, i = end + 2, i + 2 + len(kinds) + 2
            elif tok == tokens.vision_start and i + 1 < len(seq) and seq[i + 1] in (tokens.image, tokens.video):
                is_image = seq[i + 1] == tokens.image
                grid = take(images if is_image else videos, "image" if is_image else "video")
                sec = 1.0 if is_image else take(seconds, "video_second_per_grid")
                pieces.append(start.expand(3, 1).clone())
                media = vision_offsets(grid, merge, sec, rate) + (start + 1)
                expect(seq, i + 1, ["image" if is_image else "video"] * media.shape[1], "image" if is_image else "video")
                pieces.append(media)
                end = media.max() + 1
                pieces.append(end.expand(3, 1).clone())
                start, i = end + 1, i + 2 + media.shape[1]
            elif tokens.audio is not None and tok == tokens.audio_start and i + 1 < len(seq) and seq[i + 1] == tokens.audio:
                n_audio = take(audios, "audio")
                pieces.append(start.expand(3, 1).clone())
                expect(seq, i + 1, ["audio"] * n_audio, "audio")
                pieces.append(torch.arange(n_audio).float().expand(3, -1) + (start + 1))
                end = start + 1 + n_audio
                pieces.append(end.expand(3, 1).clone())
                start, i = end + 1, i + 2 + n_audio
            else:
                if tok in (tokens.image, tokens.video) or (tokens.audio is not None and tok == tokens.audio):
                    raise InputError(
                        f"a media placeholder at position {i} is not inside its bracket tokens; build the prompt with "
                        "model.prepare or the model's processor"
                    )
                pieces.append(start.expand(3, 1).clone())
                start, i = start + 1, i + 1
        ids = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0)
        position_ids[:, row, real[row]] = ids
        deltas[row, 0] = (ids.max() + 1 if ids.numel() else 0) - len(seq)
    leftovers = [name for name, it in (("image", images), ("video", videos), ("audio", audios)) if next(it, None) is not None]
    if leftovers:
        raise InputError(f"more {leftovers} inputs were given than the input ids have placeholders for")
    return position_ids.to(input_ids.device), deltas.to(input_ids.device)


def layout_positions(layout: Any, spec: Any, media: Any) -> tuple[Float[Tensor, "3 batch pos"], Float[Tensor, "batch 1"]]:
    """:func:`qwen3_position_ids` of a prompt layout with these media's grids (an
    :class:`~hooked_avllm.architectures.qwen.rules.InputRules` ``layout_positions``)."""
    n = layout.n_prompt
    return qwen3_position_ids(
        layout.input_ids[:, :n], layout.attention_mask[:, :n], spec.tokens,
        image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
        video_second_per_grid=media.get("video_second_per_grid"), audio_token_counts=layout.audio_token_counts,
        spatial_merge_size=spec.spatial_merge_size, position_id_per_second=spec.position_id_per_second,
    )
