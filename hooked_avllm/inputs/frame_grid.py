"""Scores of one video's tokens placed on its frames: the grid a frame heatmap draws.

A family whose video tokens sit on a patch grid (Qwen's merged patches, VideoLLaMA2's connector
grid) places each token's score at the cell the layout records (``layout.frame_group / row /
col``: :func:`video_token_grid`). A family whose video tokens are learned queries (MiniCPM-o's
resampler) routes the scores through its own attention onto the patches first; either way the
result is a :class:`FrameGrid`.

Example:
    >>> import torch
    >>> from hooked_avllm.inputs.segments import Segment
    >>> from hooked_avllm.inputs.layout import TokenLayout
    >>> video = Segment("video", n_tokens=4, token_id=9, time=torch.tensor([0.0, 0.0, 2.0, 2.0]),
    ...                 frame_group=torch.tensor([0, 0, 1, 1]), row=torch.zeros(4, dtype=torch.long),
    ...                 col=torch.tensor([0, 1, 0, 1]))
    >>> layout = TokenLayout.from_segments([[Segment.text([1]), video]], pad_id=0)
    >>> grid = layout_frame_grid(layout, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]), frames_per_group=2)
    >>> grid.grid.tolist(), grid.first_frame.tolist(), grid.time.tolist()
    ([[[1.0, 2.0]], [[3.0, 4.0]]], [0, 2], [0.0, 2.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError


@dataclass
class FrameGrid:
    """One video's scores on its frames.

    ``grid`` ``[group, rows, cols]`` (NaN where nothing lands), ``first_frame`` ``[group]``: the
    index, among the frames the model was given, of each group's first frame; ``time``
    ``[group]``: that group's time in seconds (NaN where unknown); ``cell``: what one cell holds,
    in words (plots say it).
    """

    grid: Float[Tensor, "group rows cols"]
    first_frame: Int[Tensor, "group"]
    time: Float[Tensor, "group"]
    cell: str

    def __post_init__(self) -> None:
        if self.grid.ndim != 3 or len(self.first_frame) != self.grid.shape[0] or len(self.time) != self.grid.shape[0]:
            raise ValueError(f"a FrameGrid needs grid [group, rows, cols] and one first_frame and time per group; got "
                             f"{tuple(self.grid.shape)}, {len(self.first_frame)}, {len(self.time)}")


def video_positions(layout: Any, batch: int, video: int) -> Int[Tensor, "n_video_tokens"]:
    """Sequence positions of the tokens of video ``video`` (0 = the row's first) in row ``batch``."""
    if not 0 <= batch < layout.shape[0]:
        raise InputError(f"batch={batch} is not a row of these inputs (they have {layout.shape[0]})")
    spans = layout.spans_of("video", batch=batch)
    if not 0 <= video < len(spans):
        raise InputError(f"row {batch} has {len(spans)} video(s); video={video} does not exist")
    return spans[video].positions.cpu()


def video_token_scores(
    layout: Any,
    scores: Float[Tensor, "batch seq"] | Float[Tensor, "seq"] | Float[Tensor, "n_video_tokens"],
    batch: int = 0,
    video: int = 0,
) -> Float[Tensor, "n_video_tokens"]:
    """The scores of one video's tokens, in sequence order, from per-position scores (``[batch,
    seq]``, or ``[seq]`` for row ``batch``) or per-token ones (``[n_video_tokens]``)."""
    positions = video_positions(layout, batch, video)
    scores = torch.as_tensor(scores).detach().float().cpu()
    batch_size, seq = layout.shape
    if scores.ndim == 2:
        if tuple(scores.shape) != (batch_size, seq):
            raise ValueError(f"scores [batch, seq] must have shape {(batch_size, seq)}, got {tuple(scores.shape)}")
        return scores[batch, positions]
    if scores.ndim == 1 and len(scores) == seq:
        return scores[positions]
    if scores.ndim == 1 and len(scores) == len(positions):
        return scores
    raise ValueError(
        f"scores must be per position ([batch, seq] or [{seq}]) or per token of this video ([{len(positions)}]); "
        f"got shape {tuple(scores.shape)}"
    )


def video_token_grid(
    layout: Any,
    scores: Float[Tensor, "batch seq"] | Float[Tensor, "seq"] | Float[Tensor, "n_video_tokens"],
    batch: int = 0,
    video: int = 0,
) -> Float[Tensor, "frame_group rows cols"]:
    """Scores of one video's tokens on its token grid; NaN where no token lands.

    ``scores`` is per position (``[batch, seq]``, or ``[seq]`` for row ``batch``) or per token of
    this video (``[n_video_tokens]``, in sequence order). ``video`` counts the videos of row
    ``batch`` (0 = its first video). The grid is the one the layout records for each video token
    (``layout.frame_group``, ``row``, ``col``: cells of the merged patch grid, e.g. 28 x 28 pixels
    each, or of a connector's output grid), sized by the largest index of each. A layout without
    cells (MiniCPM-o's resampler rows) is refused: use ``frame_heatmap(model, ...)``.

    Example:
        >>> grid = video_token_grid(inputs.layout, scores)  # doctest: +SKIP
        >>> grid.shape  # (frame groups, grid rows, grid cols)  # doctest: +SKIP
        torch.Size([10, 16, 22])
    """
    positions = video_positions(layout, batch, video)
    values = video_token_scores(layout, scores, batch, video)
    frame_group = layout.frame_group[batch].cpu()[positions]
    row, col = layout.row[batch].cpu()[positions], layout.col[batch].cpu()[positions]
    if bool((frame_group < 0).any() | (row < 0).any() | (col < 0).any()):
        raise ValueError(
            f"the layout gives no grid cell (frame_group / row / col) for some tokens of video {video} in row {batch}: "
            "this family's video tokens are not patches; use hooked_avllm.analysis.frame_heatmap(model, inputs, scores)"
        )
    grid = torch.full((int(frame_group.max()) + 1, int(row.max()) + 1, int(col.max()) + 1), float("nan"))
    grid[frame_group, row, col] = values
    return grid


def group_times(layout: Any, batch: int, video: int, n_groups: int) -> Float[Tensor, "group"]:
    """Each frame group's time in seconds (``layout.video_time`` of its first token; NaN if unknown)."""
    positions = video_positions(layout, batch, video)
    groups = layout.frame_group[batch].cpu()[positions]
    times = layout.video_time[batch].cpu()[positions].float()
    out = torch.full((n_groups,), float("nan"))
    for g in range(n_groups):
        chosen = times[groups == g]
        if len(chosen):
            out[g] = chosen[0]
    return out


def layout_frame_grid(
    layout: Any,
    scores: Float[Tensor, "batch seq"] | Float[Tensor, "seq"] | Float[Tensor, "n_video_tokens"],
    batch: int = 0,
    video: int = 0,
    *,
    frames_per_group: int = 1,
) -> FrameGrid:
    """:func:`video_token_grid` as a :class:`FrameGrid`: group ``g`` starts at frame
    ``g * frames_per_group`` (a group merges that many consecutive frames)."""
    if frames_per_group < 1:
        raise ValueError(f"frames_per_group must be at least 1, got {frames_per_group}")
    grid = video_token_grid(layout, scores, batch, video)
    n_groups = grid.shape[0]
    return FrameGrid(grid, torch.arange(n_groups) * frames_per_group, group_times(layout, batch, video, n_groups),
                     cell="score of the video token at this cell of the token grid")


__all__ = ["FrameGrid", "group_times", "layout_frame_grid", "video_positions", "video_token_grid", "video_token_scores"]
