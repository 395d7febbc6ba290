"""MiniCPM-o's frame heatmaps: scores of resampler rows routed onto the frames' patches.

A MiniCPM-o video token is one of a slice's 64 resampler queries, a mixture of that slice's
patches, so it has no place on the frame. The scores are taken back through the resampler's own
cross-attention: the score of query ``q`` of slice ``s`` is spread over the slice's patches by
``vision_proj.attn.hook_pattern[s, :, q, :]`` averaged over heads (one step of attention rollout:
it assumes a query row carries its patches in proportion to its attention to them). A cell then
holds the score mass that reached that patch.

A frame is one slice (the audio-visual recipe) or its downscaled overview followed by a grid of
slices (the vision-only recipe, up to 2): the slices are placed on the grid of the refined frame
(the slices' patch grid, ``rows x cols`` slices), and the overview's patches, resampled to that
grid with their mass kept, are added. The slice grid's rows are read from the ids (a newline
between two slice bounds starts a row).

Example:
    >>> from hooked_avllm.analysis import attention_to_video, frame_heatmap, plot_frame_heatmaps  # doctest: +SKIP
    >>> scores = attention_to_video(model, inputs, queries="last")   # doctest: +SKIP
    >>> heat = frame_heatmap(model, inputs, scores)                  # FrameGrid [frame, patch rows, patch cols]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.frame_grid import FrameGrid, group_times, video_positions, video_token_scores
from hooked_avllm.inputs.layout import carried_layout


def resampler_patterns(model: Any, media: dict[str, Any]) -> list[Float[Tensor, "query patch"]]:
    """Every slice's resampler attention, averaged over heads: ``[query, h * w]`` per slice (its
    real patches only), slices in the order the tower runs them."""
    sizes = media.get("tgt_sizes")
    if media.get("pixel_values") is None or sizes is None:
        raise InputError("these inputs have no pixel_values / tgt_sizes: there is no video to draw")
    kept: list[Tensor] = []

    def keep(pattern: Tensor, hook: Any) -> None:
        kept.append(pattern.float().mean(1).cpu())  # [slice, query, max_patch]

    with torch.no_grad(), model.hooks(fwd_hooks=[("vision_proj.attn.hook_pattern", keep)]):
        model.encode_media(pixel_values=media["pixel_values"], tgt_sizes=sizes, video_slices=media.get("video_slices"))
    pattern = torch.cat(kept)
    return [pattern[s, :, : int(h) * int(w)] for s, (h, w) in enumerate(sizes.tolist())]


def _slice_rows(ids: list[int], bodies: list[tuple[int, int]], tokens: Any) -> list[int]:
    """How many slices each row of a frame's slice grid holds (``bodies`` after the overview)."""
    brackets = {tokens.slice_start, tokens.slice_end, tokens.image_end}
    rows = [1]
    for (_, end), (start, _) in zip(bodies, bodies[1:]):
        if all(t in brackets for t in ids[end:start]):
            rows[-1] += 1
        else:
            rows.append(1)
    return rows


def _mass_resample(patch_map: Tensor, size: tuple[int, int]) -> Tensor:
    """``patch_map`` resampled to ``size`` with its total kept (bilinear, then rescaled)."""
    if tuple(patch_map.shape) == size:
        return patch_map
    out = F.interpolate(patch_map[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
    total = out.sum()
    return out * (patch_map.sum() / total) if total > 0 else out


def minicpm_frame_grid(model: Any, inputs: Any, scores: Tensor, batch: int = 0, video: int = 0) -> FrameGrid:
    """Scores of video ``video`` of row ``batch`` on its frames' patches (see the module docstring)."""
    layout = carried_layout(inputs)
    media = getattr(inputs, "media", None)
    if layout is None or media is None:
        raise InputError("a MiniCPM-o frame grid needs prepared inputs (model.prepare / model.to_inputs) with their media")
    n_queries = model.cfg.vision.resampler.n_queries
    values = video_token_scores(layout, scores, batch, video).nan_to_num(0.0)  # [n_video_tokens]
    positions = video_positions(layout, batch, video)
    # the k-th group of n_queries video positions (row-major over the batch) is the k-th video slice
    before = int(layout.video[:batch].sum()) + int(layout.video[batch, : int(positions[0])].sum())
    video_slices = media.get("video_slices")
    if video_slices is None:
        raise InputError("these inputs mark no slice as a video frame (video_slices); build them with model.prepare(video=...)")
    slice_of = torch.nonzero(video_slices.bool().cpu()).flatten()
    patterns = resampler_patterns(model, media)
    sizes = media["tgt_sizes"].tolist()
    groups = layout.frame_group[batch].cpu()[positions]
    ids = layout.input_ids[batch].tolist()
    frames: list[Tensor] = []
    for g in range(int(groups.max()) + 1):
        chosen = torch.nonzero(groups == g).flatten()
        if len(chosen) == 0 or len(chosen) % n_queries:
            raise InputError(f"frame {g} of video {video} has {len(chosen)} tokens, not whole slices of {n_queries}")
        maps, bodies = [], []
        for first in chosen[::n_queries].tolist():
            s = int(slice_of[(before + first) // n_queries])
            h, w = sizes[s]
            query_scores = values[first : first + n_queries]  # [query]
            maps.append((query_scores @ patterns[s]).reshape(h, w))  # [h, w]: score mass per patch
            bodies.append((int(positions[first]), int(positions[first + n_queries - 1]) + 1))
        overview, cells = maps[0], maps[1:]
        if not cells:
            frames.append(overview)
            continue
        per_row = _slice_rows(ids, bodies[1:], model.cfg.tokens)
        if len(set(per_row)) != 1 or len({tuple(c.shape) for c in cells}) != 1:
            raise InputError(f"frame {g} of video {video}: its slices do not form a grid ({per_row} per row)")
        h, w = cells[0].shape
        refined = torch.cat([torch.cat(cells[r * per_row[0] : (r + 1) * per_row[0]], dim=1) for r in range(len(per_row))])
        frames.append(refined + _mass_resample(overview, (len(per_row) * h, per_row[0] * w)))
    rows, cols = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    grid = torch.full((len(frames), rows, cols), float("nan"))
    for g, frame in enumerate(frames):
        grid[g, : frame.shape[0], : frame.shape[1]] = frame
    return FrameGrid(
        grid, torch.arange(len(frames)), group_times(layout, batch, video, len(frames)),
        cell="score mass routed to this 14-px patch through the resampler's attention (heads averaged)",
    )


__all__ = ["minicpm_frame_grid", "resampler_patterns"]
