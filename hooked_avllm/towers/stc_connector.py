"""VideoLLaMA2's spatial-temporal convolution connector (``stc_connector_v35``).

Per video: every frame's patch grid goes through ``s1`` (a RegNet stage, ``d_in -> d_model``);
``sampler`` (a Conv3d with kernel = stride = ``downsample``, no padding, then SiLU) merges
2 frames x 2 x 2 patches into one; ``s2`` (a RegNet stage, ``d_model -> d_model``) runs per merged
frame; ``readout`` (Linear, GELU, Linear) maps each merged patch to an LLM token. Tokens are laid
out time-major, then row, then column: 16 x 27 x 27 patches -> 8 x 13 x 13 = 1352 tokens (an odd
frame, row or column at the end is dropped by the unpadded convolution).

A RegNet stage is a chain of bottleneck blocks as timm's ``RegStage`` builds them for the
connector (``bottle_ratio=1``, ``group_size=1``, ``se_ratio=0.25``, SiLU, LayerNorm2d)::

    conv1 1x1 -> norm1 -> SiLU -> conv2 3x3 depthwise -> norm2 -> SiLU -> squeeze-excite
      -> conv3 1x1 -> norm3 -> (+ shortcut: identity, or 1x1 conv -> norm when channels change) -> SiLU

The squeeze-excite width is ``round(block_in_channels * se_ratio)``: it follows the block's input
width, not the width it acts on. The convolutions carry no bias; every norm is a LayerNorm over
channels with eps 1e-5 (timm replaces ``LayerNorm2d`` by ``LayerNormAct2d``, whose default it is).

Hooks inside the stages are channels-first, as the convolutions compute: ``[N, C, H, W]`` with
``N = video * frame`` in ``s1`` and ``video * frame'`` in ``s2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.norms import LayerNorm2d
from hooked_avllm.components.projectors import MLPProjector
from hooked_avllm.components.precision import exact_float32_convolutions


@dataclass
class STCConfig:
    """Shape of the STC connector. Defaults: VideoLLaMA2.1-7B (SigLIP 1152 -> Qwen2-7B 3584).

    Example:
        >>> STCConfig().output_grid(16, 27, 27)
        (8, 13, 13)
    """

    d_in: int = 1152
    d_model: int = 3584
    depth: int = 4  # bottleneck blocks per RegNet stage
    downsample: tuple[int, int, int] = (2, 2, 2)  # (time, height, width) kernel = stride of the sampler
    mlp_depth: int = 2  # Linear layers of the readout
    se_ratio: float = 0.25  # timm Bottleneck default
    norm_eps: float = 1e-5  # timm LayerNormAct2d default

    def __post_init__(self):
        self.downsample = tuple(int(k) for k in self.downsample)
        if len(self.downsample) != 3:
            raise ValueError(f"STC downsample must be (time, height, width); got {self.downsample}")
        if self.depth < 1:
            raise ValueError(f"the STC connector needs depth >= 1 bottleneck blocks per stage; got {self.depth}")

    def output_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(frames, rows, columns) of merged tokens from ``frames`` frames of ``height x width`` patches."""
        sizes = (frames, height, width)
        if any(n < k for n, k in zip(sizes, self.downsample)):
            raise ValueError(
                f"the STC sampler merges {self.downsample} (frames, rows, columns) and so needs at least that many; "
                f"got {sizes}. Repeat a single image to several frames first (VideoLLaMA2 expands images to num_frames)"
            )
        return tuple(n // k for n, k in zip(sizes, self.downsample))


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(SiLU(fc1(mean_hw(x)))))``, with 1x1 convolutions as timm stores them.

    Example:
        >>> import torch
        >>> SqueezeExcite(8, 2)(torch.randn(3, 8, 4, 4)).shape
        torch.Size([3, 8, 4, 4])
    """

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, kernel_size=1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, kernel_size=1)
        self.hook_gate = HookPoint()  # [N, C, 1, 1]: per-channel gate in (0, 1)

    def forward(self, x: Float[Tensor, "N C H W"]) -> Float[Tensor, "N C H W"]:
        squeezed = x.mean((2, 3), keepdim=True)
        return x * self.hook_gate(self.fc2(F.silu(self.fc1(squeezed))).sigmoid())


class RegNetBottleneck(nn.Module):
    """One RegNet bottleneck block (bottleneck ratio 1, depthwise 3x3, squeeze-excite, SiLU).

    Hooks ([N, C, H, W], C = ``out_channels``): ``hook_conv1`` and ``hook_conv2`` (after their
    SiLU), ``se.hook_gate`` ([N, C, 1, 1]), ``hook_conv3`` (after norm3, the residual branch),
    ``hook_shortcut`` (the skip path), ``hook_out`` (after the final SiLU).

    Example:
        >>> import torch
        >>> RegNetBottleneck(8, 16)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 16, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, se_ratio: float = 0.25, eps: float = 1e-5):
        super().__init__()
        c = out_channels  # bottleneck width = out_channels * bottle_ratio(1)
        self.conv1 = nn.Conv2d(in_channels, c, kernel_size=1, bias=False)
        self.norm1 = LayerNorm2d(c, eps)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c, bias=False)  # group size 1
        self.norm2 = LayerNorm2d(c, eps)
        self.se = SqueezeExcite(c, round(in_channels * se_ratio))
        self.conv3 = nn.Conv2d(c, out_channels, kernel_size=1, bias=False)
        self.norm3 = LayerNorm2d(out_channels, eps)
        if in_channels != out_channels:
            self.shortcut_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
            self.shortcut_norm = LayerNorm2d(out_channels, eps)
        else:
            self.shortcut_conv = self.shortcut_norm = None
        self.hook_conv1 = HookPoint()  # [N, C, H, W]
        self.hook_conv2 = HookPoint()  # [N, C, H, W]
        self.hook_conv3 = HookPoint()  # [N, C, H, W], before the residual add
        self.hook_shortcut = HookPoint()  # [N, C, H, W]
        self.hook_out = HookPoint()  # [N, C, H, W]

    def forward(self, x: Float[Tensor, "N C_in H W"]) -> Float[Tensor, "N C H W"]:
        shortcut = x if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(x))
        h = self.hook_conv1(F.silu(self.norm1(self.conv1(x))))
        h = self.hook_conv2(F.silu(self.norm2(self.conv2(h))))
        h = self.hook_conv3(self.norm3(self.conv3(self.se(h))))
        return self.hook_out(F.silu(h + self.hook_shortcut(shortcut)))


