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

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hooked_avllm.analysis.arguments import check_layers, check_modality_present, describe_layers
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

    Averaged over ``layers`` (default: all), ``heads`` (default: all) and the chosen queries of
    each row (see :func:`query_mask`; ``"generated"`` needs a teacher-forced caption,
    :func:`~hooked_avllm.inputs.teacher_forced_inputs`). Layers and heads are checked against the
    model (negative counts from the end; out of range, empty or repeated raises, see
    :func:`hooked_avllm.analysis.arguments.check_layers`); inputs without video raise (the scores
    would be all NaN), rows without video are named in a warning.
    Computed inside ``blocks.{l}.attn.hook_pattern`` hooks, so only one ``[batch, seq]``
    accumulator outlives each layer. The returned tensor carries ``.description``: what was
    averaged, in words, which :func:`frame_heatmap` and :func:`plot_frame_heatmaps` put in the
    figure's caption. Feed the result to :func:`frame_heatmap`.

    Example:
        >>> scores = attention_to_video(model, forced, queries="generated", layers=range(18, 30))  # doctest: +SKIP
        >>> scores[forced.layout.video].sum()  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    layout = carried_layout(inputs)
    if layout is None:
        raise ValueError("attention_to_video needs inputs with a TokenLayout (model.prepare / ModelInputs)")
    check_modality_present(layout, "video", "attention_to_video", None)  # all-NaN scores otherwise
    n_layers = model.cfg.n_layers
    layer_list = sorted(check_layers(model, layers, "attention_to_video: layers"))
    head_list = None if heads is None else check_layers(model.cfg.text.n_heads, heads, "attention_to_video: heads",
                                                        what="head")
    head_index = None if head_list is None else torch.as_tensor(head_list, dtype=torch.long)
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
    scores = scores.masked_fill(~layout.video.cpu().bool(), float("nan"))
    scores.description = _description(queries, n_queries, layer_list, n_layers, head_list, model.cfg.text.n_heads)
    return scores


def _description(queries: Any, n_queries: Tensor, layers: list[int], n_layers: int, heads: list[int] | None,
                 n_heads: int) -> str:
    """What :func:`attention_to_video` averaged, in words, for a figure's caption."""
    if isinstance(queries, slice):
        chosen = f"caption tokens {queries.start or 0}..{'' if queries.stop is None else queries.stop - 1}"
    elif isinstance(queries, str):
        chosen = {"last": "the last prompt position", "generated": "every caption (generated) token"}.get(
            queries, f"the {queries} positions")
    else:
        chosen = "the chosen query positions"
    counts = sorted(set(n_queries.tolist()))
    count = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    head_words = f"all {n_heads} heads" if heads is None or sorted(heads) == list(range(n_heads)) else \
        f"heads {', '.join(map(str, heads))} of {n_heads}"
    layer_words = describe_layers(layers, n_layers)
    layer_words += "" if layer_words.startswith("all") else f" (of {n_layers})"
    return f"mean attention from {chosen} ({count} per row) to each video token, averaged over {layer_words} and {head_words}"


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
    grid = model.architecture.video_frame_grid(model, inputs, scores, batch, video)
    description = getattr(scores, "description", None) or getattr(grid, "description", "")
    return DescribedFrameGrid(**{f.name: getattr(grid, f.name) for f in fields(FrameGrid)}, description=description)


