"""BEATs (microsoft/unilm ``beats/``), the audio tower of VideoLLaMA2.1-AV.

The forward pass, on raw 128-bin Kaldi fbank (:func:`hooked_avllm.inputs.fbank.beats_fbank`):

1. ``(fbank - fbank_mean) / (2 * fbank_std)``;
2. ``patch_embed``: a 16x16 Conv2d with stride 16 over (frame, mel), tokens flattened time-major
   (``token = t * freq_patches + f``; frames past the last whole patch are dropped), then
   ``ln_patch`` and ``patch_proj`` (embed_dim -> d_model);
3. ``pos_conv``: a grouped, weight-normed Conv1d over tokens (in that flattened order), the last
   output dropped for an even kernel, GELU, added to the stream;
4. ``ln_encoder`` before the blocks (post-LN; with ``layer_norm_first`` it comes after them);
5. post-LN DeepNorm blocks ``x = ln1(a * x + attn(x)); x = ln2(a * x + mlp(x))`` with
   ``a = (2 * n_layers) ** 0.25``, whose attention adds a gated relative position bias shared by
   every layer (:mod:`hooked_avllm.components.relative_position`).

A padding mask (True = padding frame) becomes a token mask as the reference does it: frames are cut
to a multiple of the token count and grouped in consecutive runs of ``frames // tokens`` (two, for
most lengths), and a token is padding when its whole run is. This grouping follows the frame
order, not the time-major patch grid: with padding at the end, fully padded patches are masked and
the patch that straddles the boundary is masked in its upper frequency patches only. Padding tokens
are zeroed before ``pos_conv`` and no query attends to them.

Example:
    >>> cfg = BEATsConfig(n_layers=1, d_model=32, d_mlp=48, n_heads=4, embed_dim=16, conv_pos=8,
    ...                   conv_pos_groups=4, num_buckets=32, max_distance=64)
    >>> tower = BEATsTower(cfg)
    >>> tower(torch.randn(1, 100, 128)).shape  # 100 frames -> 6 time x 8 freq patches
    torch.Size([1, 48, 32])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import LayerNorm, PlainMLP, PostNormBlock, TransformerBlock
from hooked_avllm.components.relative_position import (
    GatedRelativePositionAttention,
    RelativePositionBias,
)
from hooked_avllm.components.precision import exact_float32_convolutions

FRAME_SHIFT_SECONDS = 0.010  # BEATs' fbank hop

# official ``activation_fn`` -> our activation name (components.mlp)
ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_pytorch_tanh", "gelu_fast": "gelu_pytorch_tanh"}

# official cfg name -> our field name
OFFICIAL_NAMES = {
    "encoder_layers": "n_layers",
    "encoder_embed_dim": "d_model",
    "encoder_ffn_embed_dim": "d_mlp",
    "encoder_attention_heads": "n_heads",
    "embed_dim": "embed_dim",
    "input_patch_size": "input_patch_size",
    "conv_bias": "conv_bias",
    "activation_fn": "act",
    "layer_norm_first": "layer_norm_first",
    "deep_norm": "deep_norm",
    "conv_pos": "conv_pos",
    "conv_pos_groups": "conv_pos_groups",
    "relative_position_embedding": "relative_position_embedding",
    "num_buckets": "num_buckets",
    "max_distance": "max_distance",
    "gru_rel_pos": "gru_rel_pos",
}


@dataclass
class BEATsConfig:
    """BEATs' shape and options; the defaults are the iter3+ checkpoints' (and VideoLLaMA2's code
    defaults, which its ``audio_tower.bin`` relies on, having no stored config).

    Example:
        >>> cfg = BEATsConfig()
        >>> cfg.token_grid(2998), cfg.seconds_per_time_patch  # 30 s of fbank
        ((187, 8), 0.16)
    """

    n_layers: int = 12
    d_model: int = 768
    d_mlp: int = 3072
    n_heads: int = 12
    embed_dim: int = 512
    input_patch_size: int = 16
    conv_bias: bool = False
    act: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    n_mels: int = 128
    fbank_mean: float = 15.41663
    fbank_std: float = 6.55582
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.input_patch_size <= 0:
            raise ValueError(f"input_patch_size must be positive; got {self.input_patch_size} (BEATs checkpoints use 16)")
        if self.n_mels < self.input_patch_size:
            raise ValueError(f"n_mels={self.n_mels} is smaller than one patch (input_patch_size={self.input_patch_size})")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} (encoder_embed_dim) must be a multiple of n_heads={self.n_heads}")
        if self.d_model % self.conv_pos_groups:
            raise ValueError(f"d_model={self.d_model} must be a multiple of conv_pos_groups={self.conv_pos_groups}")
        if self.deep_norm and self.layer_norm_first:
            raise ValueError("deep_norm and layer_norm_first exclude each other (DeepNorm is post-LN); set one to False")
        if self.act not in ACTIVATIONS:
            raise NotImplementedError(
                f"act (the official activation_fn) {self.act!r} is not supported; supported: {sorted(ACTIVATIONS)}"
            )

    @classmethod
    def from_official(cls, cfg: dict) -> "BEATsConfig":
        """Read an official checkpoint's ``cfg`` dict. Keys that do not shape the forward pass
        (dropouts, layer drop, ``finetuned_model``, ``predictor_*``, ...) are ignored; missing keys
        take this class's defaults (the iter3+ values; note the official code's own defaults differ:
        no DeepNorm, no relative positions, ``max_distance`` 1280).

        Example:
            >>> cfg = BEATsConfig.from_official({"encoder_layers": 2, "encoder_attention_heads": 4, "dropout": 0.1})
            >>> cfg.n_layers, cfg.n_heads, cfg.d_model
            (2, 4, 768)
        """
        if not isinstance(cfg, dict):
            raise ValueError(f"the BEATs cfg must be a dict of official field names; got {type(cfg).__name__}")
        return cls(**{ours: cfg[official] for official, ours in OFFICIAL_NAMES.items() if official in cfg})

    @property
    def freq_patches(self) -> int:
        return self.n_mels // self.input_patch_size

    def token_grid(self, n_frames: int) -> tuple[int, int]:
        """``(time_patches, freq_patches)`` for ``n_frames`` fbank frames; tokens are flattened
        time-major, ``token = t * freq_patches + f``.

        Example:
            >>> BEATsConfig().token_grid(100)
            (6, 8)
        """
        if n_frames < self.input_patch_size:
            raise ValueError(
                f"{n_frames} fbank frames are fewer than one patch ({self.input_patch_size} frames, "
                f"{self.input_patch_size * FRAME_SHIFT_SECONDS:g} s); pass a longer clip"
            )
        return n_frames // self.input_patch_size, self.freq_patches

    @property
    def seconds_per_time_patch(self) -> float:
        """Audio time one time patch covers (10 ms fbank frames x ``input_patch_size``)."""
        return round(self.input_patch_size * FRAME_SHIFT_SECONDS, 9)

    @property
    def residual_scale(self) -> float:
        """DeepNorm's ``a`` on the residual branch (1 without DeepNorm)."""
        return math.pow(2 * self.n_layers, 0.25) if self.deep_norm else 1.0


