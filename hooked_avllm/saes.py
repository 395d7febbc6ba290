"""Sparse autoencoders on any hook point, with SAELens's ``HookedSAETransformer`` method names.

Attaching an SAE replaces the :class:`~transformer_lens.hook_points.HookPoint` at the SAE's hook
name (``sae.cfg.metadata.hook_name``) with an :class:`SAEHookPoint`: still a hook point at the
same name, whose forward runs the SAE. So hooks and caches on that name see the post-SAE
activation, and the SAE's own hook points (``hook_sae_input``, ``hook_sae_acts_pre``,
``hook_sae_acts_post``, ``hook_sae_recons``, plus our ``hook_sae_error`` and ``hook_sae_output``)
hang below it: ``"blocks.3.hook_resid_post.hook_sae_acts_post"`` is an ordinary hook name of the
model, cached by ``run_with_cache`` and selectable by modality. Any hook point works, in the LLM
(``blocks.3.hook_resid_post``, ``blocks.2.attn.hook_z``) or in a tower (``audio.blocks.1.hook_resid_post``,
``audio_proj.hook_out``); the SAE runs in every forward, so also at every step of ``generate``.

The SAE is duck-typed (``encode``, ``decode``, ``hook_dict``, ``cfg``, ``use_error_term``):
SAELens's ``SAE`` classes fit, and ``sae_lens`` itself is never imported here. The SAE is not a
submodule of the model: its parameters are not the model's, are not in ``state_dict()``, and do
not move with ``model.to(...)`` (move the SAE yourself; a device mismatch raises).

Example:
    >>> from sae_lens import SAE                                                   # doctest: +SKIP
    >>> sae = SAE.load_from_disk("my_sae_blocks.3.hook_resid_post")               # doctest: +SKIP
    >>> logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae], use_error_term=True)  # doctest: +SKIP
    >>> cache.select("blocks.3.hook_resid_post.hook_sae_acts_post", "audio").shape  # [n_audio, d_sae]  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import Attention, LayerNorm, RMSNorm
from hooked_avllm.components.hook_state import watched
from hooked_avllm.components.moe import SparseMoE

OWN_POINTS = ("hook_sae_error", "hook_sae_output")  # computed here, not by the SAE: our own hook points

SAELike = Any  # an SAELens SAE, or anything with encode / decode / hook_dict / cfg


def sae_hook_name(sae: SAELike) -> str:
    """The hook an SAE reads: ``cfg.metadata.hook_name`` (SAELens 6.x) or ``cfg.hook_name`` (older)."""
    metadata = getattr(sae.cfg, "metadata", None)
    name = getattr(metadata, "hook_name", None) or getattr(sae.cfg, "hook_name", None)
    if not name:
        raise ValueError("the SAE's config names no hook: set sae.cfg.metadata.hook_name (e.g. 'blocks.3.hook_resid_post')")
    out = getattr(metadata, "hook_name_out", None)
    if out and out != name:
        raise ValueError(
            f"transcoders (reading {name}, writing {out}) are not supported; attach SAEs, whose input and output hook coincide"
        )
    return name


def check_sae(sae: Any) -> None:
    """Raise a ``TypeError`` unless ``sae`` looks like an SAE (``encode``, ``decode``, ``cfg``, ``hook_dict``).

    Example:
        >>> check_sae("blocks.3.hook_resid_post")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: str 'blocks.3.hook_resid_post' is not an SAE (it has no decode, cfg, hook_dict); ...
    """
    lacking = [attr for attr in ("encode", "decode", "cfg", "hook_dict") if not hasattr(sae, attr)]
    if lacking:
        raise TypeError(
            f"{type(sae).__name__} {_short(sae)} is not an SAE (it has no {', '.join(lacking)}); pass SAELens SAE objects "
            "(sae_lens.SAE.from_pretrained / load_from_disk) or objects with encode, decode, cfg and hook_dict"
        )


def sae_list(saes: Any) -> list[SAELike]:
    """``saes`` (one SAE or a list of them) as a checked list: each an SAE, at most one per hook.

    Example:
        >>> sae_list([])
        []
    """
    if isinstance(saes, (str, bytes)) or not (hasattr(saes, "encode") or hasattr(saes, "__iter__")):
        raise TypeError(f"saes={_short(saes)} is not an SAE or a list of SAEs; pass saes=[sae, ...]")
    saes = [saes] if hasattr(saes, "encode") else list(saes)
    seen: dict[str, int] = {}
    for i, sae in enumerate(saes):
        check_sae(sae)
        name = sae_hook_name(sae)
        if name in seen:
            j = seen[name]
            raise ValueError(
                f"saes[{j}] ({describe_sae(saes[j])}) and saes[{i}] ({describe_sae(sae)}) both read {name}; one hook holds "
                "one SAE, so one of them would silently never run: pass one SAE per hook (run the others separately)"
            )
        seen[name] = i
    return saes


def describe_sae(sae: SAELike) -> str:
    """A short name for an SAE in messages: its class and widths (its repr may be pages long)."""
    return f"{type(sae).__name__}(d_in={_d_in(sae)}, d_sae={getattr(sae.cfg, 'd_sae', '?')})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SAEHookPoint(HookPoint):
    """A hook point that runs an SAE on its activation, at the name of the hook point it replaced.

    ``forward(x)``: ``out = decode(encode(x))``; with ``use_error_term``, plus the SAE's error
    ``x - decode(encode(x))``, computed with the SAE's hook points switched off and without
    gradient, so an edit of the features (a hook on ``hook_sae_acts_post``) moves the output by
    exactly the decoded change, and with nothing edited the output is ``x`` bit for bit. Gradients
    reach ``x`` through the SAE only (the error is a constant), as in SAELens. The output has
    ``x``'s dtype. The SAE's hook points and ours (``hook_sae_error``, ``hook_sae_output``) are
    children; the SAE and the replaced hook point (``original``) are plain attributes.

    Example:
        >>> point = model.hook_dict["blocks.3.hook_resid_post"]  # after model.add_sae(sae)  # doctest: +SKIP
        >>> point.sae is sae, point.original                                              # doctest: +SKIP
    """

    # A component that computes an activation only while its hook point is watched (norm scales,
    # attention patterns) must still call a point that holds an SAE (see add_sae).
    always_watched = True

    def __init__(self, sae: SAELike, original: HookPoint, use_error_term: bool = False):
        super().__init__()
        object.__setattr__(self, "sae", sae)  # not a child module: its parameters stay out of the model's
        object.__setattr__(self, "original", original)
        self.use_error_term = bool(use_error_term)
        self.name = original.name
        for setting in ("pos_dim", "hook_conversion", "backward_scale"):  # TransformerLens 4.x per-point settings
            if hasattr(original, setting):
                setattr(self, setting, getattr(original, setting))
        for name, point in sae.hook_dict.items():
            if name in OWN_POINTS:
                continue
            if "." in name:
                raise ValueError(
                    f"the SAE's hook point {name!r} sits in a submodule; only SAEs with top-level hook points can be attached"
                )
            self.add_module(name, point)
        self.hook_sae_error = HookPoint()  # [..., d_in]: x - decode(encode(x)), only with the error term
        self.hook_sae_output = HookPoint()  # like x: what flows on

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_in"]:
        self.check(x)
        sae_in = x.to(_dtype(self.sae, x.dtype))
        recons = self.sae.decode(self.sae.encode(sae_in))  # the SAE's hooks fire (and may edit)
        if not self.use_error_term:
            return self.hook_sae_output(recons.to(x.dtype))
        x_const = x.detach()
        with torch.no_grad():
            with _hooks_off(self.sae.hook_dict.values()):
                clean = self.sae.decode(self.sae.encode(sae_in))
            error = self.hook_sae_error(x_const - clean)
            error_edit = error - (x_const - clean)  # 0 unless a hook edited the error (in place or not)
        # == recons + error, written so that it is x bit for bit when no hook edits anything
        out = x_const + (recons - clean) + error_edit
        return self.hook_sae_output(out.to(x.dtype))

    def check(self, x: Tensor) -> None:
        """Raise a ``ValueError`` naming the hook when ``x`` does not fit the SAE (width, device)."""
        flat = _flattens_heads(self.sae)
        width = x.shape[-2] * x.shape[-1] if flat and x.ndim >= 2 else x.shape[-1]
        d_in = _d_in(self.sae)
        if d_in is not None and width != d_in:
            if not flat and x.ndim >= 3 and x.shape[-2] * x.shape[-1] == d_in:
                advice = ("the activation is per head [..., head, d_head]: build the SAE with "
                          "reshape_activations='hook_z' (SAELens) so it flattens the heads")
            else:
                advice = f"use an SAE trained on {self.name} (d_in={width}), or attach this one at a hook of width {d_in}"
            raise ValueError(
                f"the SAE at {self.name} has d_in={d_in} but the activation there is {width} wide "
                f"(shape {tuple(x.shape)}); {advice}. An SAE attached with add_sae stays until "
                f"model.reset_saes({self.name!r})"
            )
        device = _device(self.sae)
        if device is not None and device != x.device:
            raise ValueError(
                f"the SAE at {self.name} is on {device} but its activation is on {x.device}: move it with sae.to({str(x.device)!r})"
            )

    def release(self) -> None:
        """Give the SAE's hook points back their own names (``hook_sae_acts_post``...) on detaching."""
        for name, point in self.sae.hook_dict.items():
            point.name = name

    def __repr__(self) -> str:
        d_in, d_sae = _d_in(self.sae), getattr(self.sae.cfg, "d_sae", "?")
        return f"SAEHookPoint(name={self.name!r}, d_in={d_in}, d_sae={d_sae}, use_error_term={self.use_error_term})"


