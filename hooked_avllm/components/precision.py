"""Numerical precision switches shared by every tower: float32 convolutions without TF32.

Example:
    >>> import torch
    >>> with exact_float32_convolutions(torch.float32):
    ...     y = torch.nn.functional.conv1d(torch.ones(1, 1, 4), torch.ones(1, 1, 2))
    >>> y.tolist()
    [[[2.0, 2.0, 2.0]]]
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def exact_float32_convolutions(dtype: torch.dtype) -> Iterator[None]:
    """cuDNN runs float32 convolutions in TF32 by default (~1e-3 relative error on GPU); inside this
    block float32 convolutions are exact float32 (other dtypes are left alone)."""
    if dtype != torch.float32 or not torch.backends.cudnn.is_available():
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        previous, conv.fp32_precision = conv.fp32_precision, "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = previous
        return
    previous, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous
