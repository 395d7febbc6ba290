"""Hook names and hook results checked where they meet the model: an unknown hook name raises an
:class:`UnknownHookName` (a ``KeyError``) that suggests the closest names, and a hook whose return
value does not have the shape, dtype and device of the activation it replaces raises a
:class:`HookResultError` naming the hook, instead of broadcasting silently or failing deep inside
a later layer.

The check wraps each forward hook as it is added (``add_hook``): a hook point without hooks runs
exactly as TransformerLens's, and a hook that returns ``None`` (a caching hook) costs one comparison.

Example:
    >>> from transformer_lens.hook_points import HookPoint
    >>> error = unknown_hook_name("blocks.0.hook_resid_pots", ["blocks.0.hook_resid_post", "hook_embed"])
    >>> isinstance(error, KeyError), str(error)
    (True, "the model has no hook point 'blocks.0.hook_resid_pots'; did you mean 'blocks.0.hook_resid_post'? (model.hook_dict lists them all)")
    >>> point = checked_point(HookPoint())
    >>> point.name = "blocks.0.hook_resid_post"
    >>> handle = point.add_hook(lambda act, hook: act[:, :1])  # [batch, 1, d] for [batch, pos, d]
    >>> try:
    ...     point(torch.zeros(1, 4, 8))
    ... except HookResultError as error:
    ...     print(str(error)[:89])
    a hook on blocks.0.hook_resid_post returned a tensor of shape (1, 1, 8) float32 where the
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import torch  # noqa: F401 - the module example uses it
from torch import Tensor
from transformer_lens.hook_points import HookPoint


class UnknownHookName(KeyError):
    """A hook name the model (or a cache) does not have; the message suggests the closest ones.
    A ``KeyError`` whose ``str`` is the plain message (not the quoted key)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class HookResultError(ValueError):
    """A hook returned something that cannot replace the activation it was given."""


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (difflib), best first.

    Example:
        >>> close_names("audio", ["text", "audio", "video"])
        ['audio']
    """
    return difflib.get_close_matches(str(name), list(known), n=n, cutoff=0.6)


def suggestion(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'x' or 'y'?"`` for the known names closest to ``name``, else a few examples.

    Example:
        >>> suggestion("vidoe", ["text", "audio", "video"])
        "did you mean 'video'?"
    """
    known = list(known)
    close = close_names(name, known)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"e.g. {known[:3]}" if known else "there are none"


def unknown_hook_name(name: Any, known: Iterable[str], where: str = "the model has no hook point",
                      listing: str = "model.hook_dict lists them all") -> UnknownHookName:
    """The error for an unknown hook ``name``: what is missing, the closest known names, where to look."""
    known = list(known)
    return UnknownHookName(f"{where} {name!r}; {suggestion(str(name), known)} ({listing}{_layers_note(name, known)})")


def _layers_note(name: Any, known: list[str]) -> str:
    """``"; blocks 0-1 exist"`` when ``name`` is a block hook of a layer the known names lack."""
    parts = str(name).split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].lstrip("-").isdigit():
        return ""
    layers = sorted({int(n.split(".")[1]) for n in known if n.startswith("blocks.") and n.split(".")[1].isdigit()})
    if not layers or int(parts[1]) in layers:
        return ""
    return f"; the model has {len(layers)} blocks, {layers[0]}-{layers[-1]}"


def check_hook_names(names: Iterable[Any], hook_dict: dict[str, Any], modules: dict[str, Any] | None = None) -> None:
    """Raise :class:`UnknownHookName` for the first string in ``names`` that is no hook point of
    ``hook_dict`` (callables, TransformerLens's name filters, pass). A module that is not a hook
    point (``blocks.0.attn``) is named as such, with the hook points under it."""
    for name in names:
        if not isinstance(name, str) or name in hook_dict:
            continue
        if modules is not None and name in modules:
            under = sorted((n for n in hook_dict if n.startswith(name + ".")), key=lambda n: n.count("."))  # its own first
            raise UnknownHookName(
                f"{name!r} is a module, not a hook point; hook its hook points instead, e.g. {under[:4]} "
                "(model.hook_dict lists them all)"
            )
        raise unknown_hook_name(name, hook_dict)


