"""Two independent tower forwards at once on a GPU: the audio tower and the vision tower of an
omni model read different inputs, so one can run on its own CUDA stream (launched from a second
host thread) while the other runs on the current one.

Why: a short audio tower (500 positions) launches hundreds of small kernels, so its time is the
host's launch time (15 ms of a 10-s clip's 100 ms forward on an H100) while the GPU idles; the
vision tower keeps the GPU busy for 40 ms with far fewer launches. Launched side by side, the audio
tower's kernels fill the gaps of the vision tower's.

The towers compute what they compute one after the other, kernel for kernel (tested bit-identical
on a GPU). Only the plain forward goes side by side: with a hook on either tower, autograd
recording, CUDA-graph capture or a CPU tensor, the two run one after the other, in order, on the
calling thread, so hooks fire in the order they always did and caches keep their key order.

Off by default for now: ``HOOKED_AVLLM_SIDE_BY_SIDE=1`` turns it on for a process. It has not yet
run on a GPU (the device time of the session that wrote it ran out); the expected gain is the audio
tower's 15 ms of host time in a 100-ms clip forward.

Example:
    >>> import torch
    >>> side_by_side(lambda: 1, lambda: 2, torch.device("cpu"))  # on the CPU: one after the other
    (1, 2)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from hooked_avllm.components.hook_state import watched

__all__ = ["side_by_side", "towers_unwatched"]

# Off by default until measured on a GPU (it is written and tested on the CPU; the GPU test is
# tests/test_gpu_numerics.py): HOOKED_AVLLM_SIDE_BY_SIDE=1 turns it on for a process.
ENABLED = os.environ.get("HOOKED_AVLLM_SIDE_BY_SIDE", "0") == "1"
A = TypeVar("A")
B = TypeVar("B")


def towers_unwatched(*towers: nn.Module | None) -> bool:
    """Whether nothing inside ``towers`` is watched: no hook point with a hook (nor an attached SAE,
    see :func:`~hooked_avllm.components.hook_state.watched`), no PyTorch forward hook on any module.

    Example:
        >>> towers_unwatched(torch.nn.Linear(2, 2), None)
        True
    """
    for tower in towers:
        if tower is None:
            continue
        for module in tower.modules():
            if module._forward_hooks or module._forward_pre_hooks:
                return False
            if (hasattr(module, "fwd_hooks") or getattr(module, "always_watched", False)) and watched(module):
                return False
    return True


def side_by_side(first: Callable[[], A], second: Callable[[], B], device: torch.device,
                 allowed: Callable[[], bool] = lambda: True, force_thread: bool = False) -> tuple[A, B]:
    """``(first(), second())``. One after the other, in that order, on this thread unless
    ``HOOKED_AVLLM_SIDE_BY_SIDE=1``, on non-CUDA devices, under autograd recording or CUDA-graph
    capture, and when ``allowed()`` is False (hooks on a tower, say; asked last, so a forward that
    cannot go side by side does not pay for the question). Otherwise ``first`` runs in a second
    thread on its own CUDA stream while ``second`` runs here on the current stream; the current
    stream then waits for ``first``'s work, and ``first``'s tensors are marked as used by it. Give
    ``first`` the tower whose time is the host's (many small kernels). ``force_thread`` runs the
    thread without streams (the CPU tests of the threading)."""
    threaded = force_thread or (ENABLED and device.type == "cuda" and not torch.is_grad_enabled()
                                and not torch.cuda.is_current_stream_capturing() and allowed())
    if not threaded:
        one = first()
        return one, second()
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
