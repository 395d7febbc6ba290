"""The navit SigLIP vision tower of MiniCPM-V 2.6 / MiniCPM-o 2.6 (``vpm``): SigLIP-so400m at any
slice size, every slice in one packed row.

Input contract: ``pixel_values`` ``[patch, 3 * p * p]`` hold every slice's patches back to back,
slice after slice; inside a slice patches are row-major over its ``(h, w)`` patch grid
(``tgt_sizes[s] = (h, w)``), each flattened channel-major as ``(c, py, px)`` -- exactly what a
``Conv2d(3, d, p, stride=p)`` sees, so the patch embedding is that convolution's weight reshaped
into a linear map. :func:`patch_rows` makes the rows from one normalised slice ``[3, H, W]``;
:func:`patch_rows_from_strip` from the released processor's ``reshape_by_patch`` output
``[3, p, L * p]``.

The forward:

1. patch embedding (linear, with bias) -> ``hook_patch_embed``;
2. position embedding: every slice, whatever its size, is mapped onto the square table of
   ``grid x grid`` learned rows (``grid = image_size // patch_size`` = 70) by
   :func:`navit_position_ids` -> ``hook_pos_embed``; the sum is ``hook_embed``;
3. pre-LN blocks (LayerNorm, attention with q/k/v/out biases, ``fc1 -> gelu_pytorch_tanh -> fc2``)
   attending block-diagonally: a patch sees only the patches of its own slice;
4. the final ``ln_post`` (the released ``post_layernorm``; MiniCPM uses ``last_hidden_state``)
   -> ``hook_out``.

Every hook is on the packed row ``[1, patch, ...]``, so position ``i`` of any hook is patch ``i``
of the input. Attention patterns are ``[slice, head, patch_in_slice, patch_in_slice]`` (short
slices padded; padded keys hold probability 0), or ``[1, head, patch, patch]`` for one slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import Attention, AttentionSegments, LayerNorm, PlainMLP, TransformerBlock

# transformers' SiglipVisionConfig defaults: the released vision_config leaves out what equals them
HF_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


def _one_int(value, what: str) -> int:
    """An int from an int or a square [h, w] pair (transformers 5.x types sizes as either)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"navit SigLIP {what} must be square; got {list(value)}")
        value = value[0]
    return int(value)


