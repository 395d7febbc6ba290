"""The LLaVA-style MLP projector: ``Linear -> (act -> Linear) x (depth - 1)``.

VideoLLaMA2 builds its audio projector (``mm_projector_a``, ``mlp2x_gelu``: 768 -> 3584 -> 3584)
and the STC connector's readout this way, as an ``nn.Sequential`` whose Linear layers sit at the
even indices 0, 2, 4, ...; here they are ``linears.0``, ``linears.1``, ...
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.mlp import activation


class MLPProjector(nn.Module):
    """``depth`` Linear layers (``d_in -> d_out``, then ``d_out -> d_out``) with ``act`` between them.

    Hooks: ``hook_pre.{i}`` ([..., d_out], output of ``linears.{i}`` before the activation) and
    ``hook_post.{i}`` ([..., d_out], after it) for ``i < depth - 1``; ``hook_out`` ([..., d_out]).

    Example:
        >>> import torch
        >>> proj = MLPProjector(768, 64, depth=2)
        >>> proj(torch.randn(1, 5, 768)).shape
        torch.Size([1, 5, 64])
        >>> [name for name, _ in proj.named_modules() if "hook" in name]
        ['hook_pre', 'hook_pre.0', 'hook_post', 'hook_post.0', 'hook_out']
    """

    def __init__(self, d_in: int, d_out: int, depth: int = 2, act: str = "gelu"):
        super().__init__()
        if depth < 1:
            raise ValueError(f"an MLP projector needs depth >= 1 Linear layers; got depth={depth}")
        self.depth = depth
        self.act = activation(act)  # "gelu" is exact (erf) GELU, as torch's nn.GELU()
        self.linears = nn.ModuleList([nn.Linear(d_in, d_out)] + [nn.Linear(d_out, d_out) for _ in range(depth - 1)])
        self.hook_pre = nn.ModuleList(HookPoint() for _ in range(depth - 1))  # [..., d_out]: before act
        self.hook_post = nn.ModuleList(HookPoint() for _ in range(depth - 1))  # [..., d_out]: after act
        self.hook_out = HookPoint()  # [..., d_out]

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        x = self.linears[0](x)
        for pre, post, linear in zip(self.hook_pre, self.hook_post, self.linears[1:]):
            x = linear(post(self.act(pre(x))))
        return self.hook_out(x)
