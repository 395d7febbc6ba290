"""MiniCPM-V 2.6 / MiniCPM-o 2.6's perceiver resampler (``resampler``): every slice's patches ->
``n_queries`` (64) rows in the LLM width.

Per slice ``s`` of ``h x w`` patches, with ``x`` the vision tower's output rows of that slice:

1. ``kv = ln_kv(kv_proj(x))`` (no bias; ``kv_proj`` is absent when ``kv_dim == d_model``);
2. keys = ``kv`` + a fixed 2-D sin-cos embedding of each patch's (row, column), values = ``kv``
   (the position goes into the keys only, never into values or queries);
3. ``n_queries`` learned queries ``ln_q(query)`` (the same for every slice) attend over the slice's
   keys with :class:`~hooked_avllm.components.cross_attention.CrossAttention` (``d_model / 128``
   heads);
4. ``ln_post``, then ``@ proj`` (a raw ``[d_model, d_model]`` matrix, as released).

The sin-cos embedding (:func:`sincos_2d_positions`, MAE style): channels ``[0, d/2)`` encode the
column (w) index, ``[d/2, d)`` the row (h) index, each half ``[sin(p * omega_k), cos(p * omega_k)]``
with ``omega_k = 10000 ** (-k / (d/4))``. It is float32, not a parameter and not in the checkpoint,
and cast to the activation dtype before it is added. The released model caches a 70 x 70 table and
rebuilds a larger one when a slice is wider or taller; the entry of a (row, col) does not depend on
the table's size, so we compute the entries a call needs directly, at any size
(:func:`packed_sincos_positions`).

Slices are batched for the attention: ``[slice, query, d]`` queries over ``[slice, max_patch, d]``
keys, padding keys masked. Hooks on the tower's rows stay packed ``[1, patch, d_model]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import AttentionSegments, LayerNorm
from hooked_avllm.components.cross_attention import CrossAttention
from hooked_avllm.towers.navit_siglip import slice_sizes

HEAD_WIDTH = 128  # the released model builds d_model // 128 heads


@dataclass
class ResamplerConfig:
    """Shape of the resampler. Defaults: MiniCPM-o 2.6 (64 queries into the 3584-wide Qwen2 LLM,
    28 heads, 1152-wide SigLIP keys).

    ``max_size`` is the side of the released cached position table; positions beyond it are
    computed by the same formula (the released code rebuilds its table), so it never limits a slice.

    Example:
        >>> cfg = ResamplerConfig()
        >>> cfg.n_heads, cfg.d_head
        (28, 128)
    """

    n_queries: int = 64
    d_model: int = 3584
    n_heads: int = 28
    kv_dim: int = 1152
    max_size: tuple[int, int] = (70, 70)
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        if self.n_heads < 1 or self.d_model % self.n_heads:
            raise ValueError(f"resampler d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if self.d_model % 4:
            raise ValueError(f"resampler d_model {self.d_model} must be a multiple of 4 (2-D sin-cos positions)")

    @classmethod
    def from_hf(cls, config_json: dict) -> ResamplerConfig:
        """From the model's ``config.json``: ``query_num``, ``hidden_size`` (the LLM width; heads =
        ``hidden_size // 128``) and ``vision_config.hidden_size``.

        Example:
            >>> cfg = ResamplerConfig.from_hf({"query_num": 64, "hidden_size": 3584, "vision_config": {"hidden_size": 1152}})
            >>> cfg.n_queries, cfg.d_model, cfg.n_heads, cfg.kv_dim
            (64, 3584, 28, 1152)
        """
        d_model = int(config_json["hidden_size"])
        vision = config_json.get("vision_config") or {}
        return cls(
            n_queries=int(config_json.get("query_num", 64)),
            d_model=d_model,
            n_heads=d_model // HEAD_WIDTH,
            kv_dim=int(vision.get("hidden_size", 1152)),
        )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


def _sincos_1d(n_positions: int, width: int) -> Float[Tensor, "pos width"]:
    """``[sin(p * omega), cos(p * omega)]`` for ``p = 0 .. n_positions - 1`` and ``width / 2``
    frequencies ``omega_k = 10000 ** (-k / (width/2))`` (float32, CPU).

    The exponent ``k / (width/2)`` and the products ``p * omega`` are float32 as released; ``omega``
    and sin/cos are evaluated in float64 and rounded once to float32.
    """
    half = width // 2
    exponent = torch.arange(half, dtype=torch.float32, device="cpu") / half
    omega = (1.0 / torch.pow(10000.0, exponent.double())).float()
    angles = torch.arange(n_positions, dtype=torch.float32, device="cpu")[:, None] * omega  # float32 outer product
    return torch.cat((angles.double().sin(), angles.double().cos()), dim=-1).float()


def packed_sincos_positions(sizes: list[tuple[int, int]], d_model: int, device=None) -> Float[Tensor, "patch d_model"]:
    """The 2-D sin-cos rows of slices of ``(h, w)`` patches, each row-major, slice after slice
    (float32): channels ``[0, d/2)`` encode the column, ``[d/2, d)`` the row. The small 1-D table is
    computed on the CPU and the rows are gathered on ``device``.

    Example:
        >>> table = packed_sincos_positions([(2, 3)], 4)  # [sin(col), cos(col), sin(row), cos(row)]
        >>> table.shape, [round(v, 4) for v in table[5].tolist()]  # row 1, column 2
        (torch.Size([6, 4]), [0.9093, -0.4161, 0.8415, 0.5403])
    """
    longest = max(max(h, w) for h, w in sizes)
    table = _sincos_1d(longest, d_model // 2).to(device)  # [position, d/2]
    rows = torch.cat([torch.arange(h, device="cpu").repeat_interleave(w) for h, w in sizes]).to(device)
    cols = torch.cat([torch.arange(w, device="cpu").repeat(h) for h, w in sizes]).to(device)
    return torch.cat((table[cols], table[rows]), dim=-1)


def sincos_2d_positions(h: int, w: int, d_model: int) -> Float[Tensor, "patch d_model"]:
    """The 2-D sin-cos rows of one ``h x w`` slice, row-major (float32, CPU); the released
    ``pos_embed[:h, :w].reshape(h * w, d_model)``.

    Example:
        >>> sincos_2d_positions(70, 70, 3584).shape
        torch.Size([4900, 3584])
    """
    return packed_sincos_positions([(h, w)], d_model)


class Resampler(nn.Module):
    """Perceiver resampler: packed tower rows ``[1, patch, kv_dim]`` + ``tgt_sizes`` ->
    ``[slice, query, d_model]`` (the family flattens them to LLM rows, slice after slice).

    Hooks (``vision_proj.`` prefix in the full model):

    * ``hook_kv`` ([1, patch, d_model]): ``ln_kv(kv_proj(x))``, the values (``ln_kv.*`` inside);
    * ``hook_pos_embed`` ([1, patch, d_model]): the sin-cos rows added to the keys;
    * ``hook_key`` ([1, patch, d_model]): the keys' input, ``kv + pos``;
    * ``hook_query`` ([slice, query, d_model]): ``ln_q(query)`` for every slice (``ln_q.*`` inside);
    * ``attn.hook_q`` ([slice, query, head, d_head]), ``attn.hook_k`` / ``attn.hook_v``
      ([slice, max_patch, head, d_head]), ``attn.hook_attn_scores`` / ``attn.hook_pattern``
      ([slice, head, query, max_patch]: key ``j`` of slice ``s`` is that slice's patch ``j``;
      columns past its ``h * w`` patches are padding, with probability 0), ``attn.hook_z``
      ([slice, query, head, d_head]), ``attn.hook_result`` (only with ``use_attn_result``);
    * ``hook_attn_out`` ([slice, query, d_model]), ``ln_post.*``, ``hook_post`` (after ln_post) and
      ``hook_out`` ([slice, query, d_model], after ``@ proj``).

    Example:
        >>> cfg = ResamplerConfig(n_queries=4, d_model=16, n_heads=2, kv_dim=8)
        >>> resampler = Resampler(cfg)
        >>> resampler(torch.randn(1, 6 + 10, 8), torch.tensor([[2, 3], [5, 2]])).shape
        torch.Size([2, 4, 16])
    """

    def __init__(self, cfg: ResamplerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.query = nn.Parameter(torch.zeros(cfg.n_queries, d))  # [query, d_model]
        self.kv_proj = nn.Linear(cfg.kv_dim, d, bias=False) if cfg.kv_dim != d else nn.Identity()
        self.ln_q = LayerNorm(d, cfg.layer_norm_eps)
        self.ln_kv = LayerNorm(d, cfg.layer_norm_eps)
        self.attn = CrossAttention(d, cfg.n_heads)
        self.ln_post = LayerNorm(d, cfg.layer_norm_eps)
        self.proj = nn.Parameter(torch.zeros(d, d))  # used as x @ proj (released layout, no transpose)
        self.hook_kv = HookPoint()  # [1, patch, d_model], ln_kv(kv_proj(x)): the values
        self.hook_pos_embed = HookPoint()  # [1, patch, d_model], sin-cos rows added to the keys
        self.hook_key = HookPoint()  # [1, patch, d_model], kv + pos: the keys' input
        self.hook_query = HookPoint()  # [slice, query, d_model], ln_q(query) for every slice
        self.hook_attn_out = HookPoint()  # [slice, query, d_model]
        self.hook_post = HookPoint()  # [slice, query, d_model], after ln_post
        self.hook_out = HookPoint()  # [slice, query, d_model], after @ proj

    def forward(
        self, x: Float[Tensor, "1 patch kv_dim"], tgt_sizes: Int[Tensor, "slice 2"]
    ) -> Float[Tensor, "slice query d_model"]:
        """Resample the packed rows of ``len(tgt_sizes)`` slices into ``n_queries`` rows each."""
        cfg = self.cfg
        if x.ndim != 3 or x.shape[0] != 1 or x.shape[-1] != cfg.kv_dim:
            raise ValueError(
                f"resampler input must be the tower's packed rows [1, n_patches, {cfg.kv_dim}]; got {tuple(x.shape)}"
            )
        sizes = slice_sizes(tgt_sizes, x.shape[1])
        dtype = self.query.dtype
        kv = self.hook_kv(self.ln_kv(self.kv_proj(x.to(dtype))))  # [1, patch, d_model]
        table = packed_sincos_positions(sizes, cfg.d_model, kv.device)  # float32, cast as released
        positions = self.hook_pos_embed(table.to(kv.dtype)[None])  # [1, patch, d_model]
        keys = self.hook_key(kv + positions)

        segments = AttentionSegments.from_lengths([h * w for h, w in sizes], kv.device)
        n_slices = len(sizes)
        query = self.hook_query(self.ln_q(self.query)[None].repeat(n_slices, 1, 1))  # [slice, query, d_model]
        out = self.attn(query, keys[0, segments.index], kv[0, segments.index], key_valid=segments.valid)
        out = self.hook_attn_out(out)  # [slice, query, d_model]
        post = self.hook_post(self.ln_post(out))
        return self.hook_out(post @ self.proj)