class SAEHost:
    """Mixin for :class:`~hooked_avllm.HookedAVLLM`: attach SAEs to hook points, with the method
    names of SAELens's ``HookedSAETransformer`` (``add_sae``, ``reset_saes``, ``saes``,
    ``run_with_saes``, ``run_with_cache_with_saes``, ``run_with_hooks_with_saes``, ``acts_to_saes``).

    Unlike SAELens, nothing is skipped with a warning: an unknown hook, an SAE on another device,
    an activation of another width or an unsupported option raise ``ValueError``; an object that is
    not an SAE raises ``TypeError``; two SAEs for one hook in one ``saes=[...]`` list raise (only
    one could run there). ``add_sae`` at a hook that already holds an SAE replaces it as SAELens
    does, but says so with a ``UserWarning`` naming both.

    Example:
        >>> model.add_sae(sae, use_error_term=True)                                       # doctest: +SKIP
        >>> logits, cache = model.run_with_cache(inputs)                                  # doctest: +SKIP
        >>> cache["blocks.3.hook_resid_post.hook_sae_acts_post"].shape  # [batch, pos, d_sae]  # doctest: +SKIP
        >>> model.reset_saes()                                                            # doctest: +SKIP
    """

    hook_dict: dict[str, HookPoint]

    @property
    def acts_to_saes(self) -> dict[str, SAELike]:
        """Hook name -> the SAE attached there."""
        return {name: point.sae for name, point in self.hook_dict.items() if isinstance(point, SAEHookPoint)}

    def add_sae(self, sae: SAELike, use_error_term: bool | None = None, exclude_special_tokens: bool = False) -> None:
        """Attach ``sae`` at its hook (``sae.cfg.metadata.hook_name``) until :meth:`reset_saes`.

        ``use_error_term``: add the SAE's error, so the model computes what it would without the
        SAE while the features are readable and editable (``None``: the SAE's own
        ``use_error_term``; the SAE itself is not changed). An SAE already attached at that hook
        is replaced, as in SAELens, with a warning naming both (:meth:`saes` replaces it quietly
        and restores it on exit). Hooks already on the
        replaced hook point stay on it: they do not run while the SAE is attached (a warning
        says so) and run again after :meth:`reset_saes`. ``exclude_special_tokens`` (SAELens)
        is accepted only as ``False``: the SAE runs at every position.

        Example:
            >>> model.add_sae(sae, use_error_term=True)                                  # doctest: +SKIP
            >>> model.acts_to_saes                                                       # doctest: +SKIP
            {'blocks.3.hook_resid_post': StandardSAE(...)}
        """
        self._attach_sae(sae, use_error_term, exclude_special_tokens, warn_replace=True)

    def _attach_sae(self, sae: SAELike, use_error_term: bool | None, exclude_special_tokens: bool,
                    warn_replace: bool) -> None:
        check_sae(sae)
        if use_error_term is not None and not isinstance(use_error_term, bool):
            raise TypeError(f"use_error_term={use_error_term!r} must be True, False or None (the SAE's own setting)")
        if exclude_special_tokens is not False:
            raise ValueError(
                "exclude_special_tokens is not supported: the SAE runs at every position; choose positions "
                "afterwards (cache.select(name, 'audio')) or edit features at chosen positions with a hook"
            )
        name = sae_hook_name(sae)
        current = self._replaceable_point(name)
        self._check_sae_device(sae, name)
        if use_error_term is None:
            use_error_term = bool(getattr(sae, "use_error_term", False))
        original = current.original if isinstance(current, SAEHookPoint) else current
        point = SAEHookPoint(sae, original, use_error_term)
        self._check_point_fires(name, point)
        if current.fwd_hooks or current.bwd_hooks:
            warnings.warn(
                f"{len(current.fwd_hooks) + len(current.bwd_hooks)} hooks on {name} do not run while the SAE is attached "
                "(they stay on the replaced point and run again once it is put back: reset_saes, or the end of a saes() "
                "block); add hooks after add_sae to see the SAE's output",
                stacklevel=2,
            )
        if isinstance(current, SAEHookPoint):
            if warn_replace:
                warnings.warn(
                    f"add_sae replaces the SAE at {name} ({describe_sae(current.sae)}) with {describe_sae(sae)}: one hook "
                    "holds one SAE. model.reset_saes() puts the original hook point back; to run several SAEs, "
                    "attach them at different hooks",
                    UserWarning, stacklevel=3,
                )
            current.release()
        self._put_point(name, point)
        self.setup()

    def reset_saes(self, act_names: str | Sequence[str] | None = None) -> None:
        """Detach the SAEs at ``act_names`` (all when ``None``), putting the very hook point objects
        they replaced back (with any permanent hooks on them).

        Example:
            >>> model.reset_saes("blocks.3.hook_resid_post")                             # doctest: +SKIP
        """
        attached = self.acts_to_saes
        names = [act_names] if isinstance(act_names, str) else list(attached if act_names is None else act_names)
        names = list(dict.fromkeys(names))
        missing = [n for n in names if n not in attached]
        if missing:
            raise ValueError(f"no SAE is attached at {missing}; attached: {sorted(attached) or 'none'}")
        for name in names:
            point = self.hook_dict[name]
            point.release()
            self._put_point(name, point.original)
        self.setup()

    @contextmanager
    def saes(
        self,
        saes: SAELike | Sequence[SAELike] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        exclude_special_tokens: bool = False,
    ) -> Iterator["SAEHost"]:
        """Attach ``saes`` inside the block; on exit (``reset_saes_end``) every touched hook gets
        back what it had before: its hook point, or the SAE attached there before.

        Example:
            >>> with model.saes(saes=[sae], use_error_term=True):                        # doctest: +SKIP
            ...     tokens = model.generate(inputs, max_new_tokens=20)
        """
        saes = sae_list(saes)
        before: dict[str, HookPoint] = {}
        try:
            for sae in saes:
                name = sae_hook_name(sae)
                if name in self.hook_dict:
                    before.setdefault(name, self.hook_dict[name])
                self._attach_sae(sae, use_error_term, exclude_special_tokens, warn_replace=False)
        except BaseException:
            self._restore_points(before)
            raise
        try:
            yield self
        finally:
            if reset_saes_end:
                self._restore_points(before)

    def run_with_saes(
        self,
        *model_args: Any,
        saes: SAELike | Sequence[SAELike] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        exclude_special_tokens: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        """``model(*model_args, **model_kwargs)`` with ``saes`` attached (see :meth:`saes`).

        Example:
            >>> logits = model.run_with_saes(inputs, saes=[sae])  # [batch, pos, vocab]   # doctest: +SKIP
        """
        with self.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(
        self,
        *model_args: Any,
        saes: SAELike | Sequence[SAELike] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        exclude_special_tokens: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """``model.run_with_cache(...)`` with ``saes`` attached: the output and an
        :class:`~hooked_avllm.cache.AVActivationCache` (with the layout) holding the SAE activations.

        Example:
            >>> logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae])           # doctest: +SKIP
            >>> cache.select("blocks.3.hook_resid_post.hook_sae_acts_post", "audio")  # [n_audio, d_sae]  # doctest: +SKIP
        """
        with self.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
            return self.run_with_cache(*model_args, **kwargs)

    def run_with_hooks_with_saes(
        self,
        *model_args: Any,
        saes: SAELike | Sequence[SAELike] = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        exclude_special_tokens: bool = False,
        fwd_hooks: list[tuple[str | Callable, Callable]] = [],
        bwd_hooks: list[tuple[str | Callable, Callable]] = [],
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        """``model.run_with_hooks(...)`` with ``saes`` attached; hooks may name the SAE's points.

        Example:
            >>> def drop(acts, hook):  # acts [batch, pos, d_sae]
            ...     acts[..., 7] = 0.0
            >>> logits = model.run_with_hooks_with_saes(inputs, saes=[sae], use_error_term=True,   # doctest: +SKIP
            ...     fwd_hooks=[("blocks.3.hook_resid_post.hook_sae_acts_post", drop)])
        """
        with self.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
            return self.run_with_hooks(
                *model_args, fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks, reset_hooks_end=reset_hooks_end,
                clear_contexts=clear_contexts, **model_kwargs,
            )

    # ------------------------------------------------------------------ internals

    def _replaceable_point(self, name: str) -> HookPoint:
        """The hook point an SAE for ``name`` replaces (a plain one, or an attached SAE's)."""
        parent = name.rpartition(".")[0]
        if isinstance(self.hook_dict.get(parent), SAEHookPoint):
            raise ValueError(f"{name} is a hook point of the SAE at {parent}; SAEs attach to the model's own hook points")
        if name not in self.hook_dict:
            own = [n for n in self.hook_dict if not isinstance(self.hook_dict.get(n.rpartition(".")[0]), SAEHookPoint)]
            close = difflib.get_close_matches(name, own, n=5, cutoff=0.6)
            hint = f"similar names: {close}" if close else f"e.g. {own[:3]}"
            raise ValueError(
                f"the model has no hook point {name!r} (the SAE's hook name); {hint}; model.hook_dict lists them all"
            )
        return self.hook_dict[name]

    def _check_sae_device(self, sae: SAELike, name: str) -> None:
        model_device = torch.device(self.cfg.device)
        for device in {p.device for p in getattr(sae, "parameters", lambda: [])()}:
            same_index = device.index is None or model_device.index is None or device.index == model_device.index
            if device.type != model_device.type or not same_index:
                raise ValueError(
                    f"the SAE for {name} has parameters on {device} but the model is on {model_device}: "
                    f"move it first with sae.to({str(model_device)!r})"
                )

    def _check_point_fires(self, name: str, point: SAEHookPoint) -> None:
        """Refuse a hook point the model would not call, so the SAE would silently never run."""
        parent_name, _, leaf = name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        if isinstance(parent, Attention) and leaf == "hook_result" and not parent.use_attn_result:
            raise ValueError(
                f"{name} fires only with per-head results: call model.set_use_attn_result(True) before attaching the SAE"
            )
        if isinstance(parent, SparseMoE):
            self._check_moe_point(name, parent_name, leaf, parent)
        on_demand = (
            (isinstance(parent, Attention) and leaf in ("hook_pattern", "hook_attn_scores"))
            or (isinstance(parent, RMSNorm) and leaf == "hook_scale")
            or (isinstance(parent, LayerNorm) and leaf in ("hook_scale", "hook_normalized"))
        )
        if on_demand and not watched(point):
            raise ValueError(
                f"an SAE at {name} would never run: {type(parent).__name__} computes this activation only when a hook "
                "watches it, and hooked_avllm.components.hook_state.watched does not count an SAE as watching"
            )

    @staticmethod
    def _check_moe_point(name: str, parent_name: str, leaf: str, moe: SparseMoE) -> None:
        """Refuse the mixture-of-experts hooks an SAE cannot sit on: the chosen expert ids (integers,
        not activations) and the per-expert outputs while the layer does not compute them."""
        if leaf == "hook_expert_indices":
            raise ValueError(
                f"{name} holds integer expert ids (the top-k choice), not an activation an SAE can encode; attach it at "
                f"{parent_name}.hook_router_logits ([batch, pos, n_experts]), {parent_name}.hook_expert_out (each chosen "
                "expert's output) or the block's hook_mlp_out"
            )
        if leaf == "hook_expert_out" and not moe.use_expert_outputs:
            raise ValueError(
                f"{name} fires only with per-expert outputs: set model.{parent_name}.use_expert_outputs = True before "
                "attaching the SAE (it then encodes each chosen expert's output, [batch, pos, top_k, d_model])"
            )

    def _put_point(self, name: str, point: HookPoint) -> None:
        """Put ``point`` at ``name`` in the module tree (``setup()`` then rebuilds ``hook_dict``)."""
        parent_name, _, leaf = name.rpartition(".")
        setattr(self.get_submodule(parent_name) if parent_name else self, leaf, point)

    def _restore_points(self, before: dict[str, HookPoint]) -> None:
        for name, previous in before.items():
            current = self.hook_dict.get(name)
            if current is not previous:
                if isinstance(current, SAEHookPoint):
                    current.release()
                self._put_point(name, previous)
        self.setup()


@contextmanager
def _hooks_off(points: Any) -> Iterator[None]:
    """Switch the forward hooks of ``points`` off inside the block (they are put back after)."""
    points = list(points)
    saved = [(p._forward_pre_hooks, p._forward_hooks) for p in points]
    try:
        for p in points:
            p._forward_pre_hooks, p._forward_hooks = type(p._forward_pre_hooks)(), type(p._forward_hooks)()
        yield
    finally:
        for p, (pre, post) in zip(points, saved):
            p._forward_pre_hooks, p._forward_hooks = pre, post


def _d_in(sae: SAELike) -> int | None:
    d_in = getattr(sae.cfg, "d_in", None)
    if d_in is None and getattr(sae, "W_enc", None) is not None:
        d_in = sae.W_enc.shape[0]
    return d_in


def _flattens_heads(sae: SAELike) -> bool:
    """Whether the SAE reads ``[..., head, d_head]`` flattened (SAELens's hook_z reshaping)."""
    mode = getattr(sae, "hook_z_reshaping_mode", None)
    return bool(mode) if mode is not None else getattr(sae.cfg, "reshape_activations", "none") == "hook_z"


def _first_parameter(sae: SAELike) -> Tensor | None:
    parameters = getattr(sae, "parameters", None)
    return next(iter(parameters()), None) if parameters is not None else None


def _dtype(sae: SAELike, default: torch.dtype) -> torch.dtype:
    first = _first_parameter(sae)
    return first.dtype if first is not None else default


def _device(sae: SAELike) -> torch.device | None:
    first = _first_parameter(sae)
    return first.device if first is not None else None
