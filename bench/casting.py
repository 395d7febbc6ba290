"""Casting a reference model to bf16 the way loading a checkpoint in bf16 leaves it.

``model.to(torch.bfloat16)`` rounds every floating buffer, the rotary frequencies (``inv_freq``)
included; ``from_pretrained(torch_dtype=torch.bfloat16)`` leaves those buffers in float32
(transformers issues #29496, #30709). Rounded frequencies turn position p's angles into
``p * round(f)``, an error that grows with p (about 10x the bf16 error at 2,800 text positions),
so a reference cast with ``.to`` is a worse reference than the released model run in bf16. Our
model computes its angles from exact float32 frequencies whatever its dtype.
"""

from __future__ import annotations

import torch


def cast_keeping_rotary_float32(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """``model.to(dtype)`` with its ``inv_freq`` buffers kept in exact float32; returns the model."""
    exact = {name: buffer.detach().clone().float() for name, buffer in model.named_buffers() if name.endswith("inv_freq")}
    model.to(dtype)
    for name, buffer in model.named_buffers():
        if name in exact:
            buffer.data = exact[name].to(buffer.device)
    return model
