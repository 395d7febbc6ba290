"""Caching activations without holding them on the GPU: each cached activation is copied to
(pinned) host memory, in the cache's dtype, as soon as its hook point produces it, so the GPU
holds at most what the forward itself needs. A cache that would not fit where it goes is
announced before it fails.

``run_with_cache(..., device="cpu")`` on a GPU model and ``run_with_cache(..., cache_dtype=...)``
go through here (TransformerLens's own caching keeps every activation on the GPU until the
forward ends when asked for another device, and has no dtype control).

Example:
    >>> import torch
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]), cache_dtype=torch.bfloat16)
    >>> cache["resid_post", 0].dtype
    torch.bfloat16
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor


class CacheSizeWarning(ResourceWarning):
    """A cache on its way to more memory than its device has free."""


def free_bytes(device: torch.device) -> int | None:
    """Memory free on ``device`` (host: MemAvailable of /proc/meminfo), or ``None`` where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class StreamedCache:
    """Forward hooks that copy activations to ``device`` in ``dtype`` as they come.

    After :meth:`finish` (which waits for the copies), ``store`` maps hook names to tensors. While
    the forward runs, the bytes cached so far are extrapolated over the hooks still to come; when
    the estimate passes the free memory of the target device a :class:`CacheSizeWarning` names
    the estimate, what is free, and what to do (once per run).
    """

    def __init__(self, names: list[str], device: torch.device, dtype: torch.dtype | None):
        self.names, self.device, self.dtype = names, device, dtype
        self.store: dict[str, Tensor] = {}
        self.bytes = 0
        self.free = free_bytes(device)
        self.warned = False

    def hooks(self) -> list[tuple[str, Callable]]:
        return [(name, self._save) for name in self.names]

    def _save(self, act: Tensor, hook: Any) -> None:
        t = act.detach()
        if self.dtype is not None and t.is_floating_point():
            t = t.to(self.dtype)
        if t.device != self.device:
            pinned = self.device.type == "cpu" and t.device.type == "cuda"
            out = torch.empty(t.shape, dtype=t.dtype, device=self.device, pin_memory=pinned)
            out.copy_(t, non_blocking=pinned)  # ordered on the stream: the source is not reused before the copy
            t = out
        self.store[hook.name] = t
        self.bytes += t.numel() * t.element_size()
        self._check_size()

    def _check_size(self) -> None:
        if self.warned or self.free is None:
            return
        expected = self.bytes * len(self.names) / max(len(self.store), 1)
        if expected > self.free:
            self.warned = True
            warnings.warn(
                f"this cache is on its way to about {expected / 2**30:.1f} GiB on {self.device} ({len(self.store)} of "
                f"{len(self.names)} hooks cached, {self.bytes / 2**30:.2f} GiB so far), more than the "
                f"{self.free / 2**30:.1f} GiB free there: narrow names_filter=, cache to device='cpu', or pass "
                "cache_dtype=torch.bfloat16", CacheSizeWarning, stacklevel=2)

    def finish(self) -> dict[str, Tensor]:
        if any(t.is_pinned() for t in self.store.values()):
            torch.cuda.synchronize()  # the non-blocking copies have landed
        return self.store


__all__ = ["CacheSizeWarning", "StreamedCache", "free_bytes"]
