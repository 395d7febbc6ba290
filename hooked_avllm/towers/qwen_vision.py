"""The Qwen2.5-VL / Qwen2.5-Omni vision encoder and its patch merger.

Patches arrive as the processor lays them out: per image or video, frame group by frame group,
each 2x2 merge block contiguous. The residual stream keeps that order at every hook (so a
position maps straight to its patch); window attention gathers each window's patches inside the
attention call instead of permuting the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import Attention, AttentionSegments, GatedMLP, RMSNorm, TransformerBlock
from hooked_avllm.components.rotary import Rotary, rotary_axial_2d
from hooked_avllm.components.hook_state import towers_unwatched
from hooked_avllm.components.plan_cache import cached_plan
from hooked_avllm.components.upload import upload


@dataclass
class QwenVisionConfig:
    """The Qwen2.5-VL / Qwen2.5-Omni ViT with its patch merger (``vision_config`` of the checkpoint).

    Example:
        >>> QwenVisionConfig(depth=2, d_model=32, d_mlp=64, n_heads=4, out_dim=64).patch_dim
        1176
    """

    depth: int
    d_model: int
    d_mlp: int
    n_heads: int
    out_dim: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    in_channels: int = 3
    act: str = "silu"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


def check_grids(grid_thw: Tensor, n_patches: int, merge: int, what: str) -> None:
    """Raise a clear error when patches and grids disagree."""
    if grid_thw.ndim != 2 or grid_thw.shape[-1] != 3:
        raise ValueError(f"{what}_grid_thw must have shape [n_items, 3] (t, h, w); got {tuple(grid_thw.shape)}")
    if bool((grid_thw[:, 1:] % merge != 0).any()):
        raise ValueError(f"{what}_grid_thw heights and widths must be multiples of the merge size {merge}; got {grid_thw.tolist()}")
    expected = int(grid_thw.prod(-1).sum())
    if expected != n_patches:
        raise ValueError(
            f"{what} pixel values hold {n_patches} patches but {what}_grid_thw {grid_thw.tolist()} implies {expected}; "
            "pass the grids that the processor returned with these pixel values"
        )


def patch_positions(grid_thw: Int[Tensor, "item 3"], merge: int) -> Int[Tensor, "patch 2"]:
    """(row, column) of every patch, in the processor's merge-block order."""
    out = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h).view(h // merge, merge, 1, 1).expand(-1, -1, w // merge, merge)
        cols = torch.arange(w).view(1, 1, w // merge, merge).expand(h // merge, merge, -1, -1)
        # [h/m, m, w/m, m] -> merge blocks in row-major order, 2x2 members inside each
        rc = torch.stack((rows, cols), dim=-1).permute(0, 2, 1, 3, 4).reshape(-1, 2)
        out.append(rc.repeat(t, 1))
    return torch.cat(out)


def frame_segments(grid_thw: Int[Tensor, "item 3"], device=None) -> AttentionSegments:
    """One segment per frame group (the full-attention blocks)."""
    lengths = [h * w for t, h, w in grid_thw.tolist() for _ in range(t)]
    return AttentionSegments.from_lengths(lengths, device)


def window_segments(grid_thw: Int[Tensor, "item 3"], merge: int, window_units: int, device=None) -> AttentionSegments:
    """One segment per window of ``window_units x window_units`` merge blocks within a frame.

    Windows tile each frame from the top-left; edge windows are smaller. Inside a window the
    merge blocks are in row-major order, each with its ``merge**2`` patches.
    """
    groups, offset = [], 0
    unit = merge * merge
    for t, h, w in grid_thw.tolist():
        gh, gw = h // merge, w // merge
        n_h, n_w = -(-gh // window_units), -(-gw // window_units)
        blocks = torch.arange(t * gh * gw).view(t, gh, gw)
        padded = F.pad(blocks, (0, n_w * window_units - gw, 0, n_h * window_units - gh), value=-1)
        windows = padded.view(t, n_h, window_units, n_w, window_units).permute(0, 1, 3, 2, 4)
        windows = windows.reshape(-1, window_units * window_units)  # [window, member block]
        patches = (windows[..., None] * unit + torch.arange(unit)).flatten(1)  # [window, patch]
        real = (windows[..., None] >= 0).expand(-1, -1, unit).flatten(1)
        for members, keep in zip(patches, real):
            groups.append(members[keep] + offset)
        offset += t * h * w
    return AttentionSegments.from_groups(groups, device)


def window_order(windows: AttentionSegments) -> Int[Tensor, "patch"] | None:
    """The patches in window order (window by window, frame by frame) when every window is full,
    ``None`` otherwise.

    Attention within windows then needs no gather: each window is a run of consecutive rows. The
    full-attention blocks still gather each frame's keys in the processor's order (a softmax sums
    its keys in order, so another order would round differently), and every other step of a block
    works row by row: the blocks compute the same rows, bit for bit, in either order (tested). The
    tower runs in this order only while nothing watches its blocks, whose hooks see the
    processor's patch order.

    Example:
        >>> order = window_order(window_segments(torch.tensor([[1, 4, 8]]), merge=2, window_units=2))
        >>> order[:16].tolist()  # the first window: merge blocks 0, 1 (patches 0-7) and 4, 5 (patches 16-23)
        [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]
    """
    if windows.valid is not None:
        return None
    return windows.index.flatten()


@dataclass
class VisionPlan:
    """What the vision tower reads from its grids, on the device: the window and frame segments,
    each patch's (row, column), and, when the blocks run in window order, the order and its
    inverse (``None`` otherwise: the processor's order)."""

    windows: AttentionSegments
    full: AttentionSegments
    positions: Int[Tensor, "patch 2"]
    order: Int[Tensor, "patch"] | None
    back: Int[Tensor, "patch"] | None


def vision_plan(grid_thw: Int[Tensor, "item 3"], cfg: QwenVisionConfig, in_window_order: bool,
                device: torch.device) -> VisionPlan:
    """The tower's plan for these grids (``in_window_order``: run the blocks in window order where
    every window is full), built on the host once per grids and device (components/plan_cache.py).

    Example:
        >>> cfg = QwenVisionConfig(depth=1, d_model=32, d_mlp=64, n_heads=4, out_dim=64)
        >>> plan = vision_plan(torch.tensor([[1, 8, 8]]), cfg, True, torch.device("cpu"))
        >>> plan.windows.run_length, plan.order[:4].tolist()
        (64, [0, 1, 2, 3])
    """
    merge, window_units = cfg.spatial_merge_size, cfg.window_size // cfg.spatial_merge_size // cfg.patch_size
    key = ("qwen_vision", tuple(grid_thw.flatten().tolist()), merge, window_units, in_window_order, str(device))

    def build() -> VisionPlan:
        positions = patch_positions(grid_thw, merge)
        windows = window_segments(grid_thw, merge, window_units)
        order = window_order(windows) if in_window_order else None
        if order is None:
            return VisionPlan(windows.to(device), frame_segments(grid_thw, device), upload(positions, device), None, None)
        at = torch.argsort(order)  # a patch's row in window order
        frames = at.split([h * w for t, h, w in grid_thw.tolist() for _ in range(t)])
        return VisionPlan(
            AttentionSegments.from_lengths([windows.index.shape[1]] * windows.index.shape[0], device),
            AttentionSegments.from_groups(list(frames), device),  # each frame's keys in the processor's order
            upload(positions[order], device), upload(order, device), upload(at, device))

    return cached_plan(key, build)


class QwenVisionTower(nn.Module):
    """Conv3d patch embedding (as a linear map), 2D rotary, window/full attention blocks.

    Hooks: ``hook_patch_embed`` and ``hook_out`` ([1, patch, d_model]) around the usual block hooks.

    Example:
        >>> cfg = QwenVisionConfig(depth=2, d_model=32, d_mlp=64, n_heads=4, out_dim=64, fullatt_block_indexes=(1,))
        >>> tower = QwenVisionTower(cfg)
        >>> tower(torch.randn(16, cfg.patch_dim), torch.tensor([[1, 4, 4]])).shape
        torch.Size([1, 16, 32])
    """

    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.d_head % 4:
            raise ValueError(f"vision head dim {cfg.d_head} must be divisible by 4 for 2D rotary")
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.d_model, bias=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                RMSNorm(cfg.d_model, cfg.rms_norm_eps),
                Attention(cfg.d_model, cfg.n_heads, qkv_bias=True, out_bias=True),
                RMSNorm(cfg.d_model, cfg.rms_norm_eps),
                GatedMLP(cfg.d_model, cfg.d_mlp, act=cfg.act, bias=True),
            )
            for _ in range(cfg.depth)
        )
        self.hook_patch_embed = HookPoint()  # [1, patch, d_model]
        self.hook_out = HookPoint()  # [1, patch, d_model]

    def forward(
        self, pixel_values: Float[Tensor, "patch patch_dim"], grid_thw: Int[Tensor, "item 3"]
    ) -> Float[Tensor, "1 patch d_model"]:
        cfg = self.cfg
        if pixel_values.ndim != 2 or pixel_values.shape[-1] != cfg.patch_dim:
            raise ValueError(
                f"pixel values must be [n_patches, {cfg.patch_dim}] (channels x {cfg.temporal_patch_size} frames x "
                f"{cfg.patch_size}x{cfg.patch_size}); got {tuple(pixel_values.shape)}"
            )
        grid_thw = grid_thw.cpu().long()
        check_grids(grid_thw, pixel_values.shape[0], cfg.spatial_merge_size, "vision")
        device = pixel_values.device
        x = self.hook_patch_embed(self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))[None])
        plan = vision_plan(grid_thw, cfg, towers_unwatched(self.blocks), device)
        if plan.order is not None:  # the blocks run in window order: every window is a slice (see window_order)
            x = x.index_select(1, plan.order)
        rotary: Rotary = rotary_axial_2d(plan.positions, cfg.d_head, cfg.rope_theta)
        for i, block in enumerate(self.blocks):
            x = block(x, rotary=rotary, segments=plan.full if i in cfg.fullatt_block_indexes else plan.windows)
        if plan.order is not None:
            x = x.index_select(1, plan.back)  # back to the processor's patch order
        return self.hook_out(x)


