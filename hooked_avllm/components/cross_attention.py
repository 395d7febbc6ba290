"""Multi-head cross-attention: a set of queries attends over a separate key/value sequence.

The projections are ``nn.MultiheadAttention``'s: one fused ``[3 * d, d]`` weight (rows: q, k, v)
and bias, applied to three different inputs. ``key`` and ``value`` are separate arguments because
a perceiver resampler adds a position embedding to the keys' input only.

Like :class:`~hooked_avllm.components.attention.Attention`, the fast path calls
``scaled_dot_product_attention``; the explicit pattern is computed only when a forward or backward
hook watches ``hook_attn_scores`` / ``hook_pattern`` (or ``force_explicit`` is set). Padding keys
(``key_valid`` False) get probability 0 on both paths; the explicit softmax runs in float32 (float64
stays float64) and is cast back, as the fused kernels do internally.

Example:
    >>> attn = CrossAttention(d_model=16, n_heads=4)
    >>> queries, keys = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    >>> valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    >>> attn(queries, keys, keys, key_valid=valid).shape
    torch.Size([2, 3, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.hook_state import watched


class CrossAttention(nn.Module):
    """Queries ``[batch, query_pos, d_model]`` attend over keys/values ``[batch, key_pos, d_model]``.

    Args:
        d_model: width of queries, keys, values and the output.
        n_heads: attention heads.
        d_head: width of one head (default ``d_model // n_heads``).
        qkv_bias: whether the fused input projection ``qkv`` has a bias.
        out_bias: whether the output projection ``out`` has a bias.

    Hooks: ``hook_q`` ([batch, query_pos, head, d_head]), ``hook_k`` / ``hook_v`` ([batch, key_pos,
    head, d_head]), ``hook_attn_scores`` / ``hook_pattern`` ([batch, head, query_pos, key_pos];
    padding keys hold -inf / 0), ``hook_z`` ([batch, query_pos, head, d_head]) and, only with
    ``use_attn_result``, ``hook_result`` ([batch, query_pos, head, d_model]).

    Example:
        >>> attn = CrossAttention(8, 2)
        >>> seen = []
        >>> handle = attn.hook_pattern.add_hook(lambda act, hook: seen.append(act.shape))
        >>> attn(torch.randn(1, 4, 8), torch.randn(1, 6, 8), torch.randn(1, 6, 8)).shape, seen
        (torch.Size([1, 4, 8]), [torch.Size([1, 2, 4, 6])])
    """

    def __init__(
        self, d_model: int, n_heads: int, d_head: int | None = None, qkv_bias: bool = True, out_bias: bool = True
    ):
        super().__init__()
        self.d_head = d_head or d_model // n_heads
        if self.d_head <= 0 or (d_head is None and d_model % n_heads):
            raise ValueError(
                f"CrossAttention d_model={d_model} must be a multiple of n_heads={n_heads} (or pass d_head)"
            )
        self.n_heads = n_heads
        self.d_inner = n_heads * self.d_head
        self.scale = self.d_head**-0.5
        self.force_explicit = False  # compute the explicit pattern even without hooks
        self.use_attn_result = False  # fire hook_result (per-head outputs; costs memory)
        # rows: q, k, v, as nn.MultiheadAttention's in_proj_weight / in_proj_bias
        self.qkv = nn.Linear(d_model, 3 * self.d_inner, bias=qkv_bias)
        self.out = nn.Linear(self.d_inner, d_model, bias=out_bias)

        self.hook_q = HookPoint()  # [batch, query_pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, key_pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, key_pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], scaled; padding keys -inf
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]; padding keys 0
        self.hook_z = HookPoint()  # [batch, query_pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, query_pos, head, d_model], only with use_attn_result

    # TransformerLens-shaped views of the weights
    def _rows(self, part: int) -> Tensor:
        return self.qkv.weight[part * self.d_inner : (part + 1) * self.d_inner]

    def _bias(self, part: int) -> Tensor:
        if self.qkv.bias is None:
            return self.qkv.weight.new_zeros(self.d_inner)
        return self.qkv.bias[part * self.d_inner : (part + 1) * self.d_inner]

    @property
    def W_Q(self) -> Float[Tensor, "head d_model d_head"]:
        return self._rows(0).view(self.n_heads, self.d_head, -1).transpose(1, 2)

    @property
    def W_K(self) -> Float[Tensor, "head d_model d_head"]:
        return self._rows(1).view(self.n_heads, self.d_head, -1).transpose(1, 2)

    @property
    def W_V(self) -> Float[Tensor, "head d_model d_head"]:
        return self._rows(2).view(self.n_heads, self.d_head, -1).transpose(1, 2)

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        return self.out.weight.T.reshape(self.n_heads, self.d_head, -1)

    @property
    def b_Q(self) -> Float[Tensor, "head d_head"]:
        return self._bias(0).view(self.n_heads, self.d_head)

    @property
    def b_K(self) -> Float[Tensor, "head d_head"]:
        return self._bias(1).view(self.n_heads, self.d_head)

    @property
    def b_V(self) -> Float[Tensor, "head d_head"]:
        return self._bias(2).view(self.n_heads, self.d_head)

    @property
    def b_O(self) -> Float[Tensor, "d_model"]:
        w = self.out.weight
        return self.out.bias if self.out.bias is not None else w.new_zeros(w.shape[0])

    @property
    def watched(self) -> bool:
        """Whether the explicit pattern is computed (a hook on ``hook_attn_scores``/``hook_pattern``,
        forward or backward, or ``force_explicit``)."""
        return bool(self.force_explicit or watched(self.hook_attn_scores) or watched(self.hook_pattern))

    def _project(self, x: Tensor, part: int) -> Tensor:
        bias = None if self.qkv.bias is None else self._bias(part)
        return F.linear(x, self._rows(part), bias).unflatten(-1, (self.n_heads, self.d_head))

    def forward(
        self,
        query: Float[Tensor, "batch query_pos d_model"],
        key: Float[Tensor, "batch key_pos d_model"],
        value: Float[Tensor, "batch key_pos d_model"],
        key_valid: Bool[Tensor, "batch key_pos"] | None = None,
    ) -> Float[Tensor, "batch query_pos d_model"]:
        """Attend from ``query`` over ``key``/``value``; ``key_valid`` is False for padding keys
        (every batch row needs at least one valid key)."""
        if key.shape[:2] != value.shape[:2] or query.shape[0] != key.shape[0]:
            raise ValueError(
                "CrossAttention needs query [batch, query_pos, d], key and value [batch, key_pos, d] with one batch; "
                f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        mask = None
        if key_valid is not None:
            if tuple(key_valid.shape) != tuple(key.shape[:2]) or key_valid.dtype != torch.bool:
                raise ValueError(
                    f"key_valid must be a bool tensor [batch, key_pos] = {tuple(key.shape[:2])}; got "
                    f"{key_valid.dtype} {tuple(key_valid.shape)}"
                )
            if not bool(key_valid.any(-1).all()):
                empty = (~key_valid.any(-1)).nonzero().flatten().tolist()
                raise ValueError(
                    f"key_valid leaves batch rows {empty} without any valid key; each row needs at least one"
                )
            if not bool(key_valid.all()):
                mask = key_valid[:, None, None, :]  # [batch, 1, 1, key_pos]
        q = self.hook_q(self._project(query, 0))
        k = self.hook_k(self._project(key, 1))
        v = self.hook_v(self._project(value, 2))
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [batch, head, pos, d_head]
        if self.watched:
            scores = torch.matmul(qh, kh.transpose(-1, -2)) * self.scale
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            scores = self.hook_attn_scores(scores)
            softmax_dtype = torch.promote_types(scores.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
            pattern = self.hook_pattern(F.softmax(scores, dim=-1, dtype=softmax_dtype).to(qh.dtype))
            z = torch.matmul(pattern, vh)
        else:
            z = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=self.scale)
        z = self.hook_z(z.transpose(1, 2))  # [batch, query_pos, head, d_head]
        batch, n_query = z.shape[:2]
        if self.use_attn_result:
            w_o = self.out.weight.view(-1, self.n_heads, self.d_head)  # [d_model, head, d_head]
            result = self.hook_result(torch.einsum("bqhd,mhd->bqhm", z, w_o))
            out = result.sum(dim=2)
            return out + self.out.bias if self.out.bias is not None else out
        return self.out(z.reshape(batch, n_query, self.d_inner))
