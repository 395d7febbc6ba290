"""The rules a Qwen family plugs into the shared Qwen input pipeline: how many audio tokens a
clip's mel frames give, how a video's frames and sound track interleave in one bracket, and how
a layout's position ids are computed.

The defaults are Qwen2.5-Omni's (Whisper-style audio at 25 tokens per second, 2-second chunks,
integer TMRoPE ids). A family with other rules passes its own :class:`InputRules` in its
``ModelInputSpec`` (Qwen3-Omni: AuT's 13 tokens per second, a token-by-token time merge, float ids).

Example:
    >>> import torch
    >>> QWEN2_5_RULES.audio_token_counts(torch.tensor([100])).tolist()
    [25]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jaxtyping import Int
from torch import Tensor

from hooked_avllm.architectures.qwen.interleave import audio_in_video_runs
from hooked_avllm.architectures.qwen.positions import positions_from_layout
from hooked_avllm.towers.whisper_audio import audio_token_counts

if TYPE_CHECKING:
    from hooked_avllm.architectures.qwen.spec import ModelInputSpec


def chunked_runs(grid_thw: tuple[int, int, int], second_per_grid: float, n_audio: int, spec: ModelInputSpec) -> list[tuple[str, int]]:
    """Qwen2.5-Omni's audio-in-video order: each 2-second chunk's video tokens, then its audio tokens."""
    return audio_in_video_runs(
        grid_thw, second_per_grid, n_audio, spatial_merge_size=spec.spatial_merge_size,
        position_id_per_second=spec.position_id_per_second, seconds_per_chunk=spec.seconds_per_chunk,
    )


@dataclass(frozen=True)
class InputRules:
    """``audio_token_counts(mel_frames)``: tokens per clip; ``audio_in_video_runs(grid_thw,
    second_per_grid, n_audio, spec)``: the ``(kind, count)`` runs inside an audio-in-video bracket;
    ``layout_positions(layout, spec, media)``: ``(position_ids [3, batch, seq], deltas [batch, 1])`` of a
    prompt layout whose media (grids, seconds per frame group) are ``media``."""

    audio_token_counts: Callable[[Int[Tensor, "n_audio"]], Int[Tensor, "n_audio"]]
    audio_in_video_runs: Callable[..., list[tuple[str, int]]]
    layout_positions: Callable[..., tuple[Tensor, Tensor]]


QWEN2_5_RULES = InputRules(audio_token_counts, chunked_runs, positions_from_layout)

__all__ = ["QWEN2_5_RULES", "InputRules", "chunked_runs"]
