"""Prepared inputs: token ids, attention mask, the :class:`TokenLayout` and the media tensors whose
names the family declares (its :class:`~hooked_avllm.inputs.spec.InputSpec`).

Example:
    >>> import torch
    >>> from hooked_avllm.inputs.layout import TokenLayout
    >>> from hooked_avllm.inputs.segments import Segment
    >>> from hooked_avllm.inputs.spec import InputSpec
    >>> layout = TokenLayout.from_segments([[Segment.text([1, 2]), Segment("audio", n_tokens=2, token_id=9)]], pad_id=0)
    >>> spec = InputSpec(family="demo", media_names=("input_features",), float_media=("input_features",))
    >>> inputs = ModelInputs(layout.input_ids, layout.attention_mask, layout, spec=spec, input_features=torch.zeros(1, 4))
    >>> inputs.input_features.shape, inputs.media_names, inputs.to(dtype=torch.float64).input_features.dtype
    (torch.Size([1, 4]), ('input_features',), torch.float64)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.spec import InputSpec


@dataclass(init=False)
class ModelInputs:
    """Everything a forward pass needs, plus the :class:`TokenLayout` of the batch.

    ``media`` maps the family's media names to tensors (or flags); media tensors concatenate the
    items of the whole batch in sequence order (row-major). Media read as attributes too
    (``inputs.pixel_values``); a name the family declares but these inputs lack reads ``None``.
    """

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    layout: TokenLayout
    media: dict[str, Any]
    spec: InputSpec | None

    def __init__(self, input_ids: Tensor, attention_mask: Tensor, layout: TokenLayout, media: dict[str, Any] | None = None,
                 spec: InputSpec | None = None, **named_media: Any):
        self.input_ids, self.attention_mask, self.layout, self.spec = input_ids, attention_mask, layout, spec
        self.media = {k: v for k, v in {**(media or {}), **named_media}.items() if v is not None}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("media", "spec", "input_ids", "attention_mask", "layout"):
            raise AttributeError(name)
        if name in self.media:
            return self.media[name]
        if self.spec is not None and name in self.spec.media_names:
            return None
        known = sorted(set(self.media) | set(self.spec.media_names if self.spec else ()))
        raise AttributeError(f"these {self.family or 'model'} inputs have no {name!r}; their media are {known}")

    @property
    def family(self) -> str:
        """The family whose prompt builder made these inputs ('' when unknown)."""
        return self.spec.family if self.spec is not None else ""

    @property
    def media_names(self) -> tuple[str, ...]:
        """The media these inputs hold."""
        return tuple(self.media)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ModelInputs":
        """A copy on ``device``; ``dtype`` applies to the float media (features, pixels) only."""
        floats = set(self.spec.float_media) if self.spec is not None else {
            k for k, v in self.media.items() if isinstance(v, Tensor) and v.is_floating_point()}
        media = {}
        for name, value in self.media.items():
            if isinstance(value, Tensor):
                value = value.to(device=device, dtype=dtype if name in floats else None)
            media[name] = value
        return ModelInputs(
            self.input_ids.to(device) if device is not None else self.input_ids,
            self.attention_mask.to(device) if device is not None else self.attention_mask,
            self.layout.to(device) if device is not None else self.layout,
            media, self.spec,
        )

    def forward_kwargs(self) -> dict[str, Any]:
        """Our model's keyword arguments for these inputs without their layout: ids, mask and the
        media by the family's names (``model(**inputs.forward_kwargs())`` lays the ids out again).

        Example:
            >>> logits = model(**inputs.forward_kwargs())  # doctest: +SKIP
        """
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, **self.media}

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the reference implementation's ``forward`` (the family's names).

        Example:
            >>> out = hf_thinker(**inputs.model_kwargs())  # doctest: +SKIP
        """
        if self.spec is None:
            return self.forward_kwargs()
        return self.spec.reference_kwargs(self)

    @property
    def shape(self) -> torch.Size:
        """``input_ids.shape`` (TransformerLens patching reads the shape of its "tokens")."""
        return self.input_ids.shape

    @property
    def position_ids(self) -> Tensor:
        """Position ids of the prompt (see :attr:`TokenLayout.position_ids`)."""
        return self.layout.position_ids

    def replace(self, **changes: Any) -> "ModelInputs":
        """A copy with some fields replaced (``input_ids``, ``attention_mask``, ``layout``, ``media``, ``spec``)."""
        return replace(self, **changes)

    def __repr__(self) -> str:
        media = ", ".join(f"{k}={tuple(v.shape) if isinstance(v, Tensor) else v!r}" for k, v in self.media.items())
        return f"ModelInputs({self.family or 'inputs'}: input_ids={tuple(self.input_ids.shape)}, {media}, layout={self.layout!r})"


__all__ = ["ModelInputs"]
