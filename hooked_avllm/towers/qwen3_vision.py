"""The Qwen3-Omni (Qwen3-VL-style) vision encoder, its patch merger and its DeepStack mergers.

The tower is a SigLIP2-so400m-like ViT over the processor's flattened patches: a Conv3d patch
embedding with bias (stored as a linear map over the flattened ``[channel, frame, row, col]``
patch), a learned square position table bilinearly resampled to each item's ``(h, w)`` grid, 2D
axial rotary, and pre-LN blocks (LayerNorm with bias, fused qkv with bias, ``gelu_pytorch_tanh``
MLP) with full attention inside each frame (no window attention).

Patches stay in the processor's order at every hook: per image or video, frame group by frame
group, each ``merge x merge`` block contiguous (blocks row-major, members row-major). The
interpolated position table and the rotary angles are laid out in that order too.

The projector turns patches into LLM rows: ``merger`` (LayerNorm over ``d_model``, concatenate each
merge block, ``Linear -> GELU -> Linear``) gives the rows scattered into the image/video
placeholders; ``deepstack.{i}`` (concatenate first, LayerNorm over ``merge**2 * d_model``, same MLP)
turns the output of block ``deepstack_visual_indexes[i]`` into the rows the LLM adds to the visual
positions after its decoder layer ``i``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import Attention, LayerNorm, PlainMLP, TransformerBlock
from hooked_avllm.components.rotary import rotary_axial_2d
from hooked_avllm.towers.qwen_vision import check_grids, frame_segments, patch_positions

# transformers' Qwen3OmniMoeVisionEncoderConfig defaults: a config.json may leave out what equals them
HF_DEFAULTS = {
    "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "out_hidden_size": 3584,
    "patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3,
    "hidden_act": "gelu_pytorch_tanh", "num_position_embeddings": 2304, "deepstack_visual_indexes": (8, 16, 24),
}


def _single_int(value, what: str) -> int:
    """An int from an int or an all-equal list (transformers types patch sizes as either)."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"Qwen3 vision {what} must be one size for every axis; got {list(value)}")
        value = value[0]
    return int(value)


