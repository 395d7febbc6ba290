"""Position alignment between two runs whose token layouts differ, by modality and order.

The source run (e.g. audio only) and the target run (the same audio with a conflicting video) do
not share positions: the audio-only run has no video tokens. :func:`align_positions` pairs the
k-th ``modality`` token of each source row with the k-th of its target row (any modality, a time
window of the audio, or explicit masks); :mod:`hooked_avllm.analysis.patching` patches through
that map.

Example:
    >>> align = align_positions(audio_only.layout, audio_video.layout, "audio", time=(0.0, 2.0))  # doctest: +SKIP
    >>> align.source_pos[:3], align.target_pos[:3]                                                # doctest: +SKIP
    (tensor([3, 4, 5]), tensor([8, 9, 10]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_avllm.inputs.layout import carried_layout
from hooked_avllm.inputs.select import position_mask

__all__ = ["Modality", "PositionAlignment", "align_positions"]

Modality = str | Tensor | tuple  # a position_mask choice ("audio", "last", ...) | mask | (src_mask, tgt_mask)



@dataclass(frozen=True)
class PositionAlignment:
    """Index tensors pairing source positions with target positions, one entry per patched token.

    ``target_act[target_batch, target_pos] = source_act[source_batch, source_pos]`` is the patch.
    Entries are ordered by target row, then by position.
    """

    source_batch: Int[Tensor, " n"]
    source_pos: Int[Tensor, " n"]
    target_batch: Int[Tensor, " n"]
    target_pos: Int[Tensor, " n"]
    source_rows: Int[Tensor, " target_batch"]  # the source row patched into each target row
    source_shape: tuple[int, int]  # (batch, seq) of the source layout
    target_shape: tuple[int, int]
    description: str = ""

    def __len__(self) -> int:
        return int(self.target_pos.numel())

    def __repr__(self) -> str:
        return (f"PositionAlignment({len(self)} positions, {self.description}, "
                f"source {self.source_shape} -> target {self.target_shape})")


def _layout_of(x: Any) -> Any:
    """A TokenLayout from a layout, ModelInputs or AVActivationCache."""
    layout = carried_layout(x)
    if layout is None:
        raise ValueError(
            "patching needs the token layout of both runs: pass ModelInputs from model.prepare (or their .layout)"
        )
    return layout


def _mask(layout: Any, modality: Any, side: str) -> Bool[Tensor, "batch seq"]:
    if not isinstance(modality, (str, Tensor)) and not (
        isinstance(modality, (list, tuple)) and modality and all(isinstance(m, str) for m in modality)
    ):
        raise TypeError(
            f"modality={modality!r}: pass a position choice ('audio', 'video', 'text', 'last', 'all', ... or a list of "
            "them), a bool mask [batch, seq], or a pair (source, target) of those"
        )
    if isinstance(modality, Tensor):
        mask = modality.bool().cpu().clone()
        if tuple(mask.shape) != tuple(layout.shape):
            raise ValueError(
                f"the {side} mask has shape {tuple(mask.shape)} but the {side} layout is {tuple(layout.shape)}; "
                f"give a [batch, seq] mask per run as modality=(source_mask, target_mask)"
            )
        return mask
    try:
        return position_mask(layout, modality).cpu().clone()  # a copy: time= narrows it in place
    except ValueError as err:
        raise ValueError(f"modality={modality!r}: {err}") from err


def _checked_time(time: Any) -> tuple[float, float]:
    """``time`` as (start_s, end_s) with end_s > start_s, both finite numbers."""
    ok = isinstance(time, (tuple, list)) and len(time) == 2 and all(
        isinstance(t, (int, float)) and not isinstance(t, bool) for t in time)
    if not ok:
        raise TypeError(f"time={time!r}: pass a window of the clip in seconds, (start_s, end_s), e.g. (0.0, 2.0)")
    start, end = float(time[0]), float(time[1])
    if not (math.isfinite(start) and math.isfinite(end)) or not end > start:
        raise ValueError(f"time=(start_s, end_s) needs finite seconds with end_s > start_s; got {time}")
    return start, end


def align_positions(
    source: Any,
    target: Any,
    modality: Modality = "audio",
    *,
    time: tuple[float, float] | None = None,
    source_rows: Sequence[int] | None = None,
) -> PositionAlignment:
    """Map the k-th ``modality`` position of each source row to the k-th of its target row.

    Args:
        source, target: TokenLayouts (or ModelInputs / caches carrying one).
        modality: any position choice of :func:`hooked_avllm.inputs.select.position_mask`
            (``"audio"``, ``"video"``, ``"image"``, ``"text"``, ``"media"``, ``"generated"``,
            ``"last"`` (each row's last real position), ``"all"`` (every non-padding position: the
            identity for equal layouts), a list of those), one bool mask ``[batch, seq]`` used for
            both runs, or a pair ``(source_mask, target_mask)``.
        time: ``(start_s, end_s)``: keep only audio positions with ``start_s <= audio_time < end_s``
            (the clip time from ``layout.audio_time``), in both runs.
        source_rows: the source row patched into each target row; by default row i -> row i, or
            source row 0 into every target row when the source has one row.

    Raises:
        ValueError: when a pair of rows has different counts, or a row index is out of range.

    Example:
        >>> align = align_positions(audio_only.layout, audio_video.layout, "audio")  # doctest: +SKIP
        >>> len(align), align.target_pos[:3]                                          # doctest: +SKIP
        (75, tensor([8, 9, 10]))
    """
    src_layout, tgt_layout = _layout_of(source), _layout_of(target)
    if isinstance(modality, tuple):
        if len(modality) != 2:
            raise ValueError("modality as a tuple must be (source_mask, target_mask)")
        src_mask, tgt_mask = _mask(src_layout, modality[0], "source"), _mask(tgt_layout, modality[1], "target")
        name = "masks"
    else:
        src_mask, tgt_mask = _mask(src_layout, modality, "source"), _mask(tgt_layout, modality, "target")
        name = modality if isinstance(modality, str) else "mask"
    window = ""
    if time is not None:
        start, end = _checked_time(time)
        for mask, layout in ((src_mask, src_layout), (tgt_mask, tgt_layout)):
            t = layout.audio_time.cpu()
            mask &= (t >= start) & (t < end)  # NaN (non-audio) compares False
        window = f" in [{start:g}, {end:g}) s"
        name += window

    n_src, n_tgt = src_mask.shape[0], tgt_mask.shape[0]
    if source_rows is None:
        if n_src == n_tgt:
            source_rows = list(range(n_tgt))
        elif n_src == 1:
            source_rows = [0] * n_tgt
        else:
            raise ValueError(
                f"the source has {n_src} rows and the target {n_tgt}: pass source_rows=[...] "
                f"(the source row to patch into each target row, {n_tgt} entries)"
            )
    source_rows = [int(r) for r in source_rows]
    if len(source_rows) != n_tgt:
        raise ValueError(f"source_rows has {len(source_rows)} entries for {n_tgt} target rows; give one per target row")
    for t_row, s_row in enumerate(source_rows):
        if not 0 <= s_row < n_src:
            raise ValueError(f"source_rows[{t_row}] = {s_row} is out of range: the source has {n_src} rows")

    sb, sp, tb, tp = [], [], [], []
    what = modality if isinstance(modality, str) else "selected"
    for t_row, s_row in enumerate(source_rows):
        s_pos = src_mask[s_row].nonzero().flatten()
        t_pos = tgt_mask[t_row].nonzero().flatten()
        if len(s_pos) != len(t_pos):
            rows = "" if n_src == n_tgt == 1 else f" (source row {s_row}, target row {t_row})"
            raise ValueError(
                f"source has {len(s_pos)} {what} tokens{window}, target {len(t_pos)}{rows}: patching maps the k-th "
                f"{what} token of the source onto the k-th of the target, so the counts must match. Use the "
                f"same media length in both runs, restrict to a common window with time=(start_s, end_s), "
                f"or pass explicit masks modality=(source_mask, target_mask) with equal counts per row."
            )
        sb.append(torch.full_like(s_pos, s_row)), sp.append(s_pos)
        tb.append(torch.full_like(t_pos, t_row)), tp.append(t_pos)

    def cat(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    return PositionAlignment(cat(sb), cat(sp), cat(tb), cat(tp), torch.tensor(source_rows, dtype=torch.long),
                             tuple(src_layout.shape), tuple(tgt_layout.shape), name)
