"""MiniCPM-o's images as its released ``MiniCPMVImageProcessor`` makes them: the preprocessor
settings, slicing (source image, then grid cells), normalisation, patch rows and the image
placeholder text.

Example:
    >>> from PIL import Image
    >>> sliced = slice_image(Image.new("RGB", (1280, 720)), MiniCPMPreprocessorConfig())
    >>> sliced.grid, sliced.source.size, sliced.cells[0].size
    ((3, 2), (602, 336), (490, 406))
"""


from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from jaxtyping import Float, Int
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.architectures.minicpm_o.constants import ImageLike
from hooked_avllm.inputs.decode import existing_path
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.vision import Image as ImageInput
from hooked_avllm.inputs.vision import check_image, eight_bit, to_pil

# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class MiniCPMPreprocessorConfig:
    """The image settings of ``preprocessor_config.json`` (defaults: the released MiniCPM-o 2.6 file).

    Example:
        >>> cfg = MiniCPMPreprocessorConfig.from_dict({"max_slice_nums": 4, "auto_map": {}})
        >>> cfg.max_slice_nums, cfg.scale_resolution, cfg.use_image_id
        (4, 448, True)
    """

    max_slice_nums: int = 9
    scale_resolution: int = 448
    patch_size: int = 14
    image_feature_size: int = 64
    use_image_id: bool = True
    slice_mode: bool = True
    norm_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    norm_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        for name in ("max_slice_nums", "scale_resolution", "patch_size", "image_feature_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"preprocessor config: {name} must be a positive integer; got {value!r}")
        for name in ("norm_mean", "norm_std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise InputError(f"preprocessor config: {name} must hold 3 numbers (R, G, B); got {value!r}")
        if any(s == 0 for s in self.norm_std):
            raise InputError(f"preprocessor config: norm_std must not hold 0; got {self.norm_std!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MiniCPMPreprocessorConfig":
        """The known keys of a ``preprocessor_config.json`` dict; other keys (token strings,
        ``auto_map``, ``version``, ...) are ignored.

        Example:
            >>> MiniCPMPreprocessorConfig.from_dict({"norm_mean": [0.1, 0.2, 0.3]}).norm_mean
            (0.1, 0.2, 0.3)
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for name in ("norm_mean", "norm_std"):
            if name in values:
                values[name] = tuple(float(x) for x in values[name])
        return cls(**values)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MiniCPMPreprocessorConfig":
        """Read ``folder/preprocessor_config.json``.

        Example:
            >>> MiniCPMPreprocessorConfig.from_pretrained("openbmb/MiniCPM-o-2_6")  # doctest: +SKIP
            MiniCPMPreprocessorConfig(max_slice_nums=9, ...)
        """
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            raise InputError(
                f"from_pretrained({str(folder)!r}): no preprocessor_config.json in that folder; pass the checkpoint "
                "folder that holds it, or build MiniCPMPreprocessorConfig() for the released defaults"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON ({err}); restore the file from the checkpoint") from err
        return cls.from_dict(data)


def load_chat_template(folder: str | Path) -> str:
    """The Qwen2.5 chat template stored in ``folder/tokenizer_config.json`` (for :func:`render_chat`).

    Example:
        >>> load_chat_template("tests/fixtures/hub/openbmb__MiniCPM-o-2_6")[:20]  # doctest: +SKIP
        "{%- if tools %}\\n    {{"
    """
    path = Path(folder) / "tokenizer_config.json"
    if not path.is_file():
        raise InputError(f"load_chat_template({str(folder)!r}): no tokenizer_config.json there; pass the checkpoint folder")
    template = json.loads(path.read_text()).get("chat_template")
    if not isinstance(template, str):
        raise InputError(f"{path} has no chat_template string; pass chat_template= to render_chat yourself")
    return template


# ---------------------------------------------------------------- image slicing


def _check_max_slice_nums(max_slice_nums: int) -> int:
    if isinstance(max_slice_nums, bool) or int(max_slice_nums) != max_slice_nums or max_slice_nums < 1:
        raise InputError(f"max_slice_nums must be a positive integer (1 = no slicing); got {max_slice_nums!r}")
    return int(max_slice_nums)


def ensure_divide(length: float, multiple: int) -> int:
    """``length`` rounded to the nearest multiple of ``multiple`` (Python's round, so halves go to
    even), at least ``multiple``.

    Example:
        >>> ensure_divide(602.9, 14), ensure_divide(3, 14), ensure_divide(21, 14)
        (602, 14, 28)
    """
    return max(round(length / multiple) * multiple, multiple)


def best_resize(
    size: tuple[float, float], scale_resolution: int = 448, patch_size: int = 14, allow_upscale: bool = False
) -> tuple[int, int]:
    """``(width, height)`` -> a size of about ``scale_resolution²`` pixels with the same aspect
    ratio, both sides multiples of ``patch_size``; an image already at most that area keeps its
    size (up to the rounding) unless ``allow_upscale``.

    Example:
        >>> best_resize((1280, 720)), best_resize((100, 50)), best_resize((100, 50), allow_upscale=True)
        ((602, 336), (98, 56), (630, 322))
    """
    width, height = size
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        aspect = width / height
        height = int(scale_resolution / math.sqrt(aspect))
        width = int(height * aspect)
    return ensure_divide(width, patch_size), ensure_divide(height, patch_size)


def slice_grid(size: tuple[int, int], max_slice_nums: int = 9, scale_resolution: int = 448) -> tuple[int, int] | None:
    """The grid ``(cols, rows)`` an image of ``(width, height)`` is cut into, or None (one slice).

    The number of cells is ``min(ceil(area / scale_resolution²), max_slice_nums)`` give or take
    one (never 1, never above ``max_slice_nums``); among every factorisation ``cols × rows`` of
    those counts, the first whose log aspect ratio is closest to the image's wins.

    Example:
        >>> slice_grid((448, 448)), slice_grid((1344, 1344)), slice_grid((1280, 720)), slice_grid((1280, 720), 2)
        (None, (3, 3), (3, 2), (2, 1))
    """
    max_slice_nums = _check_max_slice_nums(max_slice_nums)
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"image size (width, height) must be positive; got {size!r}")
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)), max_slice_nums)
    if multiple <= 1:
        return None
    log_aspect = math.log(width / height)
    best, best_error = None, float("inf")
    for count in (multiple - 1, multiple, multiple + 1):
        if count == 1 or count > max_slice_nums:
            continue
        for cols in range(1, count + 1):
            if count % cols:
                continue
            error = abs(log_aspect - math.log(cols / (count // cols)))
            if error < best_error:
                best, best_error = (cols, count // cols), error
    return best


def refine_size(
    size: tuple[int, int], grid: tuple[int, int], scale_resolution: int = 448, patch_size: int = 14
) -> tuple[int, int]:
    """The ``(width, height)`` the whole image is resized to before it is cut into ``grid`` cells:
    ``cell × grid`` with the cell :func:`best_resize`'d (upscaling allowed) from the image's share.

    Example:
        >>> refine_size((1280, 720), (3, 2)), refine_size((1280, 720), (2, 1))
        ((1470, 812), (840, 476))
    """
    width, height = size
    cols, rows = grid
    cell = best_resize(
        (ensure_divide(width, cols) / cols, ensure_divide(height, rows) / rows),
        scale_resolution,
        patch_size,
        allow_upscale=True,
    )
    return cell[0] * cols, cell[1] * rows


@dataclass
class SlicedImage:
    """An image cut as the released processor cuts it: the (resized) source image, the grid
    ``(cols, rows)`` or None, and the grid's cells row-major (empty without a grid)."""

    source: PILImage.Image
    grid: tuple[int, int] | None
    cells: list[PILImage.Image] = field(default_factory=list)

    @property
    def slices(self) -> list[PILImage.Image]:
        """``[source, cell(0, 0), cell(0, 1), ..., cell(rows - 1, cols - 1)]``, the order of the tokens."""
        return [self.source, *self.cells]


def as_rgb_image(source: ImageLike) -> PILImage.Image:
    """An image as an RGB PIL image.

    A PIL image or an image file is converted with ``convert("RGB")`` as the released processor
    does (an alpha channel is dropped, not composited), after a 16-bit image is scaled to 8 bits
    (:func:`~hooked_avllm.inputs.vision.eight_bit`; ``convert`` alone would clip it to white); an
    array or tensor (``[H, W, 3]`` or ``[3, H, W]``, uint8, uint16, or float in [0, 1]) or an
    :class:`~hooked_avllm.inputs.Image` goes through :func:`hooked_avllm.inputs.vision.to_pil`.

    Example:
        >>> as_rgb_image(np.zeros((2, 3, 3), np.uint8)).size
        (3, 2)
        >>> as_rgb_image(PILImage.new("I;16", (1, 1), 257 * 200)).getpixel((0, 0))
        (200, 200, 200)
    """
    if isinstance(source, PILImage.Image):
        return _nonempty(eight_bit(source).convert("RGB"))
    if isinstance(source, (str, Path)):
        path = existing_path(source, "Image")
        try:
            with PILImage.open(path) as opened:
                opened.load()
                picture = opened.copy()
        except Exception as err:
            raise InputError(f"cannot read the image {path}: {err}; pass a png/jpeg/webp/bmp file or a PIL image") from err
        return _nonempty(eight_bit(picture).convert("RGB"))
    if isinstance(source, ImageInput):
        pixels = check_image(source).pixels.detach().cpu().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return PILImage.fromarray(np.ascontiguousarray(pixels))
    return to_pil(source)


def _nonempty(picture: PILImage.Image) -> PILImage.Image:
    if picture.width < 1 or picture.height < 1:
        raise InputError(f"the image has size {picture.size} (width, height): it has no pixels; pass a non-empty one")
    return picture


def slice_image(image: PILImage.Image, config: MiniCPMPreprocessorConfig, max_slice_nums: int | None = None) -> SlicedImage:
    """Cut one RGB image into the released processor's slices (PIL bicubic on uint8).

    ``max_slice_nums`` overrides the config's (``chat(max_slice_nums=...)``). With
    ``config.slice_mode`` False the image itself is the only slice, unresized.

    Example:
        >>> cfg = MiniCPMPreprocessorConfig()
        >>> s = slice_image(PILImage.new("RGB", (1280, 720)), cfg, max_slice_nums=2)
        >>> s.grid, s.source.size, [c.size for c in s.cells]
        ((2, 1), (602, 336), [(420, 476), (420, 476)])
    """
    if not isinstance(image, PILImage.Image):
        raise InputError(f"slice_image takes a PIL image; got a {type(image).__name__} (convert it with as_rgb_image)")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if not config.slice_mode:
        return SlicedImage(image, None, [])
    limit = _check_max_slice_nums(config.max_slice_nums if max_slice_nums is None else max_slice_nums)
    res, patch = config.scale_resolution, config.patch_size
    grid = slice_grid(image.size, limit, res)
    if grid is None:
        return SlicedImage(image.resize(best_resize(image.size, res, patch, True), PILImage.Resampling.BICUBIC), None)
    source = image.resize(best_resize(image.size, res, patch, False), PILImage.Resampling.BICUBIC)
    refined = image.resize(refine_size(image.size, grid, res, patch), PILImage.Resampling.BICUBIC)
    cell_w, cell_h = refined.size[0] // grid[0], refined.size[1] // grid[1]
    cells = [
        refined.crop((c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h))
        for r in range(grid[1])
        for c in range(grid[0])
    ]
    return SlicedImage(source, grid, cells)


def normalize_slice(image: PILImage.Image, config: MiniCPMPreprocessorConfig | None = None) -> Float[Tensor, "3 height width"]:
    """uint8 RGB -> float32 ``[3, H, W]``: ``x / 255`` then ``(x - mean) / std`` (in [-1, 1] for 0.5/0.5).

    Example:
        >>> normalize_slice(PILImage.new("RGB", (2, 1), (255, 0, 128)))[:, 0, 0].tolist()
        [1.0, -1.0, 0.003921627998352051]
    """
    config = config or MiniCPMPreprocessorConfig()
    # float32 numpy arithmetic, elementwise as the release does it (and single-threaded: fast on a busy CPU)
    scaled = np.asarray(image.convert("RGB"), dtype=np.uint8).astype(np.float32) / np.float32(255.0)  # [H, W, 3]
    normalised = (scaled - np.asarray(config.norm_mean, np.float32)) / np.asarray(config.norm_std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


def tgt_size(pixels: Float[Tensor, "3 height width"], patch_size: int = 14) -> tuple[int, int]:
    """``(h, w)`` in patches of one slice (a remainder under ``patch_size`` is dropped, as ``unfold`` drops it).

    Example:
        >>> tgt_size(torch.zeros(3, 336, 602))
        (24, 43)
    """
    return pixels.shape[-2] // patch_size, pixels.shape[-1] // patch_size


def patch_rows(pixels: Float[Tensor, "3 height width"], patch_size: int = 14) -> Float[Tensor, "patches 3*p*p"]:
    """One slice -> ``[h*w, 3*p*p]``: patches row-major over its patch grid, each flattened
    channel-major ``(c, py, px)``, i.e. what ``Conv2d(3, d, p, stride=p)`` sees per position.

    Example:
        >>> x = torch.arange(3 * 28 * 42, dtype=torch.float32).reshape(3, 28, 42)
        >>> rows = patch_rows(x)
        >>> rows.shape, bool((rows[4] == x[:, 14:28, 14:28].reshape(-1)).all())
        (torch.Size([6, 588]), True)
    """
    if pixels.ndim != 3 or pixels.shape[0] != 3:
        raise InputError(f"patch_rows takes one slice [3, H, W]; got shape {tuple(pixels.shape)}")
    h, w = tgt_size(pixels, patch_size)
    x = pixels[:, : h * patch_size, : w * patch_size]
    x = x.reshape(3, h, patch_size, w, patch_size).permute(1, 3, 0, 2, 4)  # [h, w, 3, py, px]
    return x.reshape(h * w, 3 * patch_size * patch_size)


def reshape_by_patch(pixels: Float[Tensor, "3 height width"], patch_size: int = 14) -> Float[Tensor, "3 p L*p"]:
    """The released processor's layout of one slice, ``[3, p, L*p]``: patch ``l`` (row-major) sits
    in columns ``l*p .. l*p + p - 1``, so a ``Conv2d`` of stride ``p`` over it meets the patches in order.

    Example:
        >>> x = torch.randn(3, 28, 42)
        >>> y = reshape_by_patch(x)
        >>> y.shape, bool((y[:, :, 4 * 14:5 * 14] == x[:, 14:28, 14:28]).all())
        (torch.Size([3, 14, 84]), True)
    """
    h, w = tgt_size(pixels, patch_size)
    x = pixels[:, : h * patch_size, : w * patch_size]
    x = x.reshape(3, h, patch_size, w, patch_size).permute(0, 2, 1, 3, 4)  # [3, py, h, w, px]
    return x.reshape(3, patch_size, h * w * patch_size)


@dataclass
class PreprocessedImage:
    """One image's slices as model input: ``pixel_values[i]`` is slice i ``[3, H_i, W_i]``
    (float32), ``tgt_sizes[i] = (H_i/14, W_i/14)``; ``grid`` for the placeholder; ``size`` the
    RGB image's ``(width, height)``."""

    pixel_values: list[Float[Tensor, "3 height width"]]
    tgt_sizes: Int[Tensor, "slices 2"]
    grid: tuple[int, int] | None
    size: tuple[int, int]

    @property
    def n_slices(self) -> int:
        return len(self.pixel_values)


def preprocess_image(
    source: ImageLike, config: MiniCPMPreprocessorConfig | None = None, max_slice_nums: int | None = None
) -> PreprocessedImage:
    """An image -> its normalised slices and their patch grids.

    Example:
        >>> out = preprocess_image(PILImage.new("RGB", (1344, 1344)))
        >>> out.grid, out.n_slices, out.tgt_sizes[0].tolist()
        ((3, 3), 10, [32, 32])
    """
    config = config or MiniCPMPreprocessorConfig()
    image = as_rgb_image(source)
    sliced = slice_image(image, config, max_slice_nums)
    pixels = [normalize_slice(s, config) for s in sliced.slices]
    sizes = torch.tensor([tgt_size(p, config.patch_size) for p in pixels], dtype=torch.int64)
    return PreprocessedImage(pixels, sizes, sliced.grid, image.size)


def image_placeholder(
    grid: tuple[int, int] | None,
    image_index: int = 0,
    *,
    use_image_id: bool = True,
    n_queries: int = 64,
    slice_mode: bool = True,
) -> str:
    """The text an image tag becomes: ``[<image_id>k</image_id>]<image>`` + ``<unk>``×n + ``</image>``,
    then for a grid its rows (``cols`` × ``<slice><unk>×n</slice>``) joined by ``"\\n"``.

    Example:
        >>> image_placeholder(None, 2, n_queries=2)
        '<image_id>2</image_id><image><unk><unk></image>'
        >>> image_placeholder((2, 2), use_image_id=False, n_queries=1)
        '<image><unk></image><slice><unk></slice><slice><unk></slice>\\n<slice><unk></slice><slice><unk></slice>'
    """
    if n_queries < 1:
        raise InputError(f"n_queries must be at least 1; got {n_queries}")
    text = f"<image_id>{image_index}</image_id>" if use_image_id else ""
    text += "<image>" + "<unk>" * n_queries + "</image>"
    if slice_mode and grid is not None:
        cols, rows = grid
        row = ("<slice>" + "<unk>" * n_queries + "</slice>") * cols
        text += "\n".join([row] * rows)
    return text


def image_token_count(grid: tuple[int, int] | None, n_queries: int = 64) -> int:
    """Vision embeddings (``<unk>`` positions) of one image: ``n_queries`` per slice.

    Example:
        >>> image_token_count(None), image_token_count((3, 3))
        (64, 640)
    """
    return n_queries * (1 + (grid[0] * grid[1] if grid is not None else 0))


__all__ = ["MiniCPMPreprocessorConfig", "PreprocessedImage", "SlicedImage", "as_rgb_image", "best_resize", "ensure_divide", "image_placeholder", "image_token_count", "load_chat_template", "normalize_slice", "patch_rows", "preprocess_image", "refine_size", "reshape_by_patch", "slice_grid", "slice_image", "tgt_size"]