@dataclass
class NavitSiglipConfig:
    """Shape of a navit SigLIP tower. Defaults: MiniCPM-o 2.6's ``vpm`` (so400m, 27 layers).

    ``n_layers`` is the number of layers built and loaded (the released ``num_hidden_layers``, one
    fewer when the model sets ``drop_vision_last_layer``). ``grid`` = ``image_size // patch_size``
    is the side of the learned position table (70 for 980 / 14).

    Example:
        >>> cfg = NavitSiglipConfig()
        >>> cfg.grid, cfg.patch_dim, cfg.d_head
        (70, 588, 72)
    """

    image_size: int = 980
    patch_size: int = 14
    d_model: int = 1152
    d_mlp: int = 4304
    n_layers: int = 27
    n_heads: int = 16
    layer_norm_eps: float = 1e-6
    act: str = "gelu_pytorch_tanh"
    in_channels: int = 3

    def __post_init__(self):
        if self.image_size < self.patch_size:
            raise ValueError(f"navit SigLIP image_size {self.image_size} is smaller than patch_size {self.patch_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"navit SigLIP d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if self.n_layers < 1:
            raise ValueError(f"navit SigLIP needs at least one layer; got n_layers={self.n_layers}")

    @classmethod
    def from_hf(cls, vision_config: dict, drop_last_layer: bool = False) -> NavitSiglipConfig:
        """From the released ``vision_config`` dict (transformers' SigLIP keys; missing keys take
        transformers' defaults: ``gelu_pytorch_tanh``, eps 1e-6, 3 channels) and the model's
        ``drop_vision_last_layer``.

        Example:
            >>> NavitSiglipConfig.from_hf({"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304,
            ...     "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14}) == NavitSiglipConfig()
            True
            >>> NavitSiglipConfig.from_hf({"num_hidden_layers": 27}, drop_last_layer=True).n_layers
            26
        """
        v = {**HF_DEFAULTS, **{k: x for k, x in vision_config.items() if x is not None}}
        n_layers = int(v["num_hidden_layers"]) - (1 if drop_last_layer else 0)
        return cls(
            image_size=_one_int(v["image_size"], "image_size"),
            patch_size=_one_int(v["patch_size"], "patch_size"),
            d_model=int(v["hidden_size"]),
            d_mlp=int(v["intermediate_size"]),
            n_layers=n_layers,
            n_heads=int(v["num_attention_heads"]),
            layer_norm_eps=float(v["layer_norm_eps"]),
            act=v["hidden_act"],
            in_channels=int(v["num_channels"]),
        )

    @property
    def grid(self) -> int:
        """Side of the learned position table: 70 for 980 / 14."""
        return self.image_size // self.patch_size

    @property
    def patch_dim(self) -> int:
        """Width of one input row: ``in_channels * patch_size**2`` (588)."""
        return self.in_channels * self.patch_size * self.patch_size

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@lru_cache(maxsize=1024)
def _side_buckets(n: int, grid: int) -> Tensor:
    """Bucket of each of the ``n`` fractional coordinates ``0, 1/n, 2/n, ...`` of one side (cached;
    callers never see this tensor, only arithmetic on it).

    The step is ``1 / n`` rounded to float32 (the released code divides by an int32 ``tgt_sizes``
    entry) and the coordinates come from ``torch.arange`` on the CPU, as in the released code (which
    passes no device): its values are not ``i * step`` rounded once (in float32 or float64) for some
    sides, e.g. 49, so we call the same operation instead of re-deriving it. The CPU is explicit, so a
    default-device context (``torch.set_default_device("cuda")``) cannot change the ids.
    """
    with torch.inference_mode(False):  # a plain tensor even when first asked for under inference_mode
        boundaries = torch.arange(1 / grid, 1.0, 1 / grid, dtype=torch.float32, device="cpu")
        step = float(torch.tensor(1.0, dtype=torch.float32) / n)
        coords = torch.arange(0, 1 - 1e-6, step, dtype=torch.float32, device="cpu")
        if len(coords) != n:  # pragma: no cover - holds for every side a processor produces
            raise ValueError(f"navit position ids: {len(coords)} coordinates for a side of {n} patches")
        return torch.bucketize(coords, boundaries, right=True)


def navit_position_ids(h: int, w: int, grid: int = 70) -> Int[Tensor, "patch"]:
    """Rows of the ``grid x grid`` position table for an ``h x w`` slice, row-major (CPU, int64).

    Side coordinates ``0, 1/h, 2/h, ...`` (float32, see :func:`_side_buckets`) fall into the
    buckets cut at ``1/grid, 2/grid, ...`` (``bucketize(right=True)``); a patch's id is
    ``row_bucket * grid + col_bucket``. Sides above ``grid`` share buckets. Float-sensitive: the
    ``arange(h) / h`` formulation (transformers' ``get_vision_nearest_position_ids``) and
    transformers 5.x's Idefics2 differ from this rule for some sides (Idefics2: 49, 58, 77, 86, 98,
    100, 110, 122, 135 up to 140).

    Example:
        >>> navit_position_ids(2, 3, grid=70).tolist()
        [0, 23, 46, 2450, 2473, 2496]
        >>> navit_position_ids(2, 2, grid=4).tolist()
        [0, 2, 8, 10]
    """
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"navit position ids need a slice of at least 1x1 patches; got h={h}, w={w}")
    rows, cols = _side_buckets(int(h), int(grid)), _side_buckets(int(w), int(grid))
    return (rows[:, None] * grid + cols).flatten()


