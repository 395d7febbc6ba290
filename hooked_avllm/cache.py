"""The activation cache, addressed by hook name and (when the inputs carry a layout) by modality."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.utilities import Slice, get_act_name

from hooked_avllm.components.hook_checks import UnknownHookName, suggestion, unknown_hook_name
from hooked_avllm.vocabulary import ENCODER_PREFIXES
from hooked_avllm.weight_views import EXPERT_ACTIVATIONS, moe_layers, refuse_moe
from hooked_avllm.inputs.select import position_mask

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

    Rows a model adds to the stream after a block (``blocks.{l}.hook_injection``, e.g. DeepStack's
    at the visual positions) are part of the residual stream: :meth:`decompose_resid` (mode
    ``"all"``) and :meth:`get_full_resid_decomposition` list them as ``"{l}_injection"``
    components, and :meth:`accumulated_resid`'s ``"final_post"`` is the stream the final norm reads
    (the last layer's ``hook_resid_post`` plus its injection), so decompositions still sum to the
    stream. Neuron methods (``stack_neuron_results``, ``get_neuron_results``, ``expand_neurons``)
    refuse mixture-of-experts layers, which have no ``d_mlp`` neurons.

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

    def __getitem__(self, key: Any) -> Tensor:
        """TransformerLens's lookup (a hook name, or ``("resid_post", 3)``); a name this cache does not
        hold raises a ``KeyError`` that says whether the model has that hook (then it was not
        cached: see ``names_filter``) and suggests the closest cached names.

        Example:
            >>> cache["blocks.0.hook_resid_pots"]  # doctest: +SKIP
            KeyError: "this cache has no 'blocks.0.hook_resid_pots'; did you mean 'blocks.0.hook_resid_post'? ..."
        """
        try:
            return super().__getitem__(key)
        except KeyError:
            raise self._missing(key) from None

    def _missing(self, key: Any) -> KeyError:
        """The error for a cache lookup of ``key`` that holds nothing."""
        try:
            name = key if isinstance(key, str) else get_act_name(*key)
        except Exception:  # noqa: BLE001 - any key TransformerLens cannot read is reported as given
            name = key
        cached = list(self.cache_dict)
        listing = f"cache.keys() lists the {len(cached)} cached names"
        hooks = getattr(self.model, "hook_dict", {})
        if isinstance(name, str) and base_hook_name(name) in hooks:
            how = "incl_bwd=True" if name.endswith("_grad") else "a names_filter that keeps it"
            return UnknownHookName(f"this cache does not hold {name!r}: the model has that hook, but it was not cached "
                                   f"(run run_with_cache with {how}); {suggestion(name, cached)} ({listing})")
        return unknown_hook_name(name, cached, where="this cache has no", listing=listing)

    def positions(
        self,
        positions: str | Sequence[str] | Tensor = "all",
        *,
        time: tuple[float, float] | None = None,
        item: int | None = None,
        batch: int | Sequence[int] | None = None,
    ) -> Bool[Tensor, "batch pos"]:
        """Boolean mask ``[batch, pos]`` of positions by modality, time range (s) and media item.

        See :func:`hooked_avllm.inputs.select.position_mask` for what ``positions`` accepts.
        """
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

    # ------------------------------------------------------------------ TransformerLens decompositions

    def _injection_terms(self, layer: int, pos_slice: Slice) -> tuple[list[Tensor], list[str]]:
        """The cached rows injected after blocks ``0 .. layer - 1`` (they are in the stream at the
        input of ``layer``), position-sliced, with their labels; raises when one was not cached."""
        names = [f"blocks.{l}.hook_injection" for l in range(layer)]
        names = [name for name in names if name in self.model.hook_dict]
        missing = [name for name in names if name not in self.cache_dict]
        if missing:
            raise ValueError(
                f"{missing[0]} is not in this cache, but the rows it adds are part of the residual stream; cache it too "
                "(names_filter), or pass incl_injections=False to leave the injected rows out of the decomposition"
            )
        return [pos_slice.apply(self[name], dim=-2) for name in names], [f"{name.split('.')[1]}_injection" for name in names]

    def _final_layer(self, layer: int | None) -> int:
        return self.model.cfg.n_layers if layer is None or layer == -1 else layer

    def decompose_resid(self, layer=None, mlp_input=False, mode="all", apply_ln=False, pos_slice=None, incl_embeds=True,
                        return_labels=False, incl_injections: bool = True):
        """TransformerLens's ``decompose_resid``, plus (``mode="all"``) one ``"{l}_injection"``
        component after layer ``l``'s MLP for each injection the stream at ``layer``'s input holds
        (``incl_injections=False`` leaves them out), so the components sum to that stream.

        Example:
            >>> stack, labels = cache.decompose_resid(return_labels=True)  # doctest: +SKIP
            >>> labels  # a model injecting after layers 0 and 1  # doctest: +SKIP
            ['embed', '0_attn_out', '0_mlp_out', '0_injection', '1_attn_out', '1_mlp_out', '1_injection']
        """
        pos = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
        stack, labels = super().decompose_resid(layer, mlp_input, mode, apply_ln=False, pos_slice=pos,
                                                incl_embeds=incl_embeds, return_labels=True)
        layer = self._final_layer(layer)
        if mode == "all" and incl_injections:
            terms, names = self._injection_terms(layer, pos)
            parts, order = list(stack), list(labels)
            for term, name in zip(terms, names):
                at = order.index(f"{name.split('_')[0]}_mlp_out") + 1
                parts.insert(at, term)
                order.insert(at, name)
            stack, labels = torch.stack(parts), order
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos, mlp_input=mlp_input)
        return (stack, labels) if return_labels else stack

    def accumulated_resid(self, layer=None, incl_mid=False, apply_ln=False, pos_slice=None, mlp_input=False,
                          return_labels=False):
        """TransformerLens's ``accumulated_resid``; its ``"final_post"`` (``layer=n_layers``) is the
        stream the final norm reads: the last layer's ``hook_resid_post`` plus the rows injected
        after that layer, where the model injects there.

        Example:
            >>> stack, labels = cache.accumulated_resid(return_labels=True)  # doctest: +SKIP
        """
        pos = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
        stack, labels = super().accumulated_resid(layer, incl_mid, apply_ln=False, pos_slice=pos, mlp_input=mlp_input,
                                                  return_labels=True)
        layer = self._final_layer(layer)
        n_layers = self.model.cfg.n_layers
        if layer == n_layers:
            terms, names = self._injection_terms(n_layers, pos)
            last = [t for t, name in zip(terms, names) if name == f"{n_layers - 1}_injection"]
            if last:
                stack = torch.cat([stack[:-1], (stack[-1] + last[0])[None]])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos, mlp_input=mlp_input,
                                           has_batch_dim=self.has_batch_dim, recompute_ln=layer == n_layers)
        return (stack, labels) if return_labels else stack

    def get_full_resid_decomposition(self, layer=None, mlp_input=False, expand_neurons=True, apply_ln=False,
                                     pos_slice=None, return_labels=False, project_output_onto=None):
        """TransformerLens's ``get_full_resid_decomposition`` (heads, MLP neurons or outputs, embed,
        bias), plus one ``"{l}_injection"`` component per injection in the stream at ``layer``'s
        input (before ``"embed"``), treated as the others are (``apply_ln``, ``project_output_onto``).
        ``expand_neurons=True`` needs dense MLPs: with mixture-of-experts layers pass
        ``expand_neurons=False`` (one ``mlp_out`` component per layer).

        Example:
            >>> stack, labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)  # doctest: +SKIP
        """
        layer_ = self._final_layer(layer)
        if expand_neurons and moe_layers(self.model):
            refuse_moe(self.model, "get_full_resid_decomposition(expand_neurons=True)", range(layer_),
                       instead="expand_neurons=False (one mlp_out component per layer), or " + EXPERT_ACTIVATIONS)
        pos = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
        stack, labels = super().get_full_resid_decomposition(layer, mlp_input, expand_neurons, apply_ln, pos, True,
                                                             project_output_onto)
        terms, names = self._injection_terms(layer_, pos)
        if terms:
            extra = torch.stack(terms)
            if apply_ln:
                extra = self.apply_ln_to_stack(extra, layer_, pos_slice=pos, mlp_input=mlp_input)
            if project_output_onto is not None:
                extra = extra @ project_output_onto  # [d_model] -> squeezed, [d_model, n] -> n outputs
            at = labels.index("embed") if "embed" in labels else labels.index("bias")
            stack = torch.cat([stack[:at], extra.to(stack.dtype), stack[at:]])
            labels = labels[:at] + names + labels[at:]
        return (stack, labels) if return_labels else stack

    def stack_neuron_results(self, layer, *args: Any, **kwargs: Any):
        """TransformerLens's ``stack_neuron_results``, for dense MLP layers (mixture-of-experts
        layers below ``layer`` raise: they have no ``d_mlp`` neurons)."""
        refuse_moe(self.model, "stack_neuron_results", range(layer if layer not in (None, -1) else self.model.cfg.n_layers))
        return super().stack_neuron_results(layer, *args, **kwargs)

    def get_neuron_results(self, layer, *args: Any, **kwargs: Any):
        """TransformerLens's ``get_neuron_results``, for a dense MLP layer (a mixture-of-experts layer raises)."""
        refuse_moe(self.model, "get_neuron_results", [layer])
        return super().get_neuron_results(layer, *args, **kwargs)

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
