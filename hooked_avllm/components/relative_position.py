"""Bucketed relative position bias (T5, bidirectional) and the gated relative-position attention
of WavLM and BEATs.

The bias for a query at ``i`` and a key at ``j`` is a learned per-head scalar looked up at the
bucket of ``j - i``: keys before and after the query get separate halves of the buckets; within a
half, distances below a quarter of the buckets get one bucket each, and larger ones share
log-spaced buckets up to ``max_distance`` (further ones share the last bucket). One embedding
serves every layer; the model computes the bias once per forward.

:class:`GatedRelativePositionAttention` scales that shared bias per head and per query by a gate
read from the query projection (before the 1/sqrt(d_head) scaling), then adds it to the scores:

    gate = a * (b * gate_scale - 1) + 2,   (a, b) = sigmoid(sum of gate_proj(q) over two groups of 4)
    scores = q . k / sqrt(d_head) + gate * bias

so ``gate`` lies between 1 and 1 + gate_scale. Both the bias and the gate have hook points.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.attention import Attention


def relative_position_buckets(
    n_query: int, n_key: int, num_buckets: int, max_distance: int, device=None
) -> Int[Tensor, "query key"]:
    """T5's bidirectional bucket of ``key - query`` for every query/key pair.

    Example:
        >>> relative_position_buckets(1, 10, num_buckets=16, max_distance=32).tolist()  # keys after the query
        [[0, 9, 10, 11, 12, 12, 12, 13, 13, 13]]
        >>> relative_position_buckets(3, 3, num_buckets=16, max_distance=32).tolist()
        [[0, 9, 10], [1, 0, 9], [2, 1, 0]]
    """
    relative = torch.arange(n_key, device=device)[None, :] - torch.arange(n_query, device=device)[:, None]
    half = num_buckets // 2
    exact = half // 2
    buckets = (relative > 0).long() * half  # keys after the query use the upper half
    distance = relative.abs()
    # log-spaced buckets for distances >= exact; float32 as the reference computes it, so that
    # distances on a bucket boundary round the same way
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """Learned per-head bias at the T5 bucket of each query/key offset.

    Example:
        >>> bias = RelativePositionBias(num_buckets=32, max_distance=64, n_heads=4)
        >>> bias(5).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, num_buckets: int, max_distance: int, n_heads: int):
        super().__init__()
        if num_buckets < 4 or max_distance <= num_buckets // 4:
            raise ValueError(
                f"num_buckets={num_buckets} and max_distance={max_distance}: need num_buckets >= 4 and "
                "max_distance > num_buckets / 4 (the exact-distance range)"
            )
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def forward(self, n_query: int, n_key: int | None = None) -> Float[Tensor, "1 head query key"]:
        n_key = n_query if n_key is None else n_key
        buckets = relative_position_buckets(n_query, n_key, self.num_buckets, self.max_distance, self.embedding.weight.device)
        return self.embedding(buckets).permute(2, 0, 1)[None]


class GatedRelativePositionAttention(Attention):
    """Bidirectional self-attention with fused q/k/v (biases everywhere) plus a shared relative
    position bias, gated per head and query when ``gated`` (WavLM, BEATs).

    It adds ``hook_rel_pos_bias`` ([1 or batch, head, query_pos, key_pos], the shared ungated
    bias as this layer receives it) and ``hook_rel_pos_gate`` ([batch, head, query_pos, 1]) to
    :class:`Attention`'s hooks. The gated bias and the padding mask are handed to the attention
    as one additive mask, so ``hook_attn_scores`` includes them.

    Example:
        >>> attn = GatedRelativePositionAttention(d_model=16, n_heads=4)
        >>> bias = RelativePositionBias(32, 64, 4)(5)
        >>> attn(torch.randn(2, 5, 16), rel_pos_bias=bias).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, d_model: int, n_heads: int, gated: bool = True):
        super().__init__(d_model, n_heads, qkv_bias=True, out_bias=True)
        self.gated = gated
        if gated:
            self.gate_proj = nn.Linear(self.d_head, 8)  # two groups of four outputs, each summed
            self.gate_scale = nn.Parameter(torch.ones(n_heads))
        self.hook_rel_pos_bias = HookPoint()  # [1 or batch, head, query_pos, key_pos], ungated
        self.hook_rel_pos_gate = HookPoint()  # [batch, head, query_pos, 1]

    def rel_pos_gate(self, q: Float[Tensor, "batch pos head d_head"]) -> Float[Tensor, "batch head pos 1"]:
        """The per-head, per-query factor on the relative bias, read from the unscaled queries."""
        a, b = torch.sigmoid(self.gate_proj(q).unflatten(-1, (2, 4)).sum(-1)).unbind(-1)  # [batch, pos, head]
        gate = a * (b * self.gate_scale - 1.0) + 2.0
        return gate.transpose(1, 2).contiguous()[..., None]

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        rel_pos_bias: Float[Tensor, "batch_or_1 head pos pos"] | None = None,
        key_padding: Bool[Tensor, "batch pos"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Attend.

        Args:
            rel_pos_bias: the shared bias (``None``: no relative positions).
            key_padding: True for padding keys, which no query sees (a padding query attends to
                the real keys, as in the reference).
        """
        batch, n_pos, _ = x.shape
        q, k, v = self.qkv(x).split(self.split_sizes, dim=-1)
        q = self.hook_q(q.view(batch, n_pos, self.n_heads, self.d_head))
        k = self.hook_k(k.view(batch, n_pos, self.n_kv_heads, self.d_head))
        v = self.hook_v(v.view(batch, n_pos, self.n_kv_heads, self.d_head))
        q, k = self.hook_rot_q(q), self.hook_rot_k(k)  # no rotary: the same tensors

        additive = None
        if rel_pos_bias is not None:
            additive = self.hook_rel_pos_bias(rel_pos_bias)
            if self.gated:
                additive = self.hook_rel_pos_gate(self.rel_pos_gate(q)) * additive
        if key_padding is not None:
            if additive is None:
                additive = x.new_zeros(batch, 1, 1, n_pos)
            additive = additive.masked_fill(key_padding[:, None, None, :], float("-inf"))
        if additive is not None:
            # the fused kernels take a dense row-major mask; another layout sends SDPA to its slow math path
            additive = additive.contiguous()

        z = self._attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, additive, False)
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]
        if self.use_attn_result:
            w_o = self.out.weight.view(-1, self.n_heads, self.d_head)  # [d_model, head, d_head]
            result = self.hook_result(torch.einsum("bphd,mhd->bphm", z, w_o))
            return result.sum(dim=2) + self.out.bias
        return self.out(z.reshape(batch, n_pos, -1))
