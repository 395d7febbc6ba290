"""Choose sequence positions by modality, time range and media item, from a TokenLayout.

Every analysis tool takes positions the same way: a modality name (``"audio"``, ``"video"``,
``"image"``, ``"text"``, ``"generated"``, ``"media"`` for any of the three media, ``"all"`` for
every real position, ``"last"`` for each row's last real position), a list of names (their
union), or a boolean mask ``[batch, pos]``; then optionally narrowed to a time range of the clip
(seconds; audio tokens by their own time, video tokens by their frame group's time) and to one
media item (its index among the items of that kind in the batch, as in ``layout.spans``).

Example:
    >>> mask = position_mask(cache.layout, "audio", time=(2.0, 4.0))      # doctest: +SKIP
    >>> cache["blocks.20.hook_resid_post"][mask].shape                   # doctest: +SKIP
    torch.Size([50, 2048])
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_avllm.vocabulary import KINDS, MEDIA_KINDS

MODALITIES = KINDS
PositionsLike = str | Sequence[str] | Tensor
PositionsOrIndices = PositionsLike | Sequence[int]  # select_positions also takes position indices


def position_mask(
    layout: Any,
    positions: PositionsLike = "all",
    *,
    time: tuple[float, float] | None = None,
    item: int | None = None,
    batch: int | Sequence[int] | None = None,
) -> Bool[Tensor, "batch pos"]:
    """Boolean mask ``[batch, pos]`` of the chosen positions (see the module docstring)."""
    if isinstance(positions, Tensor):
        if positions.dtype != torch.bool or positions.shape != torch.Size(layout.shape):
            raise ValueError(
                f"a position mask must be boolean with the layout's shape {tuple(layout.shape)}, got "
                f"{positions.dtype} {tuple(positions.shape)}"
            )
        mask = positions.clone()
    else:
        names = [positions] if isinstance(positions, str) else list(positions)
        mask = torch.zeros(layout.shape, dtype=torch.bool, device=layout.text.device)
        for name in names:
            mask |= _named_mask(layout, name)
    if time is not None:
        mask = _in_window(layout, mask, positions, time)
    if item is not None:
        mask &= _item_mask(layout, positions, item)
    if batch is not None:
        rows = torch.zeros(layout.shape[0], dtype=torch.bool, device=mask.device)
        rows[torch.as_tensor(batch, device=mask.device).long()] = True
        mask &= rows[:, None]
    return mask


def _in_window(layout: Any, mask: Bool[Tensor, "batch pos"], positions: Any, time: Any) -> Bool[Tensor, "batch pos"]:
    """``mask`` narrowed to the positions whose clip time lies in ``time = (start, end)`` (audio
    tokens by their own time, video tokens by their frame group's); a window that keeps none of
    the chosen positions raises, naming the window and the span the chosen positions cover (an
    empty selection would make every analysis of it silently measure nothing)."""
    if not isinstance(time, (tuple, list)) or len(time) != 2:
        raise ValueError(f"time must be (start, end) in seconds; got {time!r}")
    start, end = (float(x) for x in time)
    if not end > start:
        raise ValueError(f"time=(start, end) needs end > start, got {tuple(time)}")
    t = torch.where(torch.isnan(layout.audio_time), layout.video_time, layout.audio_time)
    inside = mask & (t >= start) & (t < end)
    if bool(inside.any()):
        return inside
    what = positions if isinstance(positions, str) else "chosen"
    timed = t[mask & ~torch.isnan(t)]
    if timed.numel() == 0:
        raise ValueError(
            f"time={tuple(time)} selects nothing: the {what} positions have no clip time (time= narrows audio and video "
            "positions; choose positions='audio', 'video' or 'media')"
        )
    raise ValueError(
        f"time={tuple(time)} selects none of the {what} positions: they span {float(timed.min()):.2f}-"
        f"{float(timed.max()):.2f} s of the clip; give a window inside that span"
    )


def _named_mask(layout: Any, name: str) -> Tensor:
    if name in MODALITIES:
        return getattr(layout, name).bool()
    if name == "media":
        return layout.audio | layout.video | layout.image
    if name == "all":
        return ~layout.padding
    if name == "last":
        return last_real(~layout.padding)
    valid = MODALITIES + ("media", "all", "last")
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown positions {name!r}{hint}; use one of {', '.join(valid)} or a bool mask")


def last_real(real: Bool[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """Each row's last real position (the one that predicts the next token), as a mask."""
    last = real.shape[1] - 1 - real.long().flip(1).argmax(1)
    mask = torch.zeros(real.shape, dtype=torch.bool, device=real.device)
    mask[torch.arange(real.shape[0], device=real.device), last] = True
    return mask


def select_positions(
    layout: Any,
    positions: PositionsOrIndices,
    attention_mask: Int[Tensor, "batch seq"] | None = None,
    *,
    time: tuple[float, float] | None = None,
    item: int | None = None,
) -> Bool[Tensor, "batch seq"]:
    """Resolve a position choice to a non-empty bool mask ``[batch, seq]`` (on the CPU).

    ``positions`` is what :func:`hooked_avllm.inputs.select.position_mask` takes (a modality:
    ``"text"``, ``"audio"``, ``"video"``, ``"image"``, ``"generated"``, ``"media"``; ``"all"``;
    ``"last"``, each row's last real position, which predicts the next token; a list of names; a
    bool mask ``[batch, seq]``), optionally narrowed by ``time`` (seconds) and ``item``; and also a
    ``[seq]`` bool mask for one row or a list / 1-D long tensor of position indices (the same in
    every row). Without a layout only masks, indices, ``"last"`` and ``"all"`` work (from
    ``attention_mask``).

    Example:
        >>> mask = select_positions(inputs.layout, "audio", time=(0.0, 2.0))  # doctest: +SKIP
        >>> bool((mask <= inputs.layout.audio).all())  # doctest: +SKIP
        True
    """
    if attention_mask is None and layout is not None:
        attention_mask = layout.attention_mask
    if attention_mask is None:
        raise ValueError("select_positions needs a layout or an attention mask to know the sequence shape")
    batch, seq = attention_mask.shape
    named = isinstance(positions, str) or (
        isinstance(positions, (list, tuple)) and len(positions) > 0 and all(isinstance(p, str) for p in positions)
    )
    if isinstance(positions, Tensor) and positions.dtype == torch.bool:
        mask = positions.cpu()
        if mask.ndim == 1 and batch == 1:
            mask = mask[None]
        if tuple(mask.shape) != (batch, seq):
            raise ValueError(f"the position mask has shape {tuple(mask.shape)}; the run has [batch, seq] = {[batch, seq]}")
    elif named:
        if layout is None:
            if positions not in ("last", "all"):
                raise ValueError(
                    f"positions={positions!r} needs the inputs' TokenLayout; pass ModelInputs (model.prepare) or a "
                    "cache from run_with_cache, or give a bool mask"
                )
            real = attention_mask.cpu().bool()
            mask = real.clone() if positions == "all" else last_real(real)
        else:
            mask = None  # the shared selector below
    else:
        index = torch.as_tensor(list(positions) if not isinstance(positions, Tensor) else positions).long().flatten().cpu()
        index = torch.where(index < 0, index + seq, index)
        if len(index) and (index.min() < 0 or index.max() >= seq):
            raise ValueError(f"position indices must lie in [-{seq}, {seq}); got {positions}")
        mask = torch.zeros(batch, seq, dtype=torch.bool)
        mask[:, index] = True
    if layout is not None:
        if tuple(layout.shape) != (batch, seq):
            raise ValueError(f"the layout covers {tuple(layout.shape)} positions but the run has {(batch, seq)}")
        mask = position_mask(layout, positions if mask is None else mask.to(layout.text.device), time=time, item=item)
        mask = mask.cpu()
    elif time is not None or item is not None:
        raise ValueError("time= and item= need the inputs' TokenLayout")
    if not bool(mask.any()):
        what = f"{positions} positions" if isinstance(positions, str) else "positions of that choice"
        hint = "; teacher-force a caption first (hooked_avllm.inputs.teacher_forced_inputs)" if positions == "generated" else ""
        raise ValueError(f"the inputs have no {what}" + (f" in time {time}" if time else "") + hint)
    return mask.clone()


def _item_mask(layout: Any, positions: PositionsLike, item: int) -> Tensor:
    kinds = [positions] if isinstance(positions, str) else list(positions) if not isinstance(positions, Tensor) else []
    kinds = [k for k in kinds if k in MEDIA_KINDS]
    if len(kinds) != 1:
        raise ValueError("item= needs exactly one media modality ('audio', 'video' or 'image') to count items in")
    spans = [s for s in layout.spans if s.kind == kinds[0] and s.index == item]
    if not spans:
        n = len([s for s in layout.spans if s.kind == kinds[0]])
        raise ValueError(f"there is no {kinds[0]} item {item}; the batch has {n} (indices 0..{n - 1})")
    mask = torch.zeros(layout.shape, dtype=torch.bool, device=layout.text.device)
    for span in spans:
        mask[span.batch, span.positions.to(mask.device)] = True
    return mask