def patch_rows(slice_pixels: Float[Tensor, "3 H W"], patch_size: int = 14) -> Float[Tensor, "patch patch_dim"]:
    """One normalised slice ``[c, H, W]`` -> its patches as rows ``[h * w, c * p * p]``: row-major
    over the ``(h, w) = (H / p, W / p)`` grid, each patch flattened as ``(c, py, px)``.

    Example:
        >>> rows = patch_rows(torch.arange(2 * 4 * 6.0).view(2, 4, 6), patch_size=2)
        >>> rows.shape, rows[1].tolist()
        (torch.Size([6, 8]), [2.0, 3.0, 8.0, 9.0, 26.0, 27.0, 32.0, 33.0])
    """
    if slice_pixels.ndim != 3:
        raise ValueError(f"patch_rows takes one slice [channels, H, W]; got shape {tuple(slice_pixels.shape)}")
    c, height, width = slice_pixels.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"slice of {height}x{width} pixels is not a whole number of {patch_size}x{patch_size} patches; "
            "resize it to multiples of the patch size first, as MiniCPM's image processor does"
        )
    h, w = height // patch_size, width // patch_size
    patches = slice_pixels.reshape(c, h, patch_size, w, patch_size).permute(1, 3, 0, 2, 4)
    return patches.reshape(h * w, c * patch_size * patch_size)


def patch_rows_from_strip(strip: Float[Tensor, "3 p Lp"], patch_size: int = 14) -> Float[Tensor, "patch patch_dim"]:
    """The released processor's ``reshape_by_patch`` output ``[c, p, L * p]`` (patch ``l`` at
    columns ``l*p .. l*p + p - 1``, patches row-major) -> rows ``[L, c * p * p]`` as
    :func:`patch_rows` lays them out.

    Example:
        >>> image = torch.randn(3, 4, 6)
        >>> strip = image.reshape(3, 2, 2, 3, 2).permute(0, 2, 1, 3, 4).reshape(3, 2, 12)
        >>> torch.equal(patch_rows_from_strip(strip, patch_size=2), patch_rows(image, patch_size=2))
        True
    """
    if strip.ndim != 3 or strip.shape[1] != patch_size or strip.shape[2] % patch_size:
        raise ValueError(
            f"a reshape_by_patch strip is [channels, {patch_size}, n_patches * {patch_size}]; "
            f"got shape {tuple(strip.shape)}"
        )
    c, _, width = strip.shape
    n = width // patch_size
    return strip.reshape(c, patch_size, n, patch_size).permute(2, 0, 1, 3).reshape(n, c * patch_size * patch_size)


def slice_sizes(tgt_sizes: Int[Tensor, "slice 2"], n_patches: int) -> list[tuple[int, int]]:
    """``tgt_sizes`` as a list of ``(h, w)``, checked against the number of patch rows."""
    if not isinstance(tgt_sizes, Tensor) or tgt_sizes.ndim != 2 or tgt_sizes.shape[-1] != 2 or len(tgt_sizes) == 0:
        shape = tuple(tgt_sizes.shape) if isinstance(tgt_sizes, Tensor) else type(tgt_sizes).__name__
        raise ValueError(f"tgt_sizes must be an int tensor [n_slices, 2] of (h, w) patch counts; got {shape}")
    if tgt_sizes.is_floating_point():
        raise ValueError(f"tgt_sizes must hold integers (patch counts); got dtype {tgt_sizes.dtype}")
    sizes = [(int(h), int(w)) for h, w in tgt_sizes.tolist()]
    if any(h < 1 or w < 1 for h, w in sizes):
        raise ValueError(f"every slice needs at least 1x1 patches; got tgt_sizes {sizes}")
    expected = sum(h * w for h, w in sizes)
    if expected != n_patches:
        raise ValueError(
            f"pixel_values hold {n_patches} patch rows but tgt_sizes {sizes} imply {expected}; pass the tgt_sizes "
            "that belong to these slices (one (h, w) per slice, in the order the slices are packed)"
        )
    return sizes


