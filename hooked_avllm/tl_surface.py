"""The TransformerLens surface of the model: ``run_with_cache`` that returns a cache knowing the
inputs' layout, hooks whose names and results are checked (an unknown name suggests the closest
ones; a hook's result must have the shape and dtype of the activation it replaces, see
:mod:`hooked_avllm.components.hook_checks`), and TransformerLens's ``set_use_*`` switches (weight
views and token helpers live in :mod:`hooked_avllm.weight_views` and :mod:`hooked_avllm.tokens`).

Example:
    >>> import torch
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    >>> cache["resid_post", 1].shape, cache.layout.text.tolist()
    (torch.Size([1, 3, 64]), [[True, True, True]])
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from hooked_avllm.cache import AVActivationCache
from hooked_avllm.components.attention import Attention
from hooked_avllm.components.hook_checks import check_hook_names, check_hook_results, check_names_filter
from hooked_avllm.decoder_inputs import arguments, layout_for
from hooked_avllm.streamed_cache import StreamedCache

# run_with_cache's own arguments (TransformerLens's), as opposed to the model's inputs
CACHE_ARGUMENTS = ("names_filter", "device", "remove_batch_dim", "incl_bwd", "reset_hooks_end", "clear_contexts",
                   "pos_slice", "return_cache_object")
FORWARD_OPTIONS = ("return_type", "loss_per_token")


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    """Rows of the inputs of a forward call (token ids, prepared inputs or a dict of them), if known."""
    first = args[0] if args else kwargs.get("input_ids")
    ids = first if isinstance(first, Tensor) else getattr(first, "input_ids", None)
    if ids is None and isinstance(first, dict):
        ids = first.get("input_ids")
    if not isinstance(ids, Tensor):
        return None
    return ids.shape[0] if ids.ndim == 2 else 1


class TransformerLensSurface:
    """TransformerLens's caching, hooks and switches (mixed into :class:`~hooked_avllm.HookedAVLLM`)."""

    def setup(self) -> None:
        """TransformerLens's ``setup`` (names every module and hook point), then every hook point
        checks what its hooks return (:class:`~hooked_avllm.components.hook_checks.CheckedHookPoint`)."""
        super().setup()
        check_hook_results(self.hook_dict)

    @contextmanager
    def hooks(self, fwd_hooks: list = [], bwd_hooks: list = [], reset_hooks_end: bool = True,  # noqa: B006 - TL's signature
              clear_contexts: bool = False) -> Iterator[Any]:
        """TransformerLens's ``hooks`` context manager; every hook name is checked before any hook is
        added (an unknown one raises a ``KeyError`` suggesting the closest names), so nothing is left behind.

        Example:
            >>> with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: None)]):  # doctest: +SKIP
            ...     logits = model(inputs)
        """
        check_hook_names([name for name, _ in (*fwd_hooks, *bwd_hooks)], self.hook_dict, self.mod_dict)
        with super().hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts) as hooked:
            yield hooked

    def add_hook(self, name: str | Callable[[str], bool], hook: Callable, dir: str = "fwd", is_permanent: bool = False,
                 level: int | None = None, prepend: bool = False) -> None:
        """TransformerLens's ``add_hook``; a name that is no hook point raises a ``KeyError``
        suggesting the closest names.

        Example:
            >>> model.add_hook("blocks.0.hook_resid_post", lambda act, hook: None)  # doctest: +SKIP
        """
        check_hook_names([name], self.hook_dict, self.mod_dict)
        super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False,
        cache_dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[Any, AVActivationCache | dict[str, Tensor]]:
        """Run and cache activations; the cache is an :class:`AVActivationCache` (a TransformerLens
        ``ActivationCache``) that also knows which positions hold which modality (its ``.layout``:
        the inputs' own, or the one the family reads from the ids and media; the forward uses the
        same one).

        Takes TransformerLens's arguments: ``names_filter``, ``device``, ``remove_batch_dim`` (batch
        1; the layout stays usable), ``incl_bwd`` (caches ``{name}_grad`` too; needs a scalar output,
        e.g. ``return_type="loss"``), ``return_cache_object=False`` for a plain dict. Forward
        activations are copied where they go as each hook point produces them
        (:mod:`hooked_avllm.streamed_cache`): ``device="cpu"`` keeps the GPU at what the forward
        needs (pinned host memory, non-blocking copies), ``cache_dtype`` stores floats in that dtype,
        and a :class:`~hooked_avllm.streamed_cache.CacheSizeWarning` comes as soon as the cache is on
        its way to more memory than its device has free.

        Example:
            >>> logits, cache = model.run_with_cache(inputs)  # doctest: +SKIP
            >>> loss, cache = model.run_with_cache(inputs, return_type="loss", incl_bwd=True)  # doctest: +SKIP
            >>> cache.select("blocks.3.hook_resid_post_grad", "audio").shape  # doctest: +SKIP
        """
        if remove_batch_dim and _batch_size(model_args, kwargs) not in (None, 1):
            raise ValueError(
                f"remove_batch_dim=True needs inputs of batch size 1; these have {_batch_size(model_args, kwargs)} rows "
                "(TransformerLens would keep row 0 only)"
            )
        check_names_filter(kwargs.get("names_filter"), self.hook_dict)
        if isinstance(kwargs.get("names_filter"), (tuple, set, frozenset)):  # TransformerLens takes a list
            kwargs["names_filter"] = list(kwargs["names_filter"])
        inputs = {k: v for k, v in kwargs.items() if k not in CACHE_ARGUMENTS + FORWARD_OPTIONS}
        layout = layout_for(self, arguments(self, *model_args, **inputs))
        kwargs["layout"] = layout  # the forward uses the layout the cache gets
        if kwargs.get("incl_bwd") or kwargs.get("pos_slice") is not None:
            if cache_dtype is not None:
                raise ValueError("cache_dtype works for forward caches; with incl_bwd= or pos_slice= leave it out")
            out, cache_dict = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        else:
            out, cache_dict = self._streamed_run(model_args, kwargs, cache_dtype)
            if remove_batch_dim:
                cache_dict = {name: t[0] for name, t in cache_dict.items()}
        if not return_cache_object:
            return out, cache_dict
        return out, AVActivationCache(cache_dict, self, layout=layout, has_batch_dim=not remove_batch_dim)

    def _streamed_run(self, model_args: tuple, kwargs: dict, cache_dtype: torch.dtype | None) -> tuple[Any, dict]:
        """The forward with :class:`~hooked_avllm.streamed_cache.StreamedCache` hooks on the chosen names."""
        names_filter, device = kwargs.get("names_filter"), kwargs.get("device")
        keep = names_filter if callable(names_filter) else (
            (lambda n: True) if names_filter is None else
            (lambda n, chosen=frozenset([names_filter] if isinstance(names_filter, str) else names_filter): n in chosen))
        target = torch.device(device) if device is not None else self.embed.weight.device
        stream = StreamedCache([n for n in self.hook_dict if keep(n)], target, cache_dtype)
        forward = {k: v for k, v in kwargs.items() if k not in CACHE_ARGUMENTS}
        with self.hooks(fwd_hooks=stream.hooks(), reset_hooks_end=kwargs.get("reset_hooks_end", True),
                        clear_contexts=kwargs.get("clear_contexts", False)):
            out = self(*model_args, **forward)
        return out, stream.finish()

    def set_use_attn_result(self, enabled: bool) -> None:
        """Fire ``hook_result`` (per-head attention outputs, [batch, pos, head, d_model]) in every layer."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.use_attn_result = enabled
        self.cfg._use_attn_result = bool(enabled)

    def set_use_split_qkv_input(self, enabled: bool) -> None:
        """TransformerLens's per-head q/k/v input forks do not exist here; asking for them raises."""
        self._refuse_fork("use_split_qkv_input", enabled)

    def set_use_attn_in(self, enabled: bool) -> None:
        """TransformerLens's ``hook_attn_in`` fork does not exist here; asking for it raises."""
        self._refuse_fork("use_attn_in", enabled)

    def set_use_hook_mlp_in(self, enabled: bool) -> None:
        """TransformerLens's ``hook_mlp_in`` does not exist here (``blocks.{l}.ln2.hook_normalized`` is
        the MLP's input); asking for it raises."""
        self._refuse_fork("use_hook_mlp_in", enabled)

    @staticmethod
    def _refuse_fork(name: str, enabled: bool) -> None:
        if enabled:
            raise NotImplementedError(
                f"{name} is not supported: the attention reads one normalised residual per layer "
                "(blocks.{l}.ln1.hook_normalized); patch hook_q/hook_k/hook_v or hook_z per head instead"
            )


__all__ = ["TransformerLensSurface"]
