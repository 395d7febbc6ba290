"""Host tensors to a GPU without stopping the host.

``tensor.to("cuda")`` from ordinary (pageable) host memory waits until the GPU has finished all the
work queued before it. A forward that builds small index tensors on the host while the GPU still
runs an earlier tower would lose the overlap at every such copy. :func:`upload` copies through
page-locked memory on the current stream instead: the host goes on at once, the GPU reads the data
in stream order (PyTorch's pinned-memory allocator keeps the staging block until the copy is done).

Example:
    >>> upload(torch.arange(3), torch.device("cpu")).tolist()  # another device than CUDA: a plain .to
    [0, 1, 2]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["upload"]


def upload(tensor: Tensor, device: torch.device | str | None) -> Tensor:
    """``tensor`` on ``device``; a CPU tensor bound for a CUDA device is copied without a host wait."""
    if device is None:
        return tensor
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu" or torch.cuda.is_current_stream_capturing():
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
