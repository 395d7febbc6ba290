"""Whether anyone is watching a hook point: the one rule every "compute it only when watched"
path uses (explicit attention patterns, norm scales).

A hook point is watched when a forward *or* a backward hook is attached to it: a backward hook
on ``hook_pattern`` needs the pattern to exist in the graph just as a forward hook does.

Example:
    >>> from transformer_lens.hook_points import HookPoint
    >>> point = HookPoint()
    >>> watched(point)
    False
    >>> handle = point.add_hook(lambda grad, hook: None, dir="bwd")
    >>> watched(point)
    True
"""

from __future__ import annotations

from torch import nn


def watched(point: nn.Module) -> bool:
    """True when ``point`` has a forward or backward hook; a point that transforms its activation
    (an attached SAE's, ``always_watched``) or a module that replaced a hook point counts as
    watched, since it must be called."""
    if getattr(point, "always_watched", False):
        return True
    forward, backward = getattr(point, "fwd_hooks", None), getattr(point, "bwd_hooks", None)
    if forward is None and backward is None:
        return True
    return bool(forward) or bool(backward)


def towers_unwatched(*towers: nn.Module | None) -> bool:
    """Whether nothing inside ``towers`` is watched: no hook point with a hook (nor an attached SAE,
    see :func:`~hooked_avllm.components.hook_state.watched`), no PyTorch forward hook on any module.

    Asked on every plain forward (about 2,000 modules in Qwen2.5-Omni's towers), so it reads the
    modules' own dictionaries and walks ``_modules`` itself: a missing attribute looked up through
    ``nn.Module.__getattr__`` costs microseconds, and ``modules()`` builds every module's name; the
    first version of this check took 17 ms of host time per forward on a CPU core.

    Example:
        >>> import torch
        >>> towers_unwatched(torch.nn.Linear(2, 2), None)
        True
    """
    stack = list(towers)
    while stack:  # every module below the towers, without the names nn.Module.modules() builds
        module = stack.pop()
        if module is None:
            continue
        own = module.__dict__
        stack.extend(own["_modules"].values())
        if own["_forward_hooks"] or own["_forward_pre_hooks"]:
            return False
        if own.get("fwd_hooks") or own.get("bwd_hooks"):  # a hook point with a hook
            return False
        if own.get("always_watched", False) or getattr(type(module), "always_watched", False):
            return False  # an SAE's point, or a module that replaced a hook point
    return True