def token_padding_mask(padding_mask: Bool[Tensor, "batch frame"], n_tokens: int) -> Bool[Tensor, "batch token"]:
    """Frame padding -> token padding, the reference's way (see the module docstring).

    Example:
        >>> frames = torch.arange(40)[None] >= 30  # 30 real frames of 40 -> 16 tokens
        >>> token_padding_mask(frames, 16).int().tolist()
        [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]]
    """
    usable = padding_mask.shape[1] - padding_mask.shape[1] % n_tokens
    return padding_mask[:, :usable].reshape(padding_mask.shape[0], n_tokens, -1).all(-1)


class ConvPositionEmbedding(nn.Module):
    """Grouped Conv1d over tokens with weight norm ``weight = weight_g * weight_v / |weight_v|``
    (the norm over every axis but the kernel's, per kernel tap), "same" padding that drops the
    last output for an even kernel, then GELU.

    Example:
        >>> ConvPositionEmbedding(d_model=16, kernel_size=8, groups=4)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, d_model: int, kernel_size: int, groups: int):
        super().__init__()
        self.kernel_size, self.groups = kernel_size, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.randn(d_model, d_model // groups, kernel_size) / math.sqrt(kernel_size * d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    @property
    def weight(self) -> Float[Tensor, "d_model d_group kernel"]:
        """The convolution weight in the parameters' dtype (computed in float32 or wider)."""
        return self._weight_wide().to(self.weight_v.dtype)

    @property
    def _wide(self) -> torch.dtype:
        """float32 for half-precision weights, else the weights' own dtype (float64 stays float64)."""
        return torch.promote_types(self.weight_v.dtype, torch.float32)

    def _weight_wide(self) -> Tensor:
        v = self.weight_v.to(self._wide)
        norm = v.square().sum(dim=(0, 1), keepdim=True).sqrt()  # [1, 1, kernel]
        return self.weight_g.to(self._wide) * v / norm

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        # float32 even for bf16/fp16 inputs: more exact, and cuDNN's grouped bf16 kernels for this
        # shape run ~12x slower than its float32 ones on an H200
        x32 = x.transpose(1, 2).to(self._wide).contiguous()  # [batch, d_model, pos]
        y = F.conv1d(x32, self._weight_wide(), self.bias.to(self._wide), padding=self.kernel_size // 2, groups=self.groups)
        if self.kernel_size % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2).to(x.dtype)


