"""The activation cache, addressed by hook name and (when the inputs carry a layout) by modality."""

from __future__ import annotations

from typing import Any

from transformer_lens import ActivationCache


class AVActivationCache(ActivationCache):
    """A TransformerLens ``ActivationCache`` that carries the inputs' ``TokenLayout`` (if any).

    Example:
        >>> logits, cache = model.run_with_cache(inputs)  # doctest: +SKIP
        >>> cache["blocks.3.hook_resid_post"][cache.layout.audio]  # doctest: +SKIP
    """

    def __init__(self, cache_dict: dict, model: Any, layout: Any = None, has_batch_dim: bool = True):
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        self.layout = layout
