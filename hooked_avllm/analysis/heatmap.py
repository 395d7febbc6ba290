"""Frame heatmaps (PAPER.md E4): attention from caption tokens to video tokens, drawn over the frames.

Three steps, each usable alone:

* :func:`attention_to_video` averages, inside ``hook_pattern`` hooks (one layer at a time, no
  pattern kept), the attention from chosen query positions (e.g. a teacher-forced caption span)
  to every key, over chosen layers, heads and queries -> a score per video position;
* :func:`frame_heatmap` puts per-position scores of one video on its frames, as the model's family
  places its video tokens: the token grid ``[frame_group, rows, cols]`` the layout records (Qwen's
  merged patches, VideoLLaMA2's connector grid; :func:`video_token_grid` alone), or, for
  MiniCPM-o's resampler rows, the frames' patches reached through the resampler's attention;
* :func:`plot_frame_heatmaps` draws each frame group's grid, upsampled to the frame size, over the
  group's first frame, with what a cell holds on the colour bar.

Example:
    >>> from hooked_avllm.inputs import teacher_forced_inputs  # doctest: +SKIP
    >>> video = load_video("clip.mp4")                                          # doctest: +SKIP
    >>> forced = teacher_forced_inputs(inputs, caption_ids)                      # doctest: +SKIP
    >>> scores = attention_to_video(model, forced, queries=slice(4, 9), layers=range(18, 30))  # doctest: +SKIP
    >>> heat = frame_heatmap(model, forced, scores)                              # doctest: +SKIP
    >>> plot_frame_heatmaps(video, heat, path="helicopter.png")                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.inputs.frame_grid import FrameGrid, video_token_grid
from hooked_avllm.inputs.layout import carried_layout
from hooked_avllm.inputs.select import select_positions

if TYPE_CHECKING:  # pragma: no cover
    from hooked_avllm.model import HookedAVLLM

QueriesLike = Union[str, slice, Tensor, Sequence[int]]


def query_mask(layout: Any, queries: QueriesLike, attention_mask: Tensor | None = None) -> Bool[Tensor, "batch seq"]:
    """Query positions: a bool mask, ``"last"``, ``"generated"``, a modality, indices, or a
    ``slice`` of each row's generated tokens (``slice(4, 9)``: caption tokens 4..8).

    Example:
        >>> query_mask(forced.layout, slice(0, 3)).sum()  # the first three caption tokens  # doctest: +SKIP
        tensor(3)
    """
    if isinstance(queries, slice):
        generated = select_positions(layout, "generated", attention_mask)
        mask = torch.zeros_like(generated)
        for b in range(generated.shape[0]):
            chosen = torch.nonzero(generated[b]).flatten()[queries]
            if len(chosen) == 0:
                raise ValueError(f"the slice {queries} selects no generated token of row {b}")
            mask[b, chosen] = True
        return mask
    return select_positions(layout, queries, attention_mask)


@torch.no_grad()
def attention_to_video(
    model: "HookedAVLLM",
    inputs: Any,
    queries: QueriesLike = "last",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    progress: bool = False,
) -> Float[Tensor, "batch seq"]:
    """Mean attention from the query positions to every video token (NaN at other positions).

    Averaged over ``layers`` (default: all; negative counts from the end), ``heads`` (default:
    all) and the chosen queries of each row (see :func:`query_mask`; ``"generated"`` needs a
    teacher-forced caption, :func:`~hooked_avllm.inputs.teacher_forced_inputs`).
    Computed inside ``blocks.{l}.attn.hook_pattern`` hooks, so only one ``[batch, seq]``
    accumulator outlives each layer. Feed the result to :func:`frame_heatmap`.

    Example:
        >>> scores = attention_to_video(model, forced, queries="generated", layers=range(18, 30))  # doctest: +SKIP
        >>> scores[forced.layout.video].sum()  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    layout = carried_layout(inputs)
    if layout is None:
        raise ValueError("attention_to_video needs inputs with a TokenLayout (model.prepare / ModelInputs)")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.text.n_heads
    layer_list = list(range(n_layers)) if layers is None else sorted({int(l) % n_layers for l in layers})
    if layers is not None and any(not -n_layers <= int(l) < n_layers for l in layers):
        raise ValueError(f"layers must lie in [-{n_layers}, {n_layers})")
    head_index = None if heads is None else torch.as_tensor(list(heads), dtype=torch.long)
    if head_index is not None and (head_index.min() < 0 or head_index.max() >= n_heads):
        raise ValueError(f"heads must lie in [0, {n_heads})")
    qmask = query_mask(layout, queries, getattr(inputs, "attention_mask", None))  # [batch, seq]
    n_queries = qmask.sum(-1)  # [batch]
    if bool((n_queries == 0).any()):
        raise ValueError(f"rows {torch.nonzero(n_queries == 0).flatten().tolist()} have no query position")
    total = torch.zeros(qmask.shape, dtype=torch.float32)  # [batch, key]
    bar = tqdm(total=len(layer_list), desc="attention to video", disable=not progress, leave=False)

    def reduce(pattern: Tensor, hook: Any) -> None:
        # pattern: [batch, head, query, key]; a full forward, so query == key positions
        chosen = pattern if head_index is None else pattern[:, head_index.to(pattern.device)]
        per_query = chosen.float().mean(1)  # [batch, query, key]
        weights = qmask.to(per_query.device, per_query.dtype)  # [batch, query]
        total.add_(torch.einsum("bqk,bq->bk", per_query, weights).cpu())
        bar.update(1)

    hooks = [(f"blocks.{l}.attn.hook_pattern", reduce) for l in layer_list]
    with model.hooks(fwd_hooks=hooks):
        model(inputs, return_type=None)
    bar.close()
    scores = total / (n_queries[:, None].float() * len(layer_list))
    return scores.masked_fill(~layout.video.cpu().bool(), float("nan"))