class RegNetStage(nn.Module):
    """``depth`` bottleneck blocks, the first mapping ``in_channels -> out_channels`` (stride 1).

    Example:
        >>> import torch
        >>> stage = RegNetStage(2, 8, 16)
        >>> stage(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 16, 5, 5])
    """

    def __init__(self, depth: int, in_channels: int, out_channels: int, se_ratio: float = 0.25, eps: float = 1e-5):
        super().__init__()
        self.blocks = nn.ModuleList(
            RegNetBottleneck(in_channels if i == 0 else out_channels, out_channels, se_ratio, eps) for i in range(depth)
        )

    def forward(self, x: Float[Tensor, "N C_in H W"]) -> Float[Tensor, "N C H W"]:
        for block in self.blocks:
            x = block(x)
        return x


class STCConnector(nn.Module):
    """Frames' patch features -> merged video tokens in LLM space.

    Hooks (``vision_proj.`` prefix in the full model): ``s1.blocks.{i}.*`` and ``hook_s1``
    ([video * frame, d_model, h, w]), ``hook_sampler`` ([video, d_model, frame', h', w'], after
    SiLU), ``s2.blocks.{i}.*`` and ``hook_s2`` ([video * frame', d_model, h', w']),
    ``readout.*`` and ``hook_out`` ([video, token, d_model], tokens in (frame', h', w') order).

    Example:
        >>> import torch
        >>> stc = STCConnector(STCConfig(d_in=8, d_model=16, depth=1))
        >>> stc(torch.randn(2, 4, 25, 8)).shape  # 2 videos, 4 frames of 5x5 patches -> 2x2x2 tokens
        torch.Size([2, 8, 16])
    """

    def __init__(self, cfg: STCConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.s1 = RegNetStage(cfg.depth, cfg.d_in, d, cfg.se_ratio, cfg.norm_eps)
        self.sampler = nn.Conv3d(d, d, kernel_size=cfg.downsample, stride=cfg.downsample)
        self.s2 = RegNetStage(cfg.depth, d, d, cfg.se_ratio, cfg.norm_eps)
        self.readout = MLPProjector(d, d, depth=cfg.mlp_depth, act="gelu")
        self.hook_s1 = HookPoint()  # [video * frame, d_model, h, w]
        self.hook_sampler = HookPoint()  # [video, d_model, frame', h', w']
        self.hook_s2 = HookPoint()  # [video * frame', d_model, h', w']
        self.hook_out = HookPoint()  # [video, token, d_model], token = (frame', h', w') row-major

    def output_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(frames, rows, columns) of the tokens made from ``frames`` frames of ``height x width`` patches.

        Example:
            >>> STCConnector(STCConfig(d_in=8, d_model=16, depth=1)).output_grid(3, 7, 7)
            (1, 3, 3)
        """
        return self.cfg.output_grid(frames, height, width)

    def forward(self, frames: Float[Tensor, "video frame patch d_in"]) -> Float[Tensor, "video token d_model"]:
        """Merge each video's frame features (row-major square patch grids, as the SigLIP tower
        returns them reshaped to [video, frame, patch, d_in])."""
        if frames.ndim != 4 or frames.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"STC connector input must be [video, frame, patch, {self.cfg.d_in}]; got {tuple(frames.shape)}"
            )
        n_video, n_frame, n_patch, d_in = frames.shape
        side = round(n_patch**0.5)
        if side * side != n_patch:
            raise ValueError(f"STC connector needs a square patch grid per frame; got {n_patch} patches")
        t, h, w = self.output_grid(n_frame, side, side)
        d = self.cfg.d_model
        dtype = self.sampler.weight.dtype
        with exact_float32_convolutions(dtype):
            x = frames.to(dtype).reshape(n_video * n_frame, side, side, d_in).permute(0, 3, 1, 2)
            x = self.hook_s1(self.s1(x))  # [video * frame, d, side, side]
            x = x.reshape(n_video, n_frame, d, side, side).transpose(1, 2)  # [video, d, frame, side, side]
            x = self.hook_sampler(F.silu(self.sampler(x)))  # [video, d, t, h, w]
            x = x.transpose(1, 2).reshape(n_video * t, d, h, w)
            x = self.hook_s2(self.s2(x))
        tokens = x.reshape(n_video, t, d, h, w).permute(0, 1, 3, 4, 2).reshape(n_video, t * h * w, d)
        return self.hook_out(self.readout(tokens))