@dataclass
class DescribedFrameGrid(FrameGrid):
    """A :class:`~hooked_avllm.inputs.frame_grid.FrameGrid` with ``description``: what its scores
    average, in words (from :func:`attention_to_video`'s ``.description``), which
    :func:`plot_frame_heatmaps` puts under the figure."""

    description: str = ""


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
    alpha: float = 0.8,
    cmap: str = "inferno",
    mode: str = "nearest",
    columns: int = 5,
    title: str | None = None,
    description: str | None = None,
) -> Any:
    """Each frame group's heat over its first frame (one panel per group, shared colour scale).

    A *frame group* is the run of consecutive input frames the model turns into one set of video
    tokens (Qwen's temporal patch of 2 frames, VideoLLaMA2's pooled frames, MiniCPM-o's frame):
    each panel shows one group's grid over the first frame of the group, titled with the group's
    frames and time, and the caption under the figure says so, with what was averaged
    (``description``, default: the one :func:`attention_to_video` attached to the scores).

    ``frames`` is a :class:`~hooked_avllm.inputs.Video` (then panel titles give the time) or an
    array ``[T, 3, H, W]`` / ``[T, H, W, 3]`` (0..255 or 0..1): the frames the model was given.
    ``grid_scores`` is a :class:`~hooked_avllm.inputs.frame_grid.FrameGrid` (from
    :func:`frame_heatmap`: each group is drawn over its first frame, titled with its time, and the
    colour bar says what a cell holds) or a bare ``[group, rows, cols]`` grid, group ``g`` drawn over
    frame ``g * temporal_patch_size``. The grid is upsampled (``mode`` "nearest" shows the cells,
    "bilinear" smooths) to the frame size; NaN cells stay transparent.

    The colour map (default ``"inferno"``: dark to bright yellow) is drawn with an opacity that
    grows with the score, up to ``alpha`` for the hottest cells: cold cells barely tint the frame
    and hot ones glow, so the map reads on dark and on bright frames alike. Saves to ``path`` when
    given; returns the figure.

    Example:
        >>> plot_frame_heatmaps(video, frame_heatmap(model, inputs, scores), path="heat.png")  # doctest: +SKIP
    """
    plt = pyplot()
    from matplotlib import cm, colors

    images, fps = _frames_array(frames)
    if isinstance(grid_scores, FrameGrid):
        grid = grid_scores.grid.detach().float().cpu()
        first_frames = [int(f) for f in grid_scores.first_frame]
        times = [float(t) for t in grid_scores.time]
        label = grid_scores.cell
        per_group = first_frames[1] - first_frames[0] if len(first_frames) > 1 else None
        description = description or getattr(grid_scores, "description", "")
    else:
        grid = torch.as_tensor(grid_scores).detach().float().cpu()
        if grid.ndim != 3:
            raise ValueError(f"grid_scores must be [frame_group, rows, cols], got shape {tuple(grid.shape)}")
        first_frames = [min(g * temporal_patch_size, len(images) - 1) for g in range(grid.shape[0])]  # an odd count's last frame is repeated
        times = [f / fps if fps else float("nan") for f in first_frames]
        label = "attention"
        per_group = temporal_patch_size
    n_groups = grid.shape[0]
    if first_frames and max(first_frames) >= len(images):
        raise ValueError(f"the grid's groups start at frames up to {max(first_frames)}, but {len(images)} frames were "
                         "given: pass the frames the model saw (model.load_video / the frames given to prepare)")
    finite = grid[torch.isfinite(grid)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    norm = colors.Normalize(vmin, vmax if vmax > vmin else vmin + 1e-12)
    colour_map = plt.get_cmap(cmap)
    n_cols = min(columns, n_groups)
    n_rows = -(-n_groups // n_cols)
    height, width = images.shape[1:3]
    panel = 3.0
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel * n_cols, panel * n_rows * height / width + 0.9), squeeze=False)
    for g in range(n_rows * n_cols):
        ax = axes[g // n_cols, g % n_cols]
        ax.axis("off")
        if g >= n_groups:
            continue
        ax.imshow(images[first_frames[g]])
        up = upsample_grid(grid[g], (height, width), mode).numpy()
        ax.imshow(_heat_rgba(up, norm, colour_map, alpha))
        when = f"t = {times[g]:.1f} s" if np.isfinite(times[g]) else f"frame group {g}"
        ax.set_title(when, fontsize=9)
        ax.text(0.5, -0.02, f"group {g}: {_group_frames(first_frames[g], per_group, len(images))}", fontsize=7,
                ha="center", va="top", transform=ax.transAxes)
    if n_groups:
        bar_inches = panel * n_rows * height / width  # the colour bar is as tall as the panels
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=colour_map), ax=axes.ravel().tolist(), fraction=0.02,
                     label=_wrap(label, max(16, int(bar_inches * 11))))  # about 11 characters of 10 pt per inch
    if title:
        fig.suptitle(title)
    fig.canvas.draw()  # lay out panels, group labels and the colour bar's label, to put the caption under all of them
    renderer = fig.canvas.get_renderer()
    bottom = min(fig.transFigure.inverted().transform(ax.get_tightbbox(renderer))[0, 1] for ax in fig.axes)
    characters = int(fig.get_size_inches()[0] * 19)  # about 19 characters of 7 pt per inch: the figure's width
    fig.text(0.01, bottom - 0.02, _wrap(_caption(per_group, description), characters), fontsize=7, ha="left", va="top")
    return save(fig, path)


def _heat_rgba(values: np.ndarray, norm: Any, colour_map: Any, alpha: float) -> np.ndarray:
    """Scores ``[H, W]`` as an RGBA image: the colour map's colour, opacity from ``alpha / 4`` (the
    lowest score) to ``alpha`` (the highest); NaN fully transparent."""
    scaled = np.clip(norm(np.nan_to_num(values, nan=norm.vmin)), 0.0, 1.0)
    rgba = colour_map(scaled)
    rgba[..., 3] = np.where(np.isnan(values), 0.0, alpha * (0.25 + 0.75 * scaled))
    return rgba


def _group_frames(first: int, per_group: int | None, n_frames: int) -> str:
    """The input frames a group covers, ``"frames 4-5"`` (``"frame 4"`` for one)."""
    last = min(first + per_group - 1, n_frames - 1) if per_group else first
    return f"frame {first}" if last == first else f"frames {first}-{last}"


def _caption(per_group: int | None, description: str | None) -> str:
    """What a panel is (a frame group) and what the scores average."""
    group = (f"Each panel is one frame group: the {per_group} consecutive input frame{'s' * (per_group != 1)} the "
             "model turns into one set of video tokens, drawn over the group's first frame"
             if per_group else "Each panel is one frame group (the frames that share one set of video tokens), drawn "
             "over its first frame")
    averaged = f"Colour: {description}." if description else \
        "Colour: the scores given (pass description= to say what they average)."
    return f"{group}; hotter and more opaque = higher score, on one scale for all panels. {averaged}"


def _wrap(text: str, width: int = 40) -> str:
    """A colour-bar label broken into lines of about ``width`` characters."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


__all__ = ["DescribedFrameGrid", "attention_to_video", "frame_heatmap", "plot_frame_heatmaps", "query_mask", "upsample_grid", "video_token_grid"]
