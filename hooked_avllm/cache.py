"""The activation cache, addressed by hook name and (when the inputs carry a layout) by modality."""

from __future__ import annotations

from typing import Any, Sequence

from jaxtyping import Bool
from torch import Tensor
from transformer_lens import ActivationCache

from hooked_avllm.architectures.base import TOWER_SLOTS

ENCODER_PREFIXES = tuple(f"{slot}." for slot in TOWER_SLOTS)  # hooks of the towers and projectors
QUERY_KEY_HOOKS = ("hook_pattern", "hook_attn_scores")  # [batch, head, query, key]: positions on the query axis


def base_hook_name(name: str) -> str:
    """The hook a cache entry belongs to: ``"blocks.3.hook_resid_post_grad"`` -> ``"blocks.3.hook_resid_post"``."""
    return name[: -len("_grad")] if name.endswith("_grad") else name


class AVActivationCache(ActivationCache):
    """A TransformerLens ``ActivationCache`` that carries the inputs' ``TokenLayout`` (if any).

    Everything TransformerLens's cache does works (``cache["resid_post", 3]``,
    ``decompose_resid``, ``logit_attrs``, ``accumulated_resid``...); on top, positions are chosen
    by modality: :meth:`select` one activation, :meth:`restrict` the whole cache (then
    TransformerLens's methods run on those positions only).

    Example:
        >>> logits, cache = model.run_with_cache(inputs)  # doctest: +SKIP
        >>> cache["blocks.3.hook_resid_post"][cache.layout.audio]  # doctest: +SKIP
        >>> cache.select("blocks.3.hook_resid_post", "audio", time=(0.0, 2.0))  # doctest: +SKIP
        >>> audio = cache.restrict("audio")  # doctest: +SKIP
        >>> audio.logit_attrs(audio.decompose_resid(), " dog").shape  # [component, audio tokens]  # doctest: +SKIP
    """

    def __init__(self, cache_dict: dict, model: Any, layout: Any = None, has_batch_dim: bool = True):
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        self.layout = layout
        self.selection: Tensor | None = None  # set on a restricted cache: the [batch, pos] mask it keeps

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
            if self.selection is not None:
                raise ValueError(
                    "this cache is already restricted to chosen positions (cache.restrict): its activations are "
                    "[n, ...] rows in (batch, position) order; index them directly, or restrict the full cache again"
                )
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
        """The activation ``name`` (or its gradient, ``name + "_grad"``) at the chosen positions,
        rows in (batch, position) order.

        Position-major activations ``[batch, pos, ...]`` give ``[n, ...]``; attention patterns
        and scores ``[batch, head, query, key]`` are selected on the query axis: ``[n, head, key]``.
        SAE activations at a hook (``"blocks.3.hook_resid_post.hook_sae_acts_post"``) are
        position-major too.

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
        mask = self.positions(positions, time=time, item=item, batch=batch)
        return self._rows(name, self[name], mask)

    def restrict(
        self,
        positions: str | Sequence[str] | Tensor = "all",
        *,
        time: tuple[float, float] | None = None,
        item: int | None = None,
        batch: int | Sequence[int] | None = None,
    ) -> "AVActivationCache":
        """A cache of the LLM activations at the chosen positions only, for TransformerLens's methods.

        Every LLM entry becomes ``[n, ...]`` (the rows :meth:`select` gives; patterns ``[n, head,
        key]``), held without a batch axis (``has_batch_dim=False``), so ``decompose_resid``,
        ``accumulated_resid``, ``apply_ln_to_stack``, ``logit_attrs``, ``stack_head_results``,
        ``stack_neuron_results`` and ``get_full_resid_decomposition`` treat the n chosen tokens as
        positions: ``[component, n, d_model]`` stacks, ``[component, n]`` attributions. Encoder and
        projector entries (no LLM positions) are left out. ``.selection`` keeps the mask.

        Example:
            >>> audio = cache.restrict("audio", time=(2.0, 4.0))  # doctest: +SKIP
            >>> stack, labels = audio.decompose_resid(return_labels=True)  # doctest: +SKIP
            >>> audio.logit_attrs(stack, " dog").sum(0)  # == the " dog" logit at each of those tokens  # doctest: +SKIP
        """
        mask = self.positions(positions, time=time, item=item, batch=batch)
        if not bool(mask.any()):
            raise ValueError(f"the inputs have no positions of that choice ({positions!r}); nothing to restrict to")
        entries = {
            name: self._rows(name, act, mask)
            for name, act in self.cache_dict.items()
            if not name.startswith(ENCODER_PREFIXES)
        }
        restricted = AVActivationCache(entries, self.model, layout=None, has_batch_dim=False)
        restricted.selection = mask
        return restricted

    def remove_batch_dim(self) -> "AVActivationCache":
        """Drop the batch axis of a batch-1 cache (TransformerLens's method); the layout stays, so
        :meth:`select` and :meth:`restrict` keep working."""
        if not self.has_batch_dim:
            raise ValueError("this cache has no batch dimension any more (remove_batch_dim was already applied)")
        batch = self.layout.shape[0] if self.layout is not None else self._leading_batch()
        if batch != 1:
            raise ValueError(f"remove_batch_dim needs a cache of batch size 1; this one has {batch} rows")
        for name, act in self.cache_dict.items():
            if act.ndim > 0 and act.shape[0] == 1:
                self.cache_dict[name] = act[0]
        self.has_batch_dim = False
        return self

    def _leading_batch(self) -> int:
        sizes = [act.shape[0] for name, act in self.cache_dict.items() if act.ndim and not name.startswith(ENCODER_PREFIXES)]
        return max(sizes) if sizes else 1

    def _rows(self, name: str, act: Tensor, mask: Bool[Tensor, "batch pos"]) -> Tensor:
        """``act`` at the positions of ``mask``: ``[n, ...]`` (patterns on the query axis)."""
        query_key = base_hook_name(name).endswith(QUERY_KEY_HOOKS)
        if not self.has_batch_dim:
            if mask.shape[0] != 1:
                raise ValueError(f"a cache without a batch axis holds one row, but the mask has {mask.shape[0]}")
            act = act[None]
        if query_key:
            act = act.transpose(1, 2)  # [batch, query, head, key]
        if tuple(act.shape[:2]) != tuple(mask.shape):
            raise ValueError(
                f"{name} has batch x positions {tuple(act.shape[:2])} but the layout has {tuple(mask.shape)}; was the "
                "cache made from other inputs than its layout?"
            )
        return act[mask.to(act.device)]
