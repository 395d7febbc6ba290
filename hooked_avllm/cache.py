"""The activation cache, addressed by hook name and (when the inputs carry a layout) by modality."""

from __future__ import annotations

from typing import Any, Sequence

from jaxtyping import Bool
from torch import Tensor
from transformer_lens import ActivationCache

ENCODER_PREFIXES = ("audio.", "vision.", "audio_proj.", "vision_proj.")


class AVActivationCache(ActivationCache):
    """A TransformerLens ``ActivationCache`` that carries the inputs' ``TokenLayout`` (if any).

    Example:
        >>> logits, cache = model.run_with_cache(inputs)  # doctest: +SKIP
        >>> cache["blocks.3.hook_resid_post"][cache.layout.audio]  # doctest: +SKIP
        >>> cache.select("blocks.3.hook_resid_post", "audio", time=(0.0, 2.0))  # doctest: +SKIP
    """

    def __init__(self, cache_dict: dict, model: Any, layout: Any = None, has_batch_dim: bool = True):
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        self.layout = layout

    def positions(
        self,
        positions: str | Sequence[str] | Tensor = "all",
        *,
        time: tuple[float, float] | None = None,
        item: int | None = None,
        batch: int | Sequence[int] | None = None,
    ) -> Bool[Tensor, "batch pos"]:
        """Boolean mask ``[batch, pos]`` of positions by modality, time range (s) and media item.

        See :func:`hooked_avllm.analysis.select.position_mask` for what ``positions`` accepts.
        """
        from hooked_avllm.analysis.select import position_mask

        if self.layout is None:
            raise ValueError(
                "this cache has no layout; run the model on prepared inputs (model.prepare) or on token ids whose "
                "placeholders parse, or pass a bool mask [batch, pos] to index the activation yourself"
            )
        return position_mask(self.layout, positions, time=time, item=item, batch=batch)

    def select(
        self,
        name: str,
        positions: str | Sequence[str] | Tensor = "all",
        *,
        time: tuple[float, float] | None = None,
        item: int | None = None,
        batch: int | Sequence[int] | None = None,
    ) -> Tensor:
        """The activation ``name`` at the chosen positions, rows in (batch, position) order.

        Position-major activations ``[batch, pos, ...]`` give ``[n, ...]``; attention patterns
        and scores ``[batch, head, query, key]`` are selected on the query axis: ``[n, head, key]``.

        Example:
            >>> cache.select("blocks.20.hook_resid_post", "audio", time=(2.0, 4.0)).shape  # doctest: +SKIP
            torch.Size([50, 2048])
        """
        if name.startswith(ENCODER_PREFIXES):
            raise ValueError(
                f"{name!r} is an encoder activation (one packed row of frames/patches, not LLM positions); index it "
                "directly, e.g. cache[name][0, frames], or select its LLM counterpart (the projector output sits at "
                "the audio/video placeholder positions of hook_embed)"
            )
        act = self[name]
        mask = self.positions(positions, time=time, item=item, batch=batch)
        if name.endswith(("hook_pattern", "hook_attn_scores")):
            act = act.transpose(1, 2)  # [batch, query, head, key]
        if tuple(act.shape[:2]) != tuple(mask.shape):
            raise ValueError(
                f"{name} has batch x positions {tuple(act.shape[:2])} but the layout has {tuple(mask.shape)}; was the "
                "cache made from other inputs than its layout?"
            )
        return act[mask.to(act.device)]
