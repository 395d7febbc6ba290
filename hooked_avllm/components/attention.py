"""Multi-head attention with grouped KV heads, optional biases, pluggable rotary and full hooks.

Two paths compute the same thing:

* the fast path calls ``scaled_dot_product_attention`` (flash / memory-efficient kernels);
* the explicit path materialises scores and pattern, and is taken only when a forward or backward
  hook is attached to ``hook_attn_scores`` or ``hook_pattern`` (or ``force_explicit`` is set), so
  watching a layer never changes what the others cost.

Encoders run their whole batch as one packed row ``[1, tokens, d_model]`` and attend block-
diagonally within :class:`AttentionSegments` (Whisper chunks, vision windows, frames). Their
``hook_attn_scores`` / ``hook_pattern`` then have shape ``[segment, head, seg_pos, seg_pos]``
(short segments are padded; padded keys get probability 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.hook_state import watched
from hooked_avllm.components.kv_cache import LayerKVCache, StaticKVCache
from hooked_avllm.components.norms import RMSNorm
from hooked_avllm.components.rotary import Rotary
from hooked_avllm.components.upload import upload


@dataclass
class AttentionSegments:
    """Block-diagonal attention over groups of positions of a packed row.

    ``index[s, i]`` is the position of the i-th member of segment ``s``; ``valid`` marks real
    members when segments have unequal lengths (``None`` when all are full). Every position
    belongs to exactly one segment. ``run_length`` is set when the segments are consecutive runs of
    one length in order (Whisper's 2-s chunks, the vision towers' frames): then ``gather`` and
    ``scatter`` are reshapes, no copies.

    ``members`` (the positions in segment order) and ``valid_rows`` (the real members' rows of the
    flattened ``index``) are index tensors computed where the segments are built, on the host, so
    that ``scatter`` selects with indices and never makes the host wait for the GPU, as a boolean
    mask on a GPU would.

    Example:
        >>> seg = AttentionSegments.from_lengths([3, 2])
        >>> seg.index.tolist(), seg.valid.tolist(), seg.run_length
        ([[0, 1, 2], [3, 4, 0]], [[True, True, True], [True, True, False]], None)
        >>> seg.members.tolist(), seg.valid_rows.tolist()
        ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
        >>> AttentionSegments.from_lengths([2, 2]).run_length
        2
    """

    index: Int[Tensor, "segment seg_pos"]
    valid: Bool[Tensor, "segment seg_pos"] | None = None
    run_length: int | None = None
    members: Int[Tensor, "tokens"] | None = None
    valid_rows: Int[Tensor, "tokens"] | None = None

    def __post_init__(self) -> None:
        if self.members is None:  # on a GPU, where a caller built the segments there, this reads the mask once
            self.members = self.index.flatten() if self.valid is None else self.index[self.valid]
        if self.valid is not None and self.valid_rows is None:
            self.valid_rows = self.valid.flatten().nonzero()[:, 0]

    @classmethod
    def from_groups(cls, groups: list[Tensor], device=None) -> "AttentionSegments":
        """Segments from a list of 1D position-index tensors (one per segment), built on the host
        and uploaded to ``device`` without a host wait."""
        lengths = torch.tensor([len(g) for g in groups])
        longest = int(lengths.max())
        index = torch.zeros(len(groups), longest, dtype=torch.long)
        for s, g in enumerate(groups):
            index[s, : len(g)] = g
        valid = None
        if bool((lengths != longest).any()):
            valid = torch.arange(longest)[None, :] < lengths[:, None]
        run_length = longest if valid is None and torch.equal(index.flatten(), torch.arange(index.numel())) else None
        return cls(index, valid, run_length).to(device)

    @classmethod
    def from_lengths(cls, lengths: list[int], device=None) -> "AttentionSegments":
        """Consecutive segments of the given lengths."""
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        return cls.from_groups([torch.arange(s, s + n) for s, n in zip(starts, lengths)], device)

    def to(self, device=None) -> "AttentionSegments":
        """The segments' tensors on ``device`` (``None``: where they are), uploaded without a host wait."""
        if device is None:
            return self
        moved = [None if t is None else upload(t, device) for t in (self.index, self.valid, self.members, self.valid_rows)]
        return AttentionSegments(moved[0], moved[1], self.run_length, moved[2], moved[3])

    def gather(self, x: Float[Tensor, "1 pos head d"]) -> Float[Tensor, "segment head seg_pos d"]:
        if self.run_length is not None:
            return x[0].unflatten(0, (-1, self.run_length)).transpose(1, 2)
        return x[0, self.index].transpose(1, 2)

    def scatter(self, out: Float[Tensor, "segment head seg_pos d"], n_pos: int) -> Float[Tensor, "1 pos head d"]:
        out = out.transpose(1, 2)  # [segment, seg_pos, head, d]
        if self.run_length is not None:
            return out.reshape(1, n_pos, *out.shape[2:])
        flat = out.reshape(-1, *out.shape[2:])  # [segment * seg_pos, head, d]
        if self.valid_rows is not None:
            flat = flat.index_select(0, self.valid_rows)
        result = flat.new_empty(n_pos, *flat.shape[1:])
        result.index_copy_(0, self.members, flat)
        return result[None]


