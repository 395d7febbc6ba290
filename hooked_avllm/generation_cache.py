"""Caching activations while generating: one cache per forward (prefill, then each decoding
step), or one cache with every LLM activation concatenated over the steps.

Concatenated, a position-major activation ``[batch, pos, ...]`` covers prompt + generated
positions; attention patterns and scores ``[batch, head, query, key]`` become the full
``[batch, head, seq, seq]`` matrix (keys a step could not see are 0 in patterns, ``-inf`` in
scores). Encoder and projector activations exist only at the prefill and are kept as they are.
The cache's layout is the prompt's, extended by the generated positions.

Example:
    >>> tokens, cache = model.generate_with_cache(inputs, max_new_tokens=20,                # doctest: +SKIP
    ...                                           names_filter=lambda n: n.endswith("resid_post"))
    >>> cache.select("blocks.20.hook_resid_post", "generated").shape                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from hooked_avllm.cache import AVActivationCache
from hooked_avllm.inputs.layout import carried_layout

NamesFilter = Callable[[str], bool] | str | list[str] | None


def _filter(names_filter: NamesFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if isinstance(names_filter, (list, tuple)):
        chosen = set(names_filter)
        return lambda name: name in chosen
    return names_filter


def generate_with_cache(
    model: Any,
    inputs: Any,
    max_new_tokens: int = 32,
    *,
    names_filter: NamesFilter = None,
    device: str | torch.device | None = None,
    concat: bool = True,
    eos_token_id: int | list[int] | None = None,
) -> tuple[Tensor, AVActivationCache | list[AVActivationCache]]:
    """Greedy generation that caches the chosen activations of every forward (see module docstring).

    The last generated token is run through the model too, so the cache covers every token.
    ``device="cpu"`` moves each activation off the GPU as soon as it is made.
    """
    keep = _filter(names_filter)
    steps: dict[str, list[Tensor]] = {}
    step_of: dict[str, list[int]] = {}

    def save(act: Tensor, hook: Any) -> None:
        context = model.forward_context
        steps.setdefault(hook.name, []).append(act.detach().to(device) if device is not None else act.detach())
        step_of.setdefault(hook.name, []).append(context.step if context is not None else 0)

    hooks = [(name, save) for name in model.hook_dict if keep(name)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        tokens = model.generate(inputs, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, forward_last=True)
    layout = _extended_layout(model, inputs, tokens)
    if not concat:
        n_forwards = max((max(s) for s in step_of.values()), default=0) + 1
        caches = []
        for step in range(n_forwards):
            entries = {name: acts[i] for name, acts in steps.items() for i, s in enumerate(step_of[name]) if s == step}
            caches.append(AVActivationCache(entries, model, layout=layout))
        return tokens, caches
    merged = {name: _concat(name, acts) for name, acts in steps.items()}
    return tokens, AVActivationCache(merged, model, layout=layout)


def _concat(name: str, acts: list[Tensor]) -> Tensor:
    if len(acts) == 1:
        return acts[0]
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        n_keys = acts[-1].shape[-1]
        fill = 0.0 if name.endswith("hook_pattern") else float("-inf")
        padded = [torch.nn.functional.pad(a, (0, n_keys - a.shape[-1]), value=fill) for a in acts]
        return torch.cat(padded, dim=2)
    return torch.cat(acts, dim=1)


def _extended_layout(model: Any, inputs: Any, tokens: Tensor) -> Any:
    layout = carried_layout(inputs)
    if layout is None:
        if isinstance(inputs, Tensor):
            kwargs = {"input_ids": inputs if inputs.ndim == 2 else inputs[None]}
        else:
            kwargs = inputs.model_kwargs() if hasattr(inputs, "model_kwargs") else dict(inputs)
        media = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
        layout = model.layout_of(kwargs["input_ids"], kwargs.get("attention_mask"), strict=False, **media)
        if layout is None:
            return None
    layout = layout.to(layout.text.device)  # a copy: the inputs' layout stays the prompt's
    return layout.extend(tokens.shape[1] - layout.n_prompt)