def frame_heatmap(
    model: "HookedAVLLM",
    inputs: Any,
    scores: Float[Tensor, "batch seq"] | Float[Tensor, "seq"] | Float[Tensor, "n_video_tokens"],
    batch: int = 0,
    video: int = 0,
) -> FrameGrid:
    """Scores of one video's tokens on its frames, as the model's family places them.

    ``scores`` per position (``[batch, seq]``, e.g. from :func:`attention_to_video`, or ``[seq]``
    for row ``batch``) or per token of this video. Returns a :class:`~hooked_avllm.inputs.frame_grid.FrameGrid`:
    ``grid`` ``[group, rows, cols]``, each group's first frame and time, and what a cell holds
    (a token's score on a patch-grid family; the score mass routed to a patch through MiniCPM-o's
    resampler). Draw it with :func:`plot_frame_heatmaps`.

    Example:
        >>> heat = frame_heatmap(model, forced, attention_to_video(model, forced, queries="generated"))  # doctest: +SKIP
        >>> heat.grid.shape, heat.time  # doctest: +SKIP
    """
    if carried_layout(inputs) is None:
        raise ValueError("frame_heatmap needs inputs with a TokenLayout (model.prepare / model.to_inputs)")
    return model.architecture.video_frame_grid(model, inputs, scores, batch, video)


def _frames_array(frames: Any) -> tuple[np.ndarray, float | None]:
    """Frames as float ``[T, H, W, 3]`` in [0, 1], and the video's fps if known."""
    fps = None
    if hasattr(frames, "frames"):  # a Video
        fps = getattr(frames, "fps", None)
        frames = frames.frames
    array = frames.detach().float().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(f"frames must be [T, 3, H, W] or [T, H, W, 3], got shape {array.shape}")
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] != 3:
        raise ValueError(f"frames must have 3 colour channels, got shape {array.shape}")
    if array.max() > 1.0:  # 0..255
        array = array / 255.0
    return np.clip(array, 0.0, 1.0), fps


