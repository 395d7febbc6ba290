"""The SigLIP vision tower (``google/siglip-so400m-patch14-384`` in VideoLLaMA2.1), frame by frame.

Each frame is cut into ``patch_size`` squares by a strided convolution (with bias), gets a learned
position embedding per patch, and runs through pre-LN blocks (LayerNorm, attention with q/k/v and
output biases, ``fc1 -> gelu_pytorch_tanh -> fc2``) that attend over the whole frame. Frames are
the batch dimension, so every hook is ``[frame, ...]`` and attention never crosses frames.

The tower returns the hidden state that the model selects (``mm_vision_select_layer``: -2, the
penultimate layer's output, no ``post_layernorm``, every patch), so only the layers up to it are
built: 26 of so400m's 27.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import Attention, LayerNorm, PlainMLP, TransformerBlock
from hooked_avllm.components.precision import exact_float32_convolutions

# transformers' SiglipVisionConfig defaults: a config.json leaves out what equals them
HF_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


def _square(value, what: str) -> int:
    """An int from an int or a [h, w] pair (transformers 5.x allows both) that must be square."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"SigLIP {what} must be square; got {list(value)}")
        value = value[0]
    return int(value)


@dataclass
class SiglipConfig:
    """Shape of a SigLIP vision tower. Defaults: ``google/siglip-so400m-patch14-384``.

    ``n_layers`` is the checkpoint's depth; ``select_layer`` indexes transformers'
    ``hidden_states`` (entry 0 is the embeddings, entry ``l + 1`` the output of layer ``l``), so
    -2 is the penultimate layer's output and ``n_layers_run`` = 26 of 27.

    Example:
        >>> cfg = SiglipConfig()
        >>> cfg.grid, cfg.n_patches, cfg.n_layers_run
        (27, 729, 26)
    """

    image_size: int = 384
    patch_size: int = 14
    d_model: int = 1152
    d_mlp: int = 4304
    n_layers: int = 27
    n_heads: int = 16
    layer_norm_eps: float = 1e-6
    act: str = "gelu_pytorch_tanh"
    select_layer: int = -2
    in_channels: int = 3

    def __post_init__(self):
        if self.image_size < self.patch_size:
            raise ValueError(f"SigLIP image_size {self.image_size} is smaller than patch_size {self.patch_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"SigLIP d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if not -(self.n_layers + 1) <= self.select_layer <= self.n_layers:
            raise ValueError(
                f"select_layer {self.select_layer} does not index the {self.n_layers + 1} hidden states of a "
                f"{self.n_layers}-layer SigLIP tower (use -{self.n_layers + 1}..{self.n_layers}; -2 is the penultimate layer)"
            )

    @classmethod
    def from_hf(cls, vision_config: dict, select_layer: int = -2) -> SiglipConfig:
        """From a transformers ``SiglipVisionConfig`` dict (missing keys take transformers' defaults)
        and the model's ``mm_vision_select_layer``.

        Example:
            >>> SiglipConfig.from_hf({"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
            ...                       "num_attention_heads": 4, "image_size": 56, "patch_size": 14}).n_layers_run
            2
        """
        v = {**HF_DEFAULTS, **{k: x for k, x in vision_config.items() if x is not None}}
        return cls(
            image_size=_square(v["image_size"], "image_size"),
            patch_size=_square(v["patch_size"], "patch_size"),
            d_model=v["hidden_size"],
            d_mlp=v["intermediate_size"],
            n_layers=v["num_hidden_layers"],
            n_heads=v["num_attention_heads"],
            layer_norm_eps=float(v["layer_norm_eps"]),
            act=v["hidden_act"],
            select_layer=select_layer,
            in_channels=v["num_channels"],
        )

    @property
    def n_layers_run(self) -> int:
        """Layers needed to reach the selected hidden state."""
        return self.select_layer if self.select_layer >= 0 else self.n_layers + 1 + self.select_layer

    @property
    def grid(self) -> int:
        """Patches per side: 27 for 384 / 14 (the strided convolution drops the last 6 pixels)."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid


class SiglipVisionTower(nn.Module):
    """SigLIP ViT up to the selected hidden state, frames as the batch.

    Hooks (``vision.`` prefix in the full model): ``hook_patch_embed`` ([frame, patch, d_model],
    after the patch convolution, before positions), ``hook_embed`` ([frame, patch, d_model], with
    positions), the block hooks ``blocks.{l}.*`` ([frame, patch, ...]; attention patterns
    [frame, head, patch, patch]) and ``hook_out`` ([frame, patch, d_model]: the selected hidden
    state). Patches are in row-major order: patch ``i`` is row ``i // grid``, column ``i % grid``.

    Example:
        >>> cfg = SiglipConfig(image_size=28, patch_size=14, d_model=16, d_mlp=32, n_layers=3, n_heads=2)
        >>> tower = SiglipVisionTower(cfg)
        >>> len(tower.blocks), tower(torch.randn(5, 3, 28, 28)).shape
        (2, torch.Size([5, 4, 16]))
    """

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.n_patches, d))  # [patch, d_model], row-major
        self.blocks = nn.ModuleList(
            TransformerBlock(
                LayerNorm(d, cfg.layer_norm_eps),
                Attention(d, cfg.n_heads, qkv_bias=True, out_bias=True),
                LayerNorm(d, cfg.layer_norm_eps),
                PlainMLP(d, cfg.d_mlp, act=cfg.act),
            )
            for _ in range(cfg.n_layers_run)
        )
        self.hook_patch_embed = HookPoint()  # [frame, patch, d_model], before positions
        self.hook_embed = HookPoint()  # [frame, patch, d_model], with positions
        self.hook_out = HookPoint()  # [frame, patch, d_model], the selected hidden state

    def forward(self, pixel_values: Float[Tensor, "frame 3 height width"]) -> Float[Tensor, "frame patch d_model"]:
        """Encode frames given as normalised pixels (the SigLIP image processor's output)."""
        cfg = self.cfg
        if pixel_values.ndim != 4 or pixel_values.shape[1] != cfg.in_channels:
            raise ValueError(
                f"SigLIP pixel values must be [frames, {cfg.in_channels}, height, width]; got {tuple(pixel_values.shape)} "
                "(flatten videos to frames first: [video, frame, c, h, w] -> [video * frame, c, h, w])"
            )
        height, width = pixel_values.shape[-2:]
        if (height, width) != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"SigLIP tower expects {cfg.image_size}x{cfg.image_size} frames (its position embedding has "
                f"{cfg.grid}x{cfg.grid} entries); got {height}x{width}. Resize the frames to "
                f"{cfg.image_size}x{cfg.image_size} first, as the SigLIP image processor does (the model never "
                "interpolates its positions)"
            )
        dtype = self.patch_embed.weight.dtype
        with exact_float32_convolutions(dtype):
            patches = self.patch_embed(pixel_values.to(dtype))  # [frame, d_model, grid, grid]
        x = self.hook_patch_embed(patches.flatten(2).transpose(1, 2))  # [frame, patch, d_model]
        x = self.hook_embed(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.hook_out(x)
