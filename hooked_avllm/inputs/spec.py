"""What a family's inputs are: the input contract every family declares (``family.input_spec(cfg)``).

The generic code (``ModelInputs``, batching, the model's forward) knows a family's inputs only
through this object: the names of its media tensors, which of them are float features, how
reference argument names map onto ours, its padding id and length limit, its position rule
(the layout's position ids), how media of several inputs batch, and how prepared inputs become the
reference implementation's keyword arguments. A family with more to say (the Qwen pipeline's
token ids and timing) subclasses it.

Example:
    >>> import torch
    >>> spec = InputSpec(family="demo", media_names=("pixel_values",), float_media=("pixel_values",))
    >>> spec.batch_media([{"pixel_values": torch.zeros(1, 3)}, {"pixel_values": torch.ones(2, 3)}])["pixel_values"].shape
    torch.Size([3, 3])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import one_d_positions

if TYPE_CHECKING:
    from hooked_avllm.inputs.layout import TokenLayout
    from hooked_avllm.inputs.model_inputs import ModelInputs


@dataclass(frozen=True)
class InputSpec:
    """A family's input contract (see the module docstring).

    ``media_names``: the media arguments its ``forward`` and ``ModelInputs`` take (tensors, and
    flags such as ``use_audio_in_video``); ``float_media``: those cast to the model's dtype;
    ``aliases``: a reference implementation's argument name -> ours; ``ignored``: reference
    arguments that carry nothing the model needs (accepted and dropped).
    """

    family: str = ""
    media_names: tuple[str, ...] = ()
    float_media: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    pad_token_id: int = 0
    max_positions: int = 32768

    def layout_positions(self, layout: "TokenLayout", media: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Position ids ``[rows, batch, seq]`` and rope deltas ``[batch, 1]`` of a prompt layout
        with these media: 1D positions by default."""
        return one_d_positions(layout)

    def batch_media(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The media of several inputs as one batch's, items in order: tensors concatenated along
        their first dimension (their other dimensions must agree), flags equal in every input."""
        out: dict[str, Any] = {}
        for name in dict.fromkeys(k for item in items for k in item):
            values = [item[name] for item in items if item.get(name) is not None]
            if not values:
                continue
            if isinstance(values[0], Tensor):
                shapes = sorted({tuple(v.shape[1:]) for v in values})
                if len(shapes) > 1:
                    raise InputError(
                        f"the inputs' {name} have different shapes {shapes}; a batch needs one shape per medium "
                        "(prepare every row the same way, e.g. the same audio length and number of frames)"
                    )
                out[name] = torch.cat(values)
            else:
                if len(set(values)) > 1:
                    raise InputError(f"the inputs disagree on {name} ({sorted(set(values))}); prepare them the same way to batch them")
                out[name] = values[0]
        return out

    def reference_kwargs(self, inputs: "ModelInputs") -> dict[str, Any]:
        """The reference implementation's keyword arguments for these inputs (ids, mask, media)."""
        return {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask,
                **{k: v for k, v in inputs.media.items() if v is not None}}


__all__ = ["InputSpec"]