def upsample_grid(grid: Float[Tensor, "rows cols"], size: tuple[int, int], mode: str = "nearest") -> Float[Tensor, "height width"]:
    """One frame group's grid resized to ``size`` = (height, width); NaN cells stay NaN.

    Example:
        >>> upsample_grid(torch.eye(2), (4, 4)).tolist()[0]
        [1.0, 1.0, 0.0, 0.0]
    """
    grid = torch.as_tensor(grid).float()
    valid = (~torch.isnan(grid)).float()[None, None]
    filled = grid.nan_to_num(0.0)[None, None]
    holes = torch.nn.functional.interpolate(valid, size=size, mode="nearest")[0, 0] == 0
    if mode == "nearest":
        out = torch.nn.functional.interpolate(filled, size=size, mode="nearest")[0, 0]
    else:  # normalised interpolation: empty cells do not drag their neighbours towards 0
        values = torch.nn.functional.interpolate(filled * valid, size=size, mode=mode, align_corners=False)[0, 0]
        weight = torch.nn.functional.interpolate(valid, size=size, mode=mode, align_corners=False)[0, 0]
        out = values / weight.clamp_min(1e-12)
    return out.masked_fill(holes, float("nan"))


def plot_frame_heatmaps(
    frames: Any,
    grid_scores: FrameGrid | Float[Tensor, "frame_group rows cols"],
    path: str | None = None,
    temporal_patch_size: int = 2,
    alpha: float = 0.55,
    cmap: str = "jet",
    mode: str = "nearest",
    columns: int = 5,
    title: str | None = None,
) -> Any:
    """Each frame group's heat over its first frame (one panel per group, shared colour scale).

    ``frames`` is a :class:`~hooked_avllm.inputs.Video` (then panel titles give the time) or an
    array ``[T, 3, H, W]`` / ``[T, H, W, 3]`` (0..255 or 0..1): the frames the model was given.
    ``grid_scores`` is a :class:`~hooked_avllm.inputs.frame_grid.FrameGrid` (from
    :func:`frame_heatmap`: each group is drawn over its first frame, titled with its time, and the
    colour bar says what a cell holds) or a bare ``[group, rows, cols]`` grid, group ``g`` drawn over
    frame ``g * temporal_patch_size``. The grid is upsampled (``mode`` "nearest" shows the cells,
    "bilinear" smooths) to the frame size; NaN cells stay transparent. Saves to ``path`` when
    given; returns the figure.

    Example:
        >>> plot_frame_heatmaps(video, frame_heatmap(model, inputs, scores), path="heat.png")  # doctest: +SKIP
    """
    plt = pyplot()
    images, fps = _frames_array(frames)
    if isinstance(grid_scores, FrameGrid):
        grid = grid_scores.grid.detach().float().cpu()
        first_frames = [int(f) for f in grid_scores.first_frame]
        times = [float(t) for t in grid_scores.time]
        label = grid_scores.cell
    else:
        grid = torch.as_tensor(grid_scores).detach().float().cpu()
        if grid.ndim != 3:
            raise ValueError(f"grid_scores must be [frame_group, rows, cols], got shape {tuple(grid.shape)}")
        first_frames = [min(g * temporal_patch_size, len(images) - 1) for g in range(grid.shape[0])]  # an odd count's last frame is repeated
        times = [f / fps if fps else float("nan") for f in first_frames]
        label = "attention"
    n_groups = grid.shape[0]
    if first_frames and max(first_frames) >= len(images):
        raise ValueError(f"the grid's groups start at frames up to {max(first_frames)}, but {len(images)} frames were "
                         "given: pass the frames the model saw (model.load_video / the frames given to prepare)")
    finite = grid[torch.isfinite(grid)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    n_cols = min(columns, n_groups)
    n_rows = -(-n_groups // n_cols)
    height, width = images.shape[1:3]
    panel = 3.0
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel * n_cols, panel * n_rows * height / width + 0.6), squeeze=False)
    heat = None
    for g in range(n_rows * n_cols):
        ax = axes[g // n_cols, g % n_cols]
        ax.axis("off")
        if g >= n_groups:
            continue
        ax.imshow(images[first_frames[g]])
        up = upsample_grid(grid[g], (height, width), mode).numpy()
        heat = ax.imshow(np.ma.masked_invalid(up), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
        ax.set_title(f"t = {times[g]:.1f} s" if np.isfinite(times[g]) else f"frame group {g}", fontsize=9)
    if heat is not None:
        fig.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.02, label=_wrap(label))
    if title:
        fig.suptitle(title)
    return save(fig, path)


def _wrap(text: str, width: int = 40) -> str:
    """A colour-bar label broken into lines of about ``width`` characters."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


__all__ = ["attention_to_video", "frame_heatmap", "plot_frame_heatmaps", "query_mask", "upsample_grid", "video_token_grid"]