def check_names_filter(names_filter: Any, hook_dict: dict[str, Any]) -> None:
    """A ``names_filter`` given as a name or a list of names must name hook points (a misspelt
    name would silently cache nothing); a callable filter is the caller's to get right."""
    if isinstance(names_filter, str):
        check_hook_names([names_filter], hook_dict)
    elif isinstance(names_filter, (list, tuple, set, frozenset)):
        bad = [n for n in names_filter if not isinstance(n, str)]
        if bad:
            raise TypeError(f"names_filter must list hook names (strings); got {bad[0]!r} ({type(bad[0]).__name__})")
        check_hook_names(names_filter, hook_dict)
    elif names_filter is not None and not callable(names_filter):
        raise TypeError(
            f"names_filter must be a hook name, a list of hook names or a function of the name; got {type(names_filter).__name__}"
        )


def _describe(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def check_hook_result(name: str | None, given: Tensor, returned: Any) -> None:
    """Raise :class:`HookResultError` unless ``returned`` can stand for ``given`` (same shape,
    dtype and device); named by the hook point ``name``."""
    where = f"a hook on {name or 'an unnamed hook point'}"
    if not isinstance(returned, Tensor):
        raise HookResultError(
            f"{where} returned a {type(returned).__name__}; a hook returns a tensor of the activation's shape "
            f"{_describe(given)} or None to keep it"
        )
    if returned.shape != given.shape or returned.dtype != given.dtype:
        raise HookResultError(
            f"{where} returned a tensor of shape {_describe(returned)} where the activation it replaces is "
            f"{_describe(given)}; return a tensor of the activation's shape, dtype and device (or None to keep it)"
        )
    if returned.device != given.device:
        raise HookResultError(
            f"{where} returned a tensor on {returned.device} where the activation it replaces is on {given.device}; "
            "return it on the activation's device"
        )


class CheckedHookPoint(HookPoint):
    """A TransformerLens ``HookPoint`` whose forward hooks' results are checked against the
    activation they replace (:func:`check_hook_result`). The check wraps each hook as it is added,
    so an unwatched point costs nothing more than TransformerLens's own."""

    def add_hook(self, hook: Any, dir: str = "fwd", *args: Any, **kwargs: Any) -> Any:  # noqa: A002 - TL's name
        graph_safe = bool(getattr(hook, "graph_safe", False))
        graph_key = getattr(hook, "graph_key", None)  # what a graph-safe hook records: captured steps with equal keys share a graph
        if dir == "fwd":
            hook = _checked_hook(hook, self)
        before = {id(h) for h in self.fwd_hooks}
        handle = super().add_hook(hook, dir, *args, **kwargs)
        for added in self.fwd_hooks:  # TransformerLens 3.x returns no handle: find the new one
            if id(added) not in before:
                added.graph_safe = graph_safe
                added.graph_key = graph_key
        return handle


def graph_safe_hooks_only(point: Any) -> bool:
    """Whether every hook on ``point`` is a forward hook marked ``graph_safe`` (pure tensor work
    on the step's static buffers, which a captured decoding step may record and replay)."""
    forward, backward = getattr(point, "fwd_hooks", None), getattr(point, "bwd_hooks", None)
    if forward is None or backward:
        return False
    return all(getattr(h, "graph_safe", False) for h in forward)


def _checked_hook(hook: Any, point: HookPoint) -> Any:
    """``hook`` whose returned tensor (when it returns one) must match the activation it was given."""

    def checked(activation: Any, hook: Any = point) -> Any:
        out = original(activation, hook=hook)
        if out is not None and out is not activation and isinstance(activation, Tensor):
            check_hook_result(point.name, activation, out)
        return out

    original = hook
    checked.__name__ = getattr(hook, "__name__", repr(hook))  # TransformerLens names hooks by their function
    checked.__wrapped__ = hook  # type: ignore[attr-defined]
    return checked


def checked_point(point: HookPoint) -> HookPoint:
    """Turn a plain ``HookPoint`` into a :class:`CheckedHookPoint` in place (hooks attached stay);
    any other module is returned as it is (an SAE's point transforms its activation on purpose)."""
    if type(point) is HookPoint:
        point.__class__ = CheckedHookPoint
    return point


def check_hook_results(hook_dict: dict[str, HookPoint]) -> None:
    """Check the results of every plain hook point of a model; points nested under another hook
    point (an attached SAE's own) belong to that point's owner and are left as they are."""
    for name, point in hook_dict.items():
        if name.rpartition(".")[0] not in hook_dict:
            checked_point(point)


__all__ = ["CheckedHookPoint", "graph_safe_hooks_only", "HookResultError", "UnknownHookName", "check_hook_names", "check_hook_result",
           "check_hook_results", "check_names_filter", "checked_point", "close_names", "suggestion", "unknown_hook_name"]
