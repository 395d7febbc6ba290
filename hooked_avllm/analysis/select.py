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

from typing import Any, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

MODALITIES = ("text", "audio", "video", "image", "generated", "padding")
PositionsLike = str | Sequence[str] | Tensor


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
        start, end = time
        if end <= start:
            raise ValueError(f"time=(start, end) needs end > start, got {time}")
        t = torch.where(torch.isnan(layout.audio_time), layout.video_time, layout.audio_time)
        mask &= (t >= start) & (t < end)
    if item is not None:
        mask &= _item_mask(layout, positions, item)
    if batch is not None:
        rows = torch.zeros(layout.shape[0], dtype=torch.bool, device=mask.device)
        rows[torch.as_tensor(batch, device=mask.device).long()] = True
        mask &= rows[:, None]
    return mask


def _named_mask(layout: Any, name: str) -> Tensor:
    if name in MODALITIES:
        return getattr(layout, name).bool()
    if name == "media":
        return layout.audio | layout.video | layout.image
    if name == "all":
        return ~layout.padding
    if name == "last":
        real = (~layout.padding).long()
        last = real.shape[1] - 1 - real.flip(1).argmax(1)  # index of each row's last real position
        mask = torch.zeros(layout.shape, dtype=torch.bool, device=layout.padding.device)
        mask[torch.arange(mask.shape[0]), last] = True
        return mask
    raise ValueError(
        f"unknown positions {name!r}; use one of {', '.join(MODALITIES + ('media', 'all', 'last'))} or a bool mask"
    )


def _item_mask(layout: Any, positions: PositionsLike, item: int) -> Tensor:
    kinds = [positions] if isinstance(positions, str) else list(positions) if not isinstance(positions, Tensor) else []
    kinds = [k for k in kinds if k in ("audio", "video", "image")]
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