@dataclass
class Qwen3VisionConfig:
    """Shape of the Qwen3-Omni vision tower and its mergers. Defaults: Qwen3-Omni-30B-A3B.

    ``layer_norm_eps`` is not a transformers config key: the reference hard-codes 1e-6 in every
    block norm and merger norm.

    Example:
        >>> cfg = Qwen3VisionConfig()
        >>> cfg.patch_dim, cfg.d_head, cfg.pos_grid_side
        (1536, 72, 48)
        >>> Qwen3VisionConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    depth: int = 27
    d_model: int = 1152
    d_mlp: int = 4304
    n_heads: int = 16
    out_dim: int = 2048
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    act: str = "gelu_pytorch_tanh"
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self):
        self.deepstack_visual_indexes = tuple(int(i) for i in self.deepstack_visual_indexes)
        if self.d_model % self.n_heads:
            raise ValueError(f"Qwen3 vision d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if self.d_head % 4:
            raise ValueError(
                f"Qwen3 vision head dim {self.d_head} (d_model {self.d_model} / n_heads {self.n_heads}) must be "
                "divisible by 4: the 2D rotary gives a quarter of the head's frequencies to each axis"
            )
        side = math.isqrt(self.num_position_embeddings)
        if side * side != self.num_position_embeddings:
            raise ValueError(
                f"Qwen3 vision num_position_embeddings {self.num_position_embeddings} must be a perfect square "
                "(the learned position table is a side x side grid)"
            )
        ds = self.deepstack_visual_indexes
        if list(ds) != sorted(set(ds)) or any(not 0 <= i < self.depth for i in ds):
            raise ValueError(
                f"Qwen3 vision deepstack_visual_indexes {list(ds)} must be distinct, increasing block indexes in "
                f"[0, {self.depth}) (the LLM adds feature i after its decoder layer i, in this order)"
            )

    @classmethod
    def from_hf(cls, vision_config: dict) -> Qwen3VisionConfig:
        """From a transformers ``Qwen3OmniMoeVisionEncoderConfig`` dict (``thinker_config.vision_config``
        of a ``config.json``); absent keys take transformers' defaults (e.g. ``out_hidden_size`` 3584).

        Example:
            >>> cfg = Qwen3VisionConfig.from_hf({"depth": 4, "hidden_size": 32, "num_heads": 4,
            ...     "intermediate_size": 64, "out_hidden_size": 48, "num_position_embeddings": 64,
            ...     "deepstack_visual_indexes": [0, 2]})
            >>> cfg.depth, cfg.d_head, cfg.out_dim, cfg.deepstack_visual_indexes
            (4, 8, 48, (0, 2))
        """
        v = {**HF_DEFAULTS, **{k: x for k, x in vision_config.items() if x is not None}}
        rope = vision_config.get("rope_parameters") or {}
        if rope.get("rope_type", "axial") != "axial":
            raise ValueError(
                f"Qwen3 vision rope_parameters.rope_type must be 'axial' (the reference supports no other); "
                f"got {rope['rope_type']!r}"
            )
        return cls(
            depth=int(v["depth"]),
            d_model=int(v["hidden_size"]),
            d_mlp=int(v["intermediate_size"]),
            n_heads=int(v["num_heads"]),
            out_dim=int(v["out_hidden_size"]),
            patch_size=_single_int(v["patch_size"], "patch_size"),
            temporal_patch_size=_single_int(v["temporal_patch_size"], "temporal_patch_size"),
            spatial_merge_size=int(v["spatial_merge_size"]),
            in_channels=int(v["in_channels"]),
            act=v["hidden_act"],
            num_position_embeddings=int(v["num_position_embeddings"]),
            deepstack_visual_indexes=tuple(v["deepstack_visual_indexes"]),
            rope_theta=float(rope.get("rope_theta", vision_config.get("rope_theta") or 10000.0)),
        )

    def to_dict(self) -> dict:
        """Plain fields (``deepstack_visual_indexes`` stays a tuple; JSON turns it into a list, which
        :meth:`from_dict` accepts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Qwen3VisionConfig:
        """Inverse of :meth:`to_dict`.

        Example:
            >>> Qwen3VisionConfig.from_dict({"depth": 3, "deepstack_visual_indexes": [0, 1]}).deepstack_visual_indexes
            (0, 1)
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Qwen3VisionConfig.from_dict got unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: channels x frames x rows x columns."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def pos_grid_side(self) -> int:
        """Side of the learned square position table (48 for 2304 entries)."""
        return math.isqrt(self.num_position_embeddings)

    @property
    def d_merged(self) -> int:
        """Width of one concatenated merge block: ``merge**2 * d_model``."""
        return self.spatial_merge_size**2 * self.d_model


def _axis_taps(
    index: Int[Tensor, " patch"], size: Int[Tensor, " patch"], side: int
) -> tuple[Int[Tensor, "patch 2"], Float[Tensor, "patch 2"]]:
    """Bilinear (``align_corners=True``) taps into a ``side``-long axis for positions ``index`` of an
    axis of length ``size``, and their weights, in float32 as the reference computes them."""
    source = index.float() * (side - 1) / (size - 1).clamp(min=1)  # 0 -> 0, size-1 -> side-1
    low = source.floor()
    frac = source - low
    taps = torch.stack((low, low + 1), dim=-1).long().clamp(0, side - 1)
    weights = torch.stack((1 - frac, 1 - (frac - 1).abs()), dim=-1)
    return taps, weights


def interpolated_positions(
    table: Float[Tensor, "table d_model"], grid_thw: Int[Tensor, "item 3"], merge: int
) -> Float[Tensor, "patch d_model"]:
    """The square learned position table resampled to every item's ``(h, w)`` grid, one row per
    patch in the processor's merge-block order (repeated for each frame group of a video).

    Equals ``F.interpolate(table as [d, side, side], size=(h, w), mode="bilinear",
    align_corners=True)``, read in merge-block order. The interpolation weights are float32 whatever
    the table's dtype (so a float64 table is mixed with float32 weights, and a bf16 table is
    interpolated in float32), as in the reference; the caller casts the result.

    Example:
        >>> table = torch.randn(16, 3)  # a 4 x 4 grid
        >>> grid = torch.tensor([[1, 4, 4]])
        >>> order = patch_positions(grid, 2)  # (row, col) per patch: a same-size grid is a reordering
        >>> torch.allclose(interpolated_positions(table, grid, 2), table[order[:, 0] * 4 + order[:, 1]])
        True
    """
    side = math.isqrt(table.shape[0])
    grid_thw = grid_thw.cpu().long()
    rows_cols = patch_positions(grid_thw, merge).to(table.device)
    per_patch = grid_thw.repeat_interleave(grid_thw.prod(-1), dim=0).to(table.device)  # [patch, 3]
    row_taps, row_weights = _axis_taps(rows_cols[:, 0], per_patch[:, 1], side)
    col_taps, col_weights = _axis_taps(rows_cols[:, 1], per_patch[:, 2], side)
    out = None
    for i in range(2):  # four taps, summed one by one (no [patch, 4, d_model] intermediate)
        for j in range(2):
            term = table[row_taps[:, i] * side + col_taps[:, j]] * (row_weights[:, i] * col_weights[:, j])[:, None]
            out = term if out is None else out + term
    return out


class Qwen3VisionTower(nn.Module):
    """Patch embedding, interpolated learned positions, 2D rotary, full attention per frame.

    Hooks (``vision.`` in the full model): ``hook_patch_embed`` ([1, patch, d_model], the patch
    projection with its bias), ``hook_pos_embed`` ([1, patch, d_model], the interpolated position
    rows added), ``hook_embed`` ([1, patch, d_model], their sum), ``blocks.{l}.*`` (attention
    patterns ``[frame, head, frame_pos, frame_pos]``, frames padded to the longest) and ``hook_out``
    ([1, patch, d_model], the last block's output). The DeepStack taps are
    ``blocks.{l}.hook_resid_post`` for ``l`` in ``deepstack_visual_indexes``.

    Example:
        >>> cfg = Qwen3VisionConfig(depth=3, d_model=32, d_mlp=64, n_heads=4, out_dim=48, patch_size=4,
        ...                         num_position_embeddings=64, deepstack_visual_indexes=(0, 1))
        >>> hidden, taps = Qwen3VisionTower(cfg)(torch.randn(24, cfg.patch_dim), torch.tensor([[1, 4, 6]]))
        >>> hidden.shape, [t.shape for t in taps]
        (torch.Size([1, 24, 32]), [torch.Size([1, 24, 32]), torch.Size([1, 24, 32])])
    """

    def __init__(self, cfg: Qwen3VisionConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.patch_embed = nn.Linear(cfg.patch_dim, d, bias=True)  # the Conv3d, over flattened patches
        self.pos_embed = nn.Parameter(torch.zeros(cfg.num_position_embeddings, d))  # [side * side, d_model], row-major
        self.blocks = nn.ModuleList(
            TransformerBlock(
                LayerNorm(d, cfg.layer_norm_eps),
                Attention(d, cfg.n_heads, qkv_bias=True, out_bias=True),
                LayerNorm(d, cfg.layer_norm_eps),
                PlainMLP(d, cfg.d_mlp, act=cfg.act, bias=True),
            )
            for _ in range(cfg.depth)
        )
        self.hook_patch_embed = HookPoint()  # [1, patch, d_model]
        self.hook_pos_embed = HookPoint()  # [1, patch, d_model]
        self.hook_embed = HookPoint()  # [1, patch, d_model]
        self.hook_out = HookPoint()  # [1, patch, d_model]

    def forward(
        self, pixels: Float[Tensor, "patch patch_dim"], grid_thw: Int[Tensor, "item 3"]
    ) -> tuple[Float[Tensor, "1 patch d_model"], list[Float[Tensor, "1 patch d_model"]]]:
        """Encode the processor's flattened patches; ``grid_thw`` gives (frame groups, rows, columns)
        of patches per image or video. Returns the last hidden state and the DeepStack taps (the
        outputs of the blocks in ``deepstack_visual_indexes``, in that order)."""
        cfg = self.cfg
        if pixels.ndim != 2 or pixels.shape[-1] != cfg.patch_dim:
            raise ValueError(
                f"pixels must be [n_patches, {cfg.patch_dim}] ({cfg.in_channels} channels x {cfg.temporal_patch_size} "
                f"frames x {cfg.patch_size}x{cfg.patch_size}, flattened as the processor does); got {tuple(pixels.shape)}"
            )
        grid_thw = torch.as_tensor(grid_thw).cpu().long()
        check_grids(grid_thw, pixels.shape[0], cfg.spatial_merge_size, "vision")
        device = pixels.device
        x = self.hook_patch_embed(self.patch_embed(pixels.to(self.patch_embed.weight.dtype))[None])  # [1, patch, d_model]
        positions = interpolated_positions(self.pos_embed, grid_thw, cfg.spatial_merge_size)
        pos = self.hook_pos_embed(positions.to(x.dtype)[None])  # [1, patch, d_model]
        x = self.hook_embed(x + pos)  # [1, patch, d_model]
        rotary = rotary_axial_2d(patch_positions(grid_thw, cfg.spatial_merge_size).to(device), cfg.d_head, cfg.rope_theta)
        frames = frame_segments(grid_thw, device)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x, rotary=rotary, segments=frames)
            if i in cfg.deepstack_visual_indexes:
                taps.append(x)
        return self.hook_out(x), taps  # [1, patch, d_model]


class SpatialMergeMLP(nn.Module):
    """Concatenate each ``merge x merge`` block of patches and map it through ``fc1 -> GELU -> fc2``.

    ``postshuffle_norm=False`` (the main merger) normalises each patch over ``d_model`` before
    concatenating; ``True`` (the DeepStack mergers) normalises the concatenated block over
    ``merge**2 * d_model``. The GELU is the exact (erf) one, unlike the tower's tanh GELU.

    Hooks: ``ln.*``, ``hook_merged`` ([1, token, d_merged]: the normalised, concatenated block that
    ``fc1`` reads), ``hook_pre`` / ``hook_post`` ([1, token, d_merged], around the GELU) and
    ``hook_out`` ([1, token, out_dim]).

    Example:
        >>> SpatialMergeMLP(8, 12, merge=2, postshuffle_norm=True)(torch.randn(1, 16, 8)).shape
        torch.Size([1, 4, 12])
    """

    def __init__(self, d_model: int, out_dim: int, merge: int = 2, postshuffle_norm: bool = False, eps: float = 1e-6):
        super().__init__()
        self.d_model, self.merge, self.postshuffle_norm = d_model, merge, postshuffle_norm
        self.d_merged = d_model * merge * merge
        self.ln = LayerNorm(self.d_merged if postshuffle_norm else d_model, eps)
        self.fc1 = nn.Linear(self.d_merged, self.d_merged)
        self.fc2 = nn.Linear(self.d_merged, out_dim)
        self.hook_merged = HookPoint()  # [1, token, d_merged]
        self.hook_pre = HookPoint()  # [1, token, d_merged]
        self.hook_post = HookPoint()  # [1, token, d_merged]
        self.hook_out = HookPoint()  # [1, token, out_dim]

    def forward(self, x: Float[Tensor, "1 patch d_model"]) -> Float[Tensor, "1 token out_dim"]:
        if x.ndim != 3 or x.shape[0] != 1 or x.shape[-1] != self.d_model or x.shape[1] % (self.merge**2):
            raise ValueError(
                f"merger input must be [1, n_patches, {self.d_model}] with n_patches a multiple of "
                f"{self.merge**2} (whole merge blocks, in the processor's order); got {tuple(x.shape)}"
            )
        if self.postshuffle_norm:
            merged = self.ln(x.reshape(1, -1, self.d_merged))
        else:
            merged = self.ln(x).reshape(1, -1, self.d_merged)
        merged = self.hook_merged(merged)  # [1, token, d_merged]
        post = self.hook_post(F.gelu(self.hook_pre(self.fc1(merged))))  # [1, token, d_merged]
        return self.hook_out(self.fc2(post))  # [1, token, out_dim]


class Qwen3VisionProjector(nn.Module):
    """The main merger and the DeepStack mergers: patches -> LLM rows.

    Hooks (``vision_proj.`` in the full model): ``merger.*`` and ``deepstack.{i}.*`` (see
    :class:`SpatialMergeMLP`), ``hook_out`` ([1, token, out_dim]: the rows scattered into the LLM's
    image/video placeholder positions; the same values as ``merger.hook_out``) and
    ``deepstack.{i}.hook_out`` ([1, token, out_dim]: the rows the LLM adds to the visual positions
    after its decoder layer ``i``).

    Example:
        >>> cfg = Qwen3VisionConfig(depth=3, d_model=32, d_mlp=64, n_heads=4, out_dim=48,
        ...                         num_position_embeddings=64, deepstack_visual_indexes=(0, 1))
        >>> rows, deep = Qwen3VisionProjector(cfg)(torch.randn(1, 24, 32), [torch.randn(1, 24, 32)] * 2)
        >>> rows.shape, [d.shape for d in deep]
        (torch.Size([1, 6, 48]), [torch.Size([6, 48]), torch.Size([6, 48])])
    """

    def __init__(self, cfg: Qwen3VisionConfig):
        super().__init__()
        self.cfg = cfg
        merge, eps = cfg.spatial_merge_size, cfg.layer_norm_eps
        self.merger = SpatialMergeMLP(cfg.d_model, cfg.out_dim, merge, postshuffle_norm=False, eps=eps)
        self.deepstack = nn.ModuleList(
            SpatialMergeMLP(cfg.d_model, cfg.out_dim, merge, postshuffle_norm=True, eps=eps)
            for _ in cfg.deepstack_visual_indexes
        )
        self.hook_out = HookPoint()  # [1, token, out_dim]

    def forward(
        self, hidden: Float[Tensor, "1 patch d_model"], taps: list[Float[Tensor, "1 patch d_model"]]
    ) -> tuple[Float[Tensor, "1 token out_dim"], list[Float[Tensor, "token out_dim"]]]:
        """Merge the tower's last hidden state and its DeepStack taps (``taps[i]``: the output of
        block ``deepstack_visual_indexes[i]``)."""
        if len(taps) != len(self.deepstack):
            raise ValueError(
                f"taps must hold {len(self.deepstack)} hidden states (one per deepstack_visual_indexes "
                f"{list(self.cfg.deepstack_visual_indexes)}, as the tower returns them); got {len(taps)}"
            )
        for i, tap in enumerate(taps):
            if tap.shape != hidden.shape:
                raise ValueError(
                    f"taps[{i}] has shape {tuple(tap.shape)} but hidden has {tuple(hidden.shape)}; pass the tower's "
                    "hidden state and taps from the same call"
                )
        rows = self.hook_out(self.merger(hidden))  # [1, token, out_dim]
        return rows, [merger(tap)[0] for merger, tap in zip(self.deepstack, taps)]


__all__ = [
    "Qwen3VisionConfig",
    "Qwen3VisionProjector",
    "Qwen3VisionTower",
    "SpatialMergeMLP",
    "interpolated_positions",
]
