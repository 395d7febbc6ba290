"""Index plans built on the host from a batch's shapes, kept for the next batch of the same shapes.

A tower's indices (the vision tower's windows and patch positions, the Whisper tower's chunks)
depend only on the media's grids or lengths, which a study's clips share: 500 ten-second clips at
one resolution have one vision grid. Building them is Python work of milliseconds per forward on
the host, and a forward whose GPU work is queued behind the host pays it in full. Plans are cached
by a key naming what they depend on (the grids, the lengths, the device), least recently used
first out, built outside inference mode (so a later forward with autograd can save them for its
backward) and never written to after they are built (callers only read them).

Example:
    >>> calls = []
    >>> def build():
    ...     calls.append(1)
    ...     return torch.arange(3)
    >>> a, b = cached_plan(("example", 3), build), cached_plan(("example", 3), build)
    >>> a is b, len(calls)
    (True, 1)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

__all__ = ["MAX_PLANS", "cached_plan", "clear_plans"]

MAX_PLANS = 32  # a plan of a 10-s clip's vision grid holds about 0.5 MB of indices per device
T = TypeVar("T")
_PLANS: OrderedDict[Hashable, object] = OrderedDict()
_LOCK = threading.Lock()  # the towers may run in two host threads (components/tower_overlap.py)


def cached_plan(key: Hashable, build: Callable[[], T]) -> T:
    """The plan cached under ``key``, or ``build()``'s result, cached."""
    with _LOCK:
        if key in _PLANS:
            _PLANS.move_to_end(key)
            return _PLANS[key]  # type: ignore[return-value]
    with torch.inference_mode(False), torch.no_grad():
        plan = build()
    with _LOCK:
        _PLANS[key] = plan
        while len(_PLANS) > MAX_PLANS:
            _PLANS.popitem(last=False)
    return plan


def clear_plans() -> None:
    """Forget every cached plan (they are rebuilt on demand)."""
    with _LOCK:
        _PLANS.clear()
