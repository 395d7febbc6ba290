"""Two independent tower forwards arranged so that the host's launch time of one hides behind the
GPU time of the other.

Why: the audio tower of a 10-s clip (500 positions) launches hundreds of small kernels, so its time
is the host's (15 ms of a 100-ms forward on an H100) while the GPU idles; the vision tower (10,240
patches) keeps the GPU busy for 40 ms with fewer launches, so the host runs ahead of it.

Modes (``HOOKED_AVLLM_TOWER_OVERLAP``):

* ``"queued"`` (the default): the GPU-bound tower is launched first, then the host-bound one, on the
  same stream, from the same thread: its kernels queue behind the first tower's while those run.
  This works because the host-bound tower never waits for the GPU (its indices are computed on the
  host and uploaded without a wait, :mod:`~hooked_avllm.components.upload`).
* ``"thread"``: the host-bound tower in a second host thread on its own CUDA stream.
* ``"serial"``: the host-bound tower first, then the other, as written.

Every mode computes the same kernels on the same values (the CPU test compares the logits; the GPU
test in ``tests/test_gpu_numerics.py`` asks for bit-identity). Only the
plain forward is rearranged: with a hook on either tower, autograd recording, CUDA-graph capture or
a CPU tensor, the towers run in the written order on the calling thread, so hooks fire in the order
they always did and caches keep their key order.

Example:
    >>> import torch
    >>> overlapped(lambda: 1, lambda: 2, torch.device("cpu"))  # on the CPU: in the written order
    (1, 2)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["MODES", "overlapped"]

MODES = ("queued", "thread", "serial")
MODE = os.environ.get("HOOKED_AVLLM_TOWER_OVERLAP", "queued")
A = TypeVar("A")
B = TypeVar("B")


def overlapped(host_bound: Callable[[], A], gpu_bound: Callable[[], B], device: torch.device,
               allowed: Callable[[], bool] = lambda: True, mode: str | None = None, force: bool = False) -> tuple[A, B]:
    """``(host_bound(), gpu_bound())``, launched as ``mode`` says (default: :data:`MODE`, from
    ``HOOKED_AVLLM_TOWER_OVERLAP``) on a CUDA device with no autograd recording, no graph capture,
    and ``allowed()`` True (nothing hooked in the towers, say; asked last, so a forward that cannot
    be rearranged does not pay for the question). Otherwise, and in ``"serial"`` mode, ``host_bound``
    runs first, then ``gpu_bound``, on this thread. ``force`` skips the device and grad conditions
    (the CPU tests of the arrangements; a thread then runs without streams)."""
    mode = MODE if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"tower overlap mode {mode!r} is not one of {MODES} (HOOKED_AVLLM_TOWER_OVERLAP)")
    rearranged = mode != "serial" and (force or (device.type == "cuda" and not torch.is_grad_enabled()
                                                 and not torch.cuda.is_current_stream_capturing() and allowed()))
    if not rearranged:
        one = host_bound()
        return one, gpu_bound()
    if mode == "queued":
        two = gpu_bound()
        return host_bound(), two
    return _threaded(host_bound, gpu_bound, device)


def _threaded(first: Callable[[], A], second: Callable[[], B], device: torch.device) -> tuple[A, B]:
    """``first`` in a second thread (on its own CUDA stream on a GPU) while ``second`` runs here on
    the current stream; the current stream then waits for ``first``'s work, and ``first``'s tensors
    are marked as used by it."""
    main = torch.cuda.current_stream(device) if device.type == "cuda" else None
    side = torch.cuda.Stream(device) if main is not None else None
    if side is not None:
        side.wait_stream(main)  # the inputs made on the current stream are ready for the side one
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run_first() -> A:
        modes = torch.inference_mode() if inference else contextlib.nullcontext()
        with modes, torch.set_grad_enabled(grad):  # grad and inference modes are thread-local
            if side is None:
                return first()
            with torch.cuda.stream(side):
                return first()

    future = _executor().submit(run_first)
    try:
        two = second()
    except BaseException:
        wait([future])  # the side thread finishes before the error goes up (its own error, if any, is dropped)
        raise
    one = future.result()
    if side is not None:
        main.wait_stream(side)
        _record(one, main)
    return one, two


_POOL: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hooked_avllm_tower")
    return _POOL


def _record(obj: Any, stream: Any) -> None:
    """Mark every CUDA tensor in ``obj`` as used on ``stream`` (the allocator then keeps its memory
    until ``stream``'s work is done, though it was allocated on the side stream)."""
    if isinstance(obj, Tensor):
        if obj.is_cuda:
            obj.record_stream(stream)
    elif isinstance(obj, dict):
        for value in obj.values():
            _record(value, stream)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _record(value, stream)