class NavitSiglipTower(nn.Module):
    """Navit SigLIP over packed slices; see the module docstring for the contract.

    Hooks (``vision.`` prefix in the full model): ``hook_patch_embed``, ``hook_pos_embed`` (the
    position rows added), ``hook_embed`` (their sum), ``blocks.{l}.*`` (``TransformerBlock`` and
    ``Attention`` hooks; patterns ``[slice, head, patch_in_slice, patch_in_slice]``), ``ln_post.*``
    and ``hook_out``; all ``[1, patch, d_model]`` unless noted.

    Example:
        >>> cfg = NavitSiglipConfig(image_size=28, patch_size=2, d_model=16, d_mlp=32, n_layers=2, n_heads=2)
        >>> tower = NavitSiglipTower(cfg)
        >>> slices = [torch.randn(3, 6, 4), torch.randn(3, 2, 10)]
        >>> pixels = torch.cat([patch_rows(s, patch_size=2) for s in slices])
        >>> tower(pixels, torch.tensor([[3, 2], [1, 5]])).shape
        torch.Size([1, 11, 16])
    """

    def __init__(self, cfg: NavitSiglipConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.patch_embed = nn.Linear(cfg.patch_dim, d)  # the Conv2d weight [d, c, p, p] as [d, c * p * p]
        self.pos_embed = nn.Parameter(torch.zeros(cfg.grid * cfg.grid, d))  # [grid * grid, d_model], row-major
        self.blocks = nn.ModuleList(
            TransformerBlock(
                LayerNorm(d, cfg.layer_norm_eps),
                Attention(d, cfg.n_heads, qkv_bias=True, out_bias=True),
                LayerNorm(d, cfg.layer_norm_eps),
                PlainMLP(d, cfg.d_mlp, act=cfg.act),
            )
            for _ in range(cfg.n_layers)
        )
        self.ln_post = LayerNorm(d, cfg.layer_norm_eps)
        self.hook_patch_embed = HookPoint()  # [1, patch, d_model], before positions
        self.hook_pos_embed = HookPoint()  # [1, patch, d_model], the position-table rows added
        self.hook_embed = HookPoint()  # [1, patch, d_model], patch + position embedding
        self.hook_out = HookPoint()  # [1, patch, d_model], after ln_post

    def position_ids(self, tgt_sizes: Int[Tensor, "slice 2"]) -> Int[Tensor, "patch"]:
        """Position-table rows of every packed patch, slice after slice (CPU, int64).

        Example:
            >>> NavitSiglipTower(NavitSiglipConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=8)).position_ids(
            ...     torch.tensor([[1, 2], [1, 1]])).tolist()
            [0, 35, 0]
        """
        return torch.cat([navit_position_ids(int(h), int(w), self.cfg.grid) for h, w in tgt_sizes.tolist()])

    def forward(
        self, pixel_values: Float[Tensor, "patch patch_dim"], tgt_sizes: Int[Tensor, "slice 2"]
    ) -> Float[Tensor, "1 patch d_model"]:
        """Encode packed slices (see the module docstring) into ``[1, patch, d_model]``."""
        cfg = self.cfg
        if pixel_values.ndim != 2 or pixel_values.shape[-1] != cfg.patch_dim:
            raise ValueError(
                f"navit SigLIP pixel_values must be patch rows [n_patches, {cfg.patch_dim}] "
                f"({cfg.in_channels} channels x {cfg.patch_size}x{cfg.patch_size}); got {tuple(pixel_values.shape)}. "
                "Turn each slice [3, H, W] into rows with patch_rows (or a reshape_by_patch strip with "
                "patch_rows_from_strip) and concatenate them"
            )
        sizes = slice_sizes(tgt_sizes, pixel_values.shape[0])
        device = pixel_values.device
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))[None]
        x = self.hook_patch_embed(x)  # [1, patch, d_model]
        ids = self.position_ids(tgt_sizes).to(self.pos_embed.device)
        positions = self.hook_pos_embed(self.pos_embed[ids][None].to(device))  # [1, patch, d_model]
        x = self.hook_embed(x + positions)
        segments = None if len(sizes) == 1 else AttentionSegments.from_lengths([h * w for h, w in sizes], device)
        for block in self.blocks:
            x = block(x, segments=segments)
        return self.hook_out(self.ln_post(x))