class PatchMerger(nn.Module):
    """RMSNorm, concatenate each 2x2 merge block, two-layer GELU MLP into the LLM width.

    Hooks: ``ln_q.*``, ``hook_pre`` / ``hook_post`` ([1, token, d_merged]) and ``hook_out``
    ([1, token, out_dim]: one row per vision placeholder token).

    Example:
        >>> PatchMerger(32, 64)(torch.randn(1, 16, 32)).shape
        torch.Size([1, 4, 64])
    """

    def __init__(self, d_vision: int, out_dim: int, merge: int = 2, eps: float = 1e-6):
        super().__init__()
        self.d_merged = d_vision * merge * merge
        self.ln_q = RMSNorm(d_vision, eps)
        self.fc1 = nn.Linear(self.d_merged, self.d_merged)
        self.fc2 = nn.Linear(self.d_merged, out_dim)
        self.hook_pre = HookPoint()  # [1, token, d_merged]
        self.hook_post = HookPoint()  # [1, token, d_merged]
        self.hook_out = HookPoint()  # [1, token, out_dim]

    def forward(self, x: Float[Tensor, "1 patch d_vision"]) -> Float[Tensor, "1 token out_dim"]:
        merged = self.ln_q(x).reshape(1, -1, self.d_merged)
        return self.hook_out(self.fc2(self.hook_post(F.gelu(self.hook_pre(self.fc1(merged))))))