class Attention(nn.Module):
    """Self-attention: fused q/k/v projection, rotary, SDPA or explicit pattern, output projection.

    Args:
        d_model: residual width.
        n_heads: query heads.
        n_kv_heads: key/value heads (GQA when fewer than ``n_heads``).
        d_head: width of one head.
        qkv_bias: whether the fused projection has a bias (a projection without one in the
            checkpoint gets a zero slice).
        out_bias: whether the output projection has a bias.
        qk_norm_eps: when set, per-head RMSNorm of queries and keys over ``d_head`` (``q_norm``,
            ``k_norm``; Qwen3), applied after the projection and before rotary. As in
            TransformerLens, ``hook_q``/``hook_k`` see the raw projection and the norms' own
            hooks (``q_norm.hook_normalized``...) the normalised one; keys are cached after
            norm and rotary.

    Example:
        >>> attn = Attention(d_model=16, n_heads=4, n_kv_heads=2, d_head=4)
        >>> attn(torch.randn(2, 5, 16), causal=True).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        d_head: int | None = None,
        qkv_bias: bool = True,
        out_bias: bool = False,
        qk_norm_eps: float | None = None,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.d_head = d_head or d_model // n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        self.scale = self.d_head**-0.5
        self.force_explicit = False  # compute the explicit pattern even without hooks
        self.use_attn_result = False  # fire hook_result (per-head outputs; costs memory)
        q_dim, kv_dim = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.split_sizes = (q_dim, kv_dim, kv_dim)
        self.qkv = nn.Linear(d_model, q_dim + 2 * kv_dim, bias=qkv_bias)
        self.out = nn.Linear(q_dim, d_model, bias=out_bias)
        if qk_norm_eps is not None:
            self.q_norm = RMSNorm(self.d_head, qk_norm_eps)
            self.k_norm = RMSNorm(self.d_head, qk_norm_eps)

        self.hook_q = HookPoint()  # [batch, pos, head, d_head], before q_norm (if any) and rotary
        self.hook_k = HookPoint()  # [batch, pos, kv_head, d_head], before k_norm (if any) and rotary
        self.hook_v = HookPoint()  # [batch, pos, kv_head, d_head]
        self.hook_rot_q = HookPoint()  # [batch, pos, head, d_head], after rotary
        self.hook_rot_k = HookPoint()  # [batch, pos, kv_head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], scaled and masked
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model], only with use_attn_result

    # TransformerLens-shaped views of the weights (grouped key/value heads expanded to one per
    # query head, as TransformerLens's grouped-query attention shows them; _W_K/_W_V are per kv head).
    @property
    def W_Q(self) -> Float[Tensor, "head d_model d_head"]:
        return self._rows(0).view(self.n_heads, self.d_head, -1).transpose(1, 2)

    @property
    def _W_K(self) -> Float[Tensor, "kv_head d_model d_head"]:
        return self._rows(1).view(self.n_kv_heads, self.d_head, -1).transpose(1, 2)

    @property
    def _W_V(self) -> Float[Tensor, "kv_head d_model d_head"]:
        return self._rows(2).view(self.n_kv_heads, self.d_head, -1).transpose(1, 2)

    @property
    def W_K(self) -> Float[Tensor, "head d_model d_head"]:
        return self._per_query_head(self._W_K)

    @property
    def W_V(self) -> Float[Tensor, "head d_model d_head"]:
        return self._per_query_head(self._W_V)

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        return self.out.weight.T.reshape(self.n_heads, self.d_head, -1)

    @property
    def b_Q(self) -> Float[Tensor, "head d_head"]:
        return self._bias(0).view(self.n_heads, self.d_head)

    @property
    def _b_K(self) -> Float[Tensor, "kv_head d_head"]:
        return self._bias(1).view(self.n_kv_heads, self.d_head)

    @property
    def _b_V(self) -> Float[Tensor, "kv_head d_head"]:
        return self._bias(2).view(self.n_kv_heads, self.d_head)

    @property
    def b_K(self) -> Float[Tensor, "head d_head"]:
        return self._per_query_head(self._b_K)

    @property
    def b_V(self) -> Float[Tensor, "head d_head"]:
        return self._per_query_head(self._b_V)

    @property
    def b_O(self) -> Float[Tensor, "d_model"]:
        w = self.out.weight
        return self.out.bias if self.out.bias is not None else w.new_zeros(w.shape[0])

    def _rows(self, part: int) -> Tensor:
        start = sum(self.split_sizes[:part])
        return self.qkv.weight[start : start + self.split_sizes[part]]

    def _bias(self, part: int) -> Tensor:
        if self.qkv.bias is None:
            return self.qkv.weight.new_zeros(self.split_sizes[part])
        start = sum(self.split_sizes[:part])
        return self.qkv.bias[start : start + self.split_sizes[part]]

    def _per_query_head(self, per_kv_head: Tensor) -> Tensor:
        return per_kv_head.repeat_interleave(self.n_heads // self.n_kv_heads, dim=0)

    @property
    def watched(self) -> bool:
        """Whether this layer computes the explicit pattern (a forward or backward hook on
        ``hook_attn_scores``/``hook_pattern``, or ``force_explicit``)."""
        return bool(self.force_explicit or watched(self.hook_attn_scores) or watched(self.hook_pattern))

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        rotary: Rotary | None = None,
        causal: bool = False,
        key_valid: Bool[Tensor, "batch key_pos"] | None = None,
        segments: AttentionSegments | None = None,
        additive_mask: Float[Tensor, "batch head query_pos key_pos"] | None = None,
        kv_cache: LayerKVCache | StaticKVCache | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Attend.

        Args:
            rotary: angles for the positions of ``x`` (``None``: no rotary).
            causal: mask keys after the query (offset by the cached length when decoding).
            key_valid: False for padding keys, over cached + new positions.
            segments: block-diagonal attention within segments of a packed row (batch 1).
            additive_mask: added to the scores (``-inf`` removes an edge); broadcastable.
            kv_cache: keys and values of earlier positions; new ones are appended.
        """
        batch, n_pos, _ = x.shape
        q, k, v = self.qkv(x).split(self.split_sizes, dim=-1)
        q = self.hook_q(q.view(batch, n_pos, self.n_heads, self.d_head))
        k = self.hook_k(k.view(batch, n_pos, self.n_kv_heads, self.d_head))
        v = self.hook_v(v.view(batch, n_pos, self.n_kv_heads, self.d_head))
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = rotary.apply(q), rotary.apply(k)
        q, k = self.hook_rot_q(q), self.hook_rot_k(k)

        if segments is not None:
            z = segments.scatter(self._attend_segments(q, k, v, segments), n_pos)
        else:
            qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            past = 0
            if kv_cache is not None:
                past = kv_cache.length
                kh, vh = kv_cache.append(kh, vh)
            if kv_cache is not None and kv_cache.static_mask is not None:  # captured decoding: the whole buffer
                mask = kv_cache.static_mask if additive_mask is None else kv_cache.static_mask + additive_mask
                z = self._attend(qh, kh, vh, None, mask, False).transpose(1, 2)
            else:
                mask = self._bool_mask(batch, n_pos, kh.shape[2], past, causal, key_valid, x.device)
                # SDPA's is_causal aligns top-left, so it only fits when queries and keys coincide
                use_is_causal = causal and mask is None and past == 0 and n_pos > 1
                z = self._attend(qh, kh, vh, mask, additive_mask, use_is_causal).transpose(1, 2)
        z = self.hook_z(z)  # [batch, pos, head, d_head]

        if self.use_attn_result:
            w_o = self.out.weight.view(-1, self.n_heads, self.d_head)  # [d_model, head, d_head]
            result = self.hook_result(torch.einsum("bphd,mhd->bphm", z, w_o))
            out = result.sum(dim=2)
            return out + self.out.bias if self.out.bias is not None else out
        return self.out(z.reshape(batch, n_pos, -1))

    def _attend_segments(self, q, k, v, segments: AttentionSegments) -> Tensor:
        qs, ks, vs = segments.gather(q), segments.gather(k), segments.gather(v)
        mask = None if segments.valid is None else segments.valid[:, None, None, :]
        return self._attend(qs, ks, vs, mask, None, False)

    @staticmethod
    def _bool_mask(batch, n_query, n_key, past, causal, key_valid, device) -> Tensor | None:
        """[batch or 1, 1, query, key] True where attention is allowed, or None if nothing is masked."""
        has_padding = key_valid is not None and not bool(key_valid.all())
        needs_causal = causal and not (n_query == 1)  # one new query sees every earlier key
        if not has_padding and not (needs_causal and past > 0):
            return None  # SDPA's is_causal (or no mask) covers it
        query_at = torch.arange(n_query, device=device)[:, None] + past
        allowed = torch.ones(1, 1, n_query, n_key, dtype=torch.bool, device=device)
        if causal:
            allowed = allowed & (torch.arange(n_key, device=device)[None, :] <= query_at)
        if has_padding:
            allowed = allowed & key_valid[:, None, None, :]
            # A padding query would see nothing; let it see itself so no row is all -inf.
            own = torch.arange(n_key, device=device)[None, :] == query_at
            allowed = allowed | own
        return allowed

    def _attend(self, q, k, v, bool_mask, additive_mask, is_causal) -> Tensor:
        """q [b, head, q, d], k/v [b, kv_head, k, d] -> [b, head, q, d]."""
        if is_causal and (additive_mask is not None or self.watched):
            n_q, n_k = q.shape[-2], k.shape[-2]
            bool_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
            is_causal = False
        if not self.watched:
            mask = bool_mask
            if additive_mask is not None:
                mask = additive_mask.to(q.dtype)
                if bool_mask is not None:
                    mask = mask.masked_fill(~bool_mask, float("-inf"))
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
        # GQA without copying keys/values: each kv head serves its group of query heads as extra rows
        batch, n_heads, n_q, d_head = q.shape
        n_kv, n_k = k.shape[1], k.shape[2]
        grouped_q = q.reshape(batch, n_kv, (n_heads // n_kv) * n_q, d_head)
        scores = torch.matmul(grouped_q, k.transpose(-1, -2)).view(batch, n_heads, n_q, n_k) * self.scale
        if bool_mask is not None:
            scores = scores.masked_fill(~bool_mask, float("-inf"))
        if additive_mask is not None:
            scores = scores + additive_mask.to(scores.dtype)
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
        out = torch.matmul(pattern.reshape(batch, n_kv, -1, n_k), v)  # [batch, kv_head, group * query, d_head]
        return out.view(batch, n_heads, n_q, d_head)
