"""Prepared MiniCPM-o inputs in the released model's own format: the ``data`` dict its
``forward(data)`` / ``get_vllm_embedding`` / ``get_audio_embedding`` read (``inputs.model_kwargs()``),
for comparing with the released code. Bounds are found in the ids as the released processor's
``_convert`` finds them (body start, body end).

Example:
    >>> data = inputs.model_kwargs()  # doctest: +SKIP
    >>> data["image_bound"][0], data["tgt_sizes"][0].shape  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.towers.whisper_encoder import whisper_token_counts


def strip_from_rows(rows: Float[Tensor, "patch patch_dim"], patch_size: int = 14) -> Float[Tensor, "3 p Lp"]:
    """One slice's patch rows as the released ``reshape_by_patch`` strip ``[3, p, L * p]``.

    Example:
        >>> strip_from_rows(torch.arange(2 * 3 * 4 * 4.0).view(2, -1), 4).shape
        torch.Size([3, 4, 8])
    """
    n = rows.shape[0]
    return rows.view(n, -1, patch_size, patch_size).permute(1, 2, 0, 3).reshape(-1, patch_size, n * patch_size)


def bounds(ids: Int[Tensor, "seq"], opens: tuple[int, ...], closes: tuple[int, ...]) -> Int[Tensor, "n 2"]:
    """``[start, end)`` of every bound's body: after each opening id, up to the next closing id."""
    starts = torch.nonzero(torch.isin(ids, torch.tensor(opens, device=ids.device))).flatten() + 1
    ends = torch.nonzero(torch.isin(ids, torch.tensor(closes, device=ids.device))).flatten()
    return torch.stack([starts, ends], dim=-1) if len(starts) else torch.zeros(0, 2, dtype=torch.long)


def released_data(inputs: Any, spec: Any) -> dict[str, Any]:
    """The released ``data`` dict of prepared inputs (see the module docstring)."""
    t, media = spec.tokens, inputs.media
    data: dict[str, Any] = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask,
                            "position_ids": (inputs.attention_mask.long().cumsum(-1) - 1).clamp(min=0)}
    image_bound = [bounds(row, (t.image_start, t.slice_start), (t.image_end, t.slice_end)) for row in inputs.input_ids.cpu()]
    data["image_bound"] = image_bound
    pixels, sizes = media.get("pixel_values"), media.get("tgt_sizes")
    strips, row_sizes, at_slice, at_patch = [], [], 0, 0
    for b in image_bound:
        row, row_size = [], sizes[at_slice : at_slice + len(b)] if sizes is not None else torch.zeros(0, 2, dtype=torch.long)
        for h, w in row_size.tolist():
            row.append(strip_from_rows(pixels[at_patch : at_patch + h * w]))
            at_patch += h * w
        at_slice += len(b)
        strips.append(row)
        row_sizes.append(row_size)
    data["pixel_values"], data["tgt_sizes"] = strips, row_sizes
    if t.audio_start is not None:
        audio_bounds = [bounds(row, (t.audio_start,), (t.audio_end,)) for row in inputs.input_ids.cpu()]
        data["audio_bounds"] = audio_bounds
        lens = media.get("feature_lens")
        if lens is not None:
            counts, per_row, at = whisper_token_counts(lens.cpu()).tolist(), [], 0
            for b in audio_bounds:
                need, take = int((b[:, 1] - b[:, 0]).sum()) if len(b) else 0, []
                while need > 0:
                    take.append(int(lens[at]))
                    need -= counts[at]
                    at += 1
                per_row.append(torch.tensor(take, dtype=torch.long))
            data["audio_features"], data["audio_feature_lens"] = media["input_features"], per_row
    return data


__all__ = ["bounds", "released_data", "strip_from_rows"]
