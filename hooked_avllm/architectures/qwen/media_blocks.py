"""The Qwen prompt builder's media as layout segments: each placeholder of the rendered prompt
becomes one bracketed block (``<|vision_bos|>`` + the item's tokens + ``<|vision_eos|>``; a
video with its sound track: both brackets around the interleaved chunks), with every token's kind
and origin known from the media metadata, so the layout is built rather than parsed.

Example:
    >>> from hooked_avllm.architectures.qwen.spec import MediaTokens, ModelInputSpec
    >>> spec = ModelInputSpec(tokens=MediaTokens(image=201, video=202, audio=200, vision_start=205,
    ...                       vision_end=206, audio_start=203, audio_end=204))
    >>> block = image_block(205, 206, (1, 4, 4), spec)
    >>> block.token_ids(), block.row.tolist()
    ([205, 201, 201, 201, 201, 206], [-1, 0, 0, 1, 1, -1])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from hooked_avllm.architectures.qwen.prompt import audio_in_video_ids
from hooked_avllm.architectures.qwen.spec import ModelInputSpec
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.segments import Segment


def _grid_cells(grid_thw: Sequence[int], merge: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """(frame group, row, col) of the ``n`` tokens of one item, row-major in the merged grid."""
    _, h, w = (int(x) for x in grid_thw)
    h, w = h // merge, w // merge
    order = torch.arange(n)
    return order // (h * w), (order % (h * w)) // w, order % w


def _bracketed(opener: int, closer: int, body: list[int], kinds: list[str], per_token: dict[str, Tensor]) -> Segment:
    """A block of ``opener + body + closer``; ``per_token`` arrays cover the body and get text fills."""
    fills = {"time": float("nan"), "frame_group": -1, "row": -1, "col": -1}
    padded = {}
    for name, values in per_token.items():
        edge = torch.full((1,), fills[name], dtype=values.dtype)
        padded[name] = torch.cat([edge, values, edge])
    kind = next((k for k in ("video", "image", "audio") if k in kinds), "text")
    return Segment(kind, ids=[opener, *body, closer], token_kinds=["text", *kinds, "text"], **padded)


def image_block(opener: int, closer: int, grid_thw: Sequence[int], spec: ModelInputSpec) -> Segment:
    """One image: its merged-grid tokens between the vision brackets."""
    n = int(torch.tensor(list(grid_thw)).prod()) // spec.spatial_merge_size**2
    group, row, col = _grid_cells(grid_thw, spec.spatial_merge_size, n)
    return _bracketed(opener, closer, [spec.tokens.image] * n, ["image"] * n, dict(frame_group=group, row=row, col=col))


def video_block(opener: int, closer: int, grid_thw: Sequence[int], seconds_per_grid: float, spec: ModelInputSpec) -> Segment:
    """One video without its sound: frame groups of merged-grid tokens, each group's time."""
    n = int(torch.tensor(list(grid_thw)).prod()) // spec.spatial_merge_size**2
    group, row, col = _grid_cells(grid_thw, spec.spatial_merge_size, n)
    return _bracketed(opener, closer, [spec.tokens.video] * n, ["video"] * n,
                      dict(time=group.float() * seconds_per_grid, frame_group=group, row=row, col=col))


def audio_block(opener: int, closer: int, n_audio: int, spec: ModelInputSpec) -> Segment:
    """One audio clip: ``n_audio`` tokens, 1 / ``position_id_per_second`` s apart."""
    time = torch.arange(n_audio, dtype=torch.float32) * spec.audio_seconds_per_token
    return _bracketed(opener, closer, [spec.tokens.audio] * n_audio, ["audio"] * n_audio, dict(time=time))


def audio_in_video_block(
    opener: int, closer: int, grid_thw: Sequence[int], seconds_per_grid: float, n_audio: int, spec: ModelInputSpec
) -> Segment:
    """A video with its sound track: the audio brackets inside the vision brackets, video and
    audio tokens interleaved in 2-second chunks; each token's origin from its order within its kind."""
    inner = audio_in_video_ids(tuple(int(x) for x in grid_thw), seconds_per_grid, n_audio, spec)  # audio brackets included
    t = spec.tokens
    kinds = ["video" if x == t.video else "audio" if x == t.audio else "text" for x in inner]
    n_video = kinds.count("video")
    group, row, col = _grid_cells(grid_thw, spec.spatial_merge_size, n_video)
    values = {"time": torch.full((len(inner),), float("nan")), "frame_group": torch.full((len(inner),), -1),
              "row": torch.full((len(inner),), -1), "col": torch.full((len(inner),), -1)}
    video_at = torch.tensor([i for i, k in enumerate(kinds) if k == "video"])
    audio_at = torch.tensor([i for i, k in enumerate(kinds) if k == "audio"])
    values["time"][video_at] = group.float() * seconds_per_grid
    values["time"][audio_at] = torch.arange(len(audio_at), dtype=torch.float32) * spec.audio_seconds_per_token
    values["frame_group"][video_at], values["row"][video_at], values["col"][video_at] = group, row, col
    return _bracketed(opener, closer, inner, kinds, values)


def row_segments(ids: list[int], blocks: list, spec: ModelInputSpec, where: str) -> list[Segment]:
    """Rendered ids with one placeholder per media item -> text segments and, at each placeholder,
    its block. ``blocks[i](opener, closer)`` builds item i's block from the bracket ids found around
    its placeholder, which must be the kind's brackets."""
    t = spec.tokens
    placeholder_ids = {token: kind for kind, token in t.placeholders.items()}
    slots = [i for i, token in enumerate(ids) if token in placeholder_ids]
    if len(slots) != len(blocks):
        raise InputError(
            f"{where} renders to {len(slots)} media placeholder token(s) but {len(blocks)} media item(s) "
            "are to be placed. Do not type placeholder tokens in the system prompt or text except to place media."
        )
    segments, previous = [], 0
    for slot, block in zip(slots, blocks):
        kind = placeholder_ids[ids[slot]]
        expected = (t.audio_start, t.audio_end) if kind == "audio" else (t.vision_start, t.vision_end)
        found = (ids[slot - 1] if slot > 0 else None, ids[slot + 1] if slot + 1 < len(ids) else None)
        if found != expected:
            raise InputError(
                f"{where}: the {kind} placeholder at token {slot} is not inside its bracket tokens (found {found}, "
                f"expected {expected}); write the bracketed placeholder, or let the chat template place it."
            )
        segments.append(Segment.text(ids[previous : slot - 1]))
        segments.append(block(ids[slot - 1], ids[slot + 1]))
        previous = slot + 2
    segments.append(Segment.text(ids[previous:]))
    return segments


__all__ = ["audio_block", "audio_in_video_block", "image_block", "row_segments", "video_block"]
