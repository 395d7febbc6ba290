"""Audio-in-video interleaving: which video and audio tokens share each 2-second chunk.

With ``use_audio_in_video`` a video and its sound track share one bracket
``<|vision_bos|><|audio_bos|> ... <|audio_eos|><|vision_eos|>``. Inside it, chunk ``j`` puts the
video tokens whose temporal position offset lies in ``[50j, 50(j+1))`` (offset
``t = floor(g * second_per_grid * 25)`` for frame group ``g``), then the audio tokens
``k in [50j, 50(j+1))``. The reference (``get_chunked_index`` in transformers) advances at most one
chunk per token; this only shows when frame groups are more than one chunk apart (fps below 1),
and is reproduced here so that the token order always agrees with the model's position ids.

Example:
    >>> audio_in_video_runs(grid_thw=(4, 4, 4), second_per_grid=1.0, n_audio=110)
    [('video', 8), ('audio', 50), ('video', 8), ('audio', 50), ('audio', 10)]
"""

from __future__ import annotations

from itertools import groupby

import torch

from hooked_avllm.architectures.qwen.positions import interleave_chunks, vision_item_positions


def audio_in_video_runs(
    grid_thw: tuple[int, int, int],
    second_per_grid: float,
    n_audio: int,
    *,
    spatial_merge_size: int = 2,
    position_id_per_second: float = 25.0,
    seconds_per_chunk: float = 2.0,
) -> list[tuple[str, int]]:
    """The kinds inside one audio-in-video bracket, as ``(kind, count)`` runs in sequence order.

    Consecutive runs of the same kind are kept apart (one per chunk) so the chunk structure shows;
    empty runs are left out. The chunk rule is :func:`~hooked_avllm.architectures.qwen.positions.interleave_chunks`,
    the one the position ids use, so token order and positions cannot disagree.
    """
    grid = [int(x) for x in grid_thw]
    tokens_per_chunk = int(position_id_per_second * seconds_per_chunk)
    offsets = vision_item_positions(grid, spatial_merge_size, second_per_grid, position_id_per_second)[0]
    video = [stop - start for start, stop in interleave_chunks(offsets, tokens_per_chunk)]
    audio = [stop - start for start, stop in interleave_chunks(torch.arange(n_audio), tokens_per_chunk)]
    runs: list[tuple[str, int]] = []
    for j in range(max(len(video), len(audio))):
        if j < len(video) and video[j]:
            runs.append(("video", video[j]))
        if j < len(audio) and audio[j]:
            runs.append(("audio", audio[j]))
    return runs


def merge_runs(runs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Join neighbouring runs of the same kind (the order as seen in a token sequence)."""
    return [(kind, sum(count for _, count in group)) for kind, group in groupby(runs, key=lambda run: run[0])]


__all__ = ["audio_in_video_runs", "merge_runs"]
