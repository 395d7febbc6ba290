"""Fused GPU kernels (Triton) for the two elementwise steps every block runs: rotary and the gated
product of the MLP. Each computes exactly what the reference's separate PyTorch kernels compute,
rounding for rounding, in one pass over memory instead of four or five.

* :func:`rotate` is ``x * cos + rotate_half(x) * sin``: in float32 and cast back (``upcast``, the
  Qwen vision towers' convention: the reference writes three float32 tensors per query and key),
  or in the activations' dtype, each product rounded before the sum as PyTorch rounds it.
* :func:`gated_product` is ``act(gate) * up``: ``gate`` and ``up`` are the two halves of the fused
  gate/up projection (strided views, which PyTorch's elementwise kernels read slowly).

They run only where they are exact and cheap: CUDA tensors that need no gradient, with Triton
installed (it ships with CUDA builds of PyTorch). Everywhere else (CPU, autograd, unsupported
activations) the same functions fall back to the PyTorch expressions, so the hooks, the CPU tests
and gradients see the reference's formula. No floating-point contraction (``enable_fp_fusion=False``)
and correctly rounded ``exp`` and division keep the kernels bit-identical to PyTorch's
(``tests/test_gpu_numerics.py`` checks it on a GPU; ``tests/test_fused_kernels.py`` runs the kernels
on the CPU through Triton's interpreter).

Example:
    >>> import torch
    >>> x, cos, signed_sin = torch.randn(1, 3, 2, 8), torch.rand(1, 3, 1, 8), torch.rand(1, 3, 1, 8)
    >>> rotate(x, cos, signed_sin).shape
    torch.Size([1, 3, 2, 8])
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

ENABLED = os.environ.get("HOOKED_AVLLM_FUSED", "1") != "0"  # HOOKED_AVLLM_FUSED=0: PyTorch kernels only
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (the CPU tests of the kernels)
_GATED_ACTIVATIONS = ("silu",)
_kernels = None  # hooked_avllm.components.fused_triton once imported (False: Triton is not installed)


@contextlib.contextmanager
def pytorch_kernels_only() -> Iterator[None]:
    """Inside this block the fused kernels are off and every step runs PyTorch's own kernels (for
    comparisons; ``HOOKED_AVLLM_FUSED=0`` turns them off for a whole process).

    Example:
        >>> with pytorch_kernels_only():
        ...     enabled()
        False
    """
    global ENABLED
    previous, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = previous


def enabled() -> bool:
    """Whether the fused kernels may run (they still run only on GPU tensors that need no gradient)."""
    return ENABLED


def kernels():
    """The Triton kernels module, imported on first use (``None`` without Triton)."""
    global _kernels
    if _kernels is None:
        try:
            from hooked_avllm.components import fused_triton
            _kernels = fused_triton
        except ImportError:  # Triton ships with CUDA builds of PyTorch; CPU builds have none
            _kernels = False
    return _kernels or None


def _give_up(error: Exception) -> None:
    """Turn the fused kernels off for this process after a kernel failed to compile or launch (an
    installed Triton too old or too new for them), with a warning that says so; PyTorch's kernels
    compute the same values."""
    global ENABLED
    ENABLED = False
    warnings.warn(f"hooked_avllm's fused GPU kernels are off for this process: Triton failed with {error!r}. "
                  "Results are unchanged (PyTorch's kernels compute the same values), forwards are slower. "
                  "Set HOOKED_AVLLM_FUSED=0 to skip them silently.", RuntimeWarning, stacklevel=3)


def _usable(*tensors: Tensor) -> bool:
    """Whether the Triton path applies: CUDA tensors (CPU ones under the interpreter), no gradient to
    record, Triton installed."""
    if not ENABLED or not all(t.is_cuda or INTERPRET for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return kernels() is not None


def swap_halves(x: Tensor) -> Tensor:
    """``cat(x2, x1)`` of the halves of the last axis: the reference's ``rotate_half`` (``cat(-x2, x1)``)
    without the sign, which the callers keep on the sine."""
    half = x.shape[-1] // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)


def rotate(
    x: Float[Tensor, "batch pos head d_head"],
    cos: Float[Tensor, "batch_or_1 pos 1 d_head"],
    signed_sin: Float[Tensor, "batch_or_1 pos 1 d_head"],
    upcast: bool = False,
) -> Float[Tensor, "batch pos head d_head"]:
    """``x * cos + rotate_half(x) * sin``, with the sign of ``rotate_half`` kept on the sine
    (``signed_sin`` is the sine with its first half negated, so the second term is
    ``swap_halves(x) * signed_sin``: exact).

    ``upcast``: rotate in float32 (angles float32) and cast back to ``x``'s dtype (float64 is
    rotated in float32 too, as the reference does); otherwise the angles are in ``x``'s dtype and
    every product is rounded to it before the sum, as PyTorch's separate kernels round.
    """
    if _usable(x, cos, signed_sin) and x.stride(-1) == 1 and x.shape[-1] % 2 == 0 and x.dtype != torch.float64:
        try:
            return kernels().rotate(x, cos, signed_sin, upcast)
        except Exception as error:  # noqa: BLE001 - a Triton that cannot compile the kernel: PyTorch's path, said once
            _give_up(error)
    if upcast:
        x32 = x.float() if x.dtype == torch.float64 else x  # bf16/fp16/fp32 promote in the products
        return (x32 * cos + swap_halves(x32) * signed_sin).to(x.dtype)
    return x * cos + swap_halves(x) * signed_sin


def gated_product(act_name: str, act, gate: Tensor, up: Tensor, width: int | None = None) -> Tensor:
    """``act(gate) * up`` (the gated MLP's ``hook_post``): one kernel for ``silu`` on the GPU, the
    activation then the product (each rounded to the activations' dtype) everywhere else.

    ``width``: the kernel may return the product zero-padded to this many columns (see
    :func:`aligned_width`); the caller checks the returned width, the fallback never pads.
    """
    if (act_name in _GATED_ACTIVATIONS and _usable(gate, up) and gate.shape == up.shape and gate.dtype == up.dtype
            and gate.dtype != torch.float64 and gate.stride(-1) == 1 and up.stride(-1) == 1):
        try:
            return kernels().silu_product(gate, up, width)
        except Exception as error:  # noqa: BLE001
            _give_up(error)
    return act(gate) * up


ALIGN = 8  # elements: cuBLAS's fast GEMM kernels need 16-byte aligned rows (8 bf16/fp16 values)
MIN_ROWS_TO_PAD = 256  # below this a GEMM reads its weight more than it computes: padding the weight costs more


def aligned_width(inner: Tensor) -> int | None:
    """The inner width rounded up to :data:`ALIGN` when a down projection of ``inner`` [..., width]
    should run on padded operands: a half-precision GPU activation with enough rows, no gradient,
    a width that is not aligned (the Qwen vision towers' 3,420, whose rows cuBLAS can only read
    with its slow 4-byte-aligned kernels). ``None`` otherwise.

    Example:
        >>> aligned_width(torch.zeros(300, 3420)) is None  # a CPU tensor
        True
    """
    width = inner.shape[-1]
    if width % ALIGN == 0 or inner.dtype not in (torch.bfloat16, torch.float16) or not _usable(inner):
        return None
    if inner.numel() // width < MIN_ROWS_TO_PAD:
        return None
    return -(-width // ALIGN) * ALIGN


def padded_linear(padded: Tensor, linear: torch.nn.Linear) -> Tensor:
    """``linear`` applied to the first ``in_features`` columns of ``padded`` (whose extra columns
    are zero), with the weight zero-padded for the call: the same sum on cuBLAS's aligned kernels.
    The weight is padded per call (a copy of the weight, small beside the GEMM), never cached, so
    edits of the weight always count."""
    weight = F.pad(linear.weight, (0, padded.shape[-1] - linear.weight.shape[-1]))
    return F.linear(padded, weight, linear.bias)