class BEATsTower(nn.Module):
    """BEATs on raw fbank: ``[batch, frame, n_mels] -> [batch, token, d_model]``.

    Hooks: ``hook_fbank`` ([batch, frame, n_mels], normalised), ``hook_patch_embed`` ([batch,
    token, embed_dim], the patch conv flattened), ``hook_patch_proj`` ([batch, token, d_model],
    after ``ln_patch`` and ``patch_proj``), ``hook_conv_pos`` ([batch, token, d_model], the
    convolutional position term added to the stream), ``hook_embed`` ([batch, token, d_model], the
    blocks' input), the block and attention hooks (``blocks.{l}.attn.hook_rel_pos_bias`` [1,
    head, token, token] and ``blocks.{l}.attn.hook_rel_pos_gate`` [batch, head, token, 1] among
    them), and ``hook_out`` ([batch, token, d_model]).

    Example:
        >>> cfg = BEATsConfig(n_layers=1, d_model=32, d_mlp=48, n_heads=4, embed_dim=16, conv_pos=8,
        ...                   conv_pos_groups=4, num_buckets=32, max_distance=64)
        >>> BEATsTower(cfg)(torch.randn(2, 37, 128)).shape  # 37 frames -> 2 x 8 patches
        torch.Size([2, 16, 32])
    """

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.d_model, cfg.input_patch_size
        self.patch_embed = nn.Conv2d(1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias)
        self.ln_patch = LayerNorm(cfg.embed_dim, cfg.layer_norm_eps)
        self.patch_proj = nn.Linear(cfg.embed_dim, d) if cfg.embed_dim != d else nn.Identity()
        self.pos_conv = ConvPositionEmbedding(d, cfg.conv_pos, cfg.conv_pos_groups)
        self.ln_encoder = LayerNorm(d, cfg.layer_norm_eps)  # before the blocks (post-LN) or after them
        self.rel_pos = (
            RelativePositionBias(cfg.num_buckets, cfg.max_distance, cfg.n_heads) if cfg.relative_position_embedding else None
        )
        self.blocks = nn.ModuleList(self._block() for _ in range(cfg.n_layers))
        self.hook_fbank = HookPoint()  # [batch, frame, n_mels], normalised
        self.hook_patch_embed = HookPoint()  # [batch, token, embed_dim]
        self.hook_patch_proj = HookPoint()  # [batch, token, d_model]
        self.hook_conv_pos = HookPoint()  # [batch, token, d_model]
        self.hook_embed = HookPoint()  # [batch, token, d_model]
        self.hook_out = HookPoint()  # [batch, token, d_model]

    def _block(self) -> nn.Module:
        cfg = self.cfg
        attn = GatedRelativePositionAttention(cfg.d_model, cfg.n_heads, gated=cfg.relative_position_embedding and cfg.gru_rel_pos)
        mlp = PlainMLP(cfg.d_model, cfg.d_mlp, act=ACTIVATIONS[cfg.act])
        ln1, ln2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps), LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        if cfg.layer_norm_first:
            return TransformerBlock(ln1, attn, ln2, mlp)
        return PostNormBlock(attn, ln1, mlp, ln2, residual_scale=cfg.residual_scale)

    def forward(
        self, fbank: Float[Tensor, "batch frame n_mels"], padding_mask: Bool[Tensor, "batch frame"] | None = None
    ) -> Float[Tensor, "batch token d_model"]:
        """Encode raw Kaldi fbank; ``padding_mask`` is True on padding frames (a ``[batch, frame,
        n_mels]`` mask, as VideoLLaMA2 passes, counts a frame as padding when all its bins are)."""
        cfg = self.cfg
        if fbank.ndim != 3 or fbank.shape[-1] != cfg.n_mels:
            raise ValueError(f"fbank must be [batch, frame, {cfg.n_mels}]; got shape {tuple(fbank.shape)}")
        time_patches, freq_patches = cfg.token_grid(fbank.shape[1])
        if padding_mask is not None:
            if padding_mask.ndim == 3:
                padding_mask = padding_mask.all(-1)
            if tuple(padding_mask.shape) != tuple(fbank.shape[:2]):
                raise ValueError(
                    f"padding_mask must be [batch, frame] = {tuple(fbank.shape[:2])} (True on padding frames); "
                    f"got shape {tuple(padding_mask.shape)}"
                )
        dtype = self.patch_embed.weight.dtype

        wide = torch.promote_types(dtype, torch.float32)
        x = self.hook_fbank(((fbank.to(wide) - cfg.fbank_mean) / (2 * cfg.fbank_std)).to(dtype))
        with exact_float32_convolutions(dtype):
            patches = self.patch_embed(x[:, None])  # [batch, embed_dim, time_patch, freq_patch]
        x = self.hook_patch_embed(patches.flatten(2).transpose(1, 2))  # token = t * freq_patches + f
        x = self.hook_patch_proj(self.patch_proj(self.ln_patch(x)))

        key_padding = None
        if padding_mask is not None:
            key_padding = token_padding_mask(padding_mask.to(x.device).bool(), time_patches * freq_patches)
            if bool(key_padding.any()):
                x = x.masked_fill(key_padding[..., None], 0.0)
            else:
                key_padding = None  # nothing to mask: the plain path
        with exact_float32_convolutions(dtype):
            x = x + self.hook_conv_pos(self.pos_conv(x))
        if not cfg.layer_norm_first:
            x = self.ln_encoder(x)
        x = self.hook_embed(x)

        rel_pos_bias = self.rel_pos(x.shape[1]).to(x.dtype) if self.rel_pos is not None else None
        for block in self.blocks:
            x = block(x, rel_pos_bias=rel_pos_bias, key_padding=key_padding)
        if cfg.layer_norm_first:
            x = self.ln_encoder(x)
        return self.hook_out(x)
