"""Batch prepared inputs: several one-row (or batched) :class:`ModelInputs` into one padded batch.

Example:
    >>> batch = concat_inputs([model.prepare(prompt=p, video=v) for p, v in clips])  # doctest: +SKIP
    >>> model.generate(batch, max_new_tokens=50)                                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError, describe
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.inputs.spec import InputSpec

def concat_inputs(
    items: Sequence[ModelInputs], padding_side: Literal["left", "right"] = "left", pad_id: int | None = None
) -> ModelInputs:
    """One padded batch from prepared inputs, rows in order: the layouts stacked (spans shifted,
    media items renumbered row-major), the media batched by the family's rule
    (:meth:`~hooked_avllm.inputs.spec.InputSpec.batch_media`: e.g. audio features padded to the
    longest clip), position ids by the family's rule over the batch.

    Left padding (the default) is what ``generate`` needs.
    """
    if isinstance(items, ModelInputs) or not isinstance(items, Sequence) or not items:
        raise InputError(f"concat_inputs takes a non-empty list of prepared inputs, got {describe(items)}; e.g. "
                         "concat_inputs([model.prepare(prompt=p) for p in prompts])")
    wrong = [k for k, item in enumerate(items) if not isinstance(item, ModelInputs)]
    if wrong:
        raise InputError(f"concat_inputs: item {wrong[0]} is {describe(items[wrong[0]])}, not prepared inputs; pass what "
                         "model.prepare(...) returns")
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side={padding_side!r}: pick 'left' (what generate needs) or 'right'")
    families = {item.family for item in items}
    if len(families) > 1:
        raise InputError(f"these inputs were prepared for different families ({sorted(families)}); batch one family's inputs")
    spec = next((item.spec for item in items if item.spec is not None), None)
    rule = spec or InputSpec()
    media = rule.batch_media([item.media for item in items])
    pad = pad_id if pad_id is not None else rule.pad_token_id
    device = items[0].input_ids.device
    # the family's position rule over the batch; without a spec each row keeps its own ids
    positions = (lambda built: spec.layout_positions(built, media)) if spec is not None else None
    layout = TokenLayout.stack([item.layout.to("cpu") for item in items], pad_id=pad, padding_side=padding_side,
                               positions=positions)
    if device.type != "cpu":
        layout = layout.to(device)
    return ModelInputs(layout.input_ids.clone(), layout.attention_mask.clone(), layout, media, spec)


def teacher_forced_inputs(inputs: Any, caption: Int[Tensor, "batch n_new"] | Sequence[int]) -> Any:
    """``inputs`` with ``caption`` appended to every row, its positions marked *generated*.

    The layout is a copy extended by ``n_new`` generated positions (TMRoPE positions continue
    after the prompt as in ``generate``), so ``layout.generated`` marks the caption span and a
    forward on the result equals the prompt + caption pass of generation. Left padding only.

    Example:
        >>> forced = teacher_forced_inputs(inputs, caption_ids)  # doctest: +SKIP
        >>> logits = model(forced)                               # doctest: +SKIP
        >>> int(forced.layout.generated.sum()) == len(caption_ids)  # doctest: +SKIP
        True
    """
    batch = inputs.input_ids.shape[0]
    caption = torch.as_tensor(caption, dtype=torch.long, device=inputs.input_ids.device)
    if caption.ndim == 1:
        caption = caption[None].expand(batch, -1)
    if caption.ndim != 2 or caption.shape[0] != batch:
        raise ValueError(f"caption must be [n_new] or [batch={batch}, n_new] token ids, got shape {tuple(caption.shape)}")
    layout = inputs.layout
    if layout.padding_side == "right" and bool(layout.padding.any()):
        raise ValueError("teacher forcing appends tokens on the right: prepare the batch with left padding")
    if tuple(layout.shape) != tuple(inputs.input_ids.shape):
        raise ValueError("the inputs' layout does not match their token ids; prepare them again")
    layout = layout.to(layout.attention_mask.device).extend(caption.shape[1])  # .to copies, extend grows the copy
    return replace(
        inputs,
        input_ids=torch.cat([inputs.input_ids, caption], dim=1),
        attention_mask=torch.cat([inputs.attention_mask, torch.ones_like(caption)], dim=1),
        layout=layout,
    )
