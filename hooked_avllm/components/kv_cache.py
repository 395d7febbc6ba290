"""Key/value caches of one attention layer for decoding: a growing one, and a preallocated (static)
one whose buffers a CUDA graph can capture.

:class:`LayerKVCache` concatenates each step's keys and values (a new tensor every step).
:class:`StaticKVCache` writes them into buffers of a fixed length allocated once, so memory does
not grow with the generation. Eagerly it returns views up to the written length, so attention
costs what it did with the growing cache. In captured decoding (``position`` is a tensor on the
device) it writes at ``position`` and returns the whole buffers with an additive key mask
(``static_mask``: 0 for written, real keys, ``-inf`` elsewhere), so one recorded step serves every
position.

Example:
    >>> cache = StaticKVCache.allocate(batch=1, n_kv_heads=2, length=8, d_head=4, dtype=torch.float32, device="cpu")
    >>> k, v = cache.append(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> cache.length, tuple(k.shape)
    (3, (1, 2, 3, 4))
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


class LayerKVCache:
    """Keys (after rotary) and values of one layer, grown by each decoding step."""

    static_mask = None  # decoding through the whole buffer is StaticKVCache's

    def __init__(self):
        self.k: Tensor | None = None  # [batch, kv_head, pos, d_head]
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat((self.k, k), dim=2)
            self.v = torch.cat((self.v, v), dim=2)
        return self.k, self.v


class StaticKVCache:
    """Preallocated keys and values ``[batch, kv_head, capacity, d_head]`` of one layer.

    Eager use (``position is None``): :meth:`append` writes after the ``length`` positions written
    so far and returns views of the written part. Captured use (:meth:`capture_at`): every layer
    shares one device tensor ``position`` ``[1]`` and one additive key mask ``[batch, 1, 1,
    capacity]``; :meth:`append` writes the one new position there and returns the whole buffers,
    and attention adds ``static_mask``.
    """

    def __init__(self, k: Float[Tensor, "batch kv_head capacity d_head"], v: Float[Tensor, "batch kv_head capacity d_head"]):
        self.k, self.v = k, v
        self.length = 0  # positions written (eager use)
        self.position: Int[Tensor, " one"] | None = None  # where the next step writes (captured use)
        self.static_mask: Float[Tensor, "batch one one capacity"] | None = None

    @classmethod
    def allocate(cls, batch: int, n_kv_heads: int, length: int, d_head: int, dtype: torch.dtype,
                 device: torch.device | str) -> "StaticKVCache":
        """Zeroed buffers of ``length`` positions."""
        shape = (batch, n_kv_heads, length, d_head)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        """Forget what was written (the buffers are reused as they are: unwritten keys are masked)."""
        self.length, self.position, self.static_mask = 0, None, None

    def capture_at(self, position: Int[Tensor, " one"], key_mask: Float[Tensor, "batch one one capacity"]) -> None:
        """Switch to captured use: write at ``position`` (a device tensor the caller advances) and
        attend through ``key_mask``."""
        self.position, self.static_mask = position, key_mask

    def append(self, k: Float[Tensor, "batch kv_head new d_head"], v: Float[Tensor, "batch kv_head new d_head"]
               ) -> tuple[Tensor, Tensor]:
        if self.position is not None:  # captured: one new position, wherever ``position`` says
            self.k.index_copy_(2, self.position, k)
            self.v.index_copy_(2, self.position, v)
            return self.k, self.v
        n = k.shape[2]
        if self.length + n > self.capacity:
            raise RuntimeError(f"the static KV cache holds {self.capacity} positions; {self.length} written + {n} new "
                               "do not fit (allocate it for the prompt plus max_new_tokens)")
        self.k[:, :, self.length : self.length + n] = k
        self.v[:, :, self.length : self.length + n] = v
        self.length += n
        if self.length == n:
            return k, v  # the prefill attends within its own keys, as without a cache
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


__all__ = ["LayerKVCache", "StaticKVCache"]
