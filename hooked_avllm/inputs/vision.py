"""Images and videos as the input pipelines hold them, whatever the family: RGB images and sampled
frames (float in [0, 255]) with their source, and the conversions every family's loader shares
(any image-like value to an RGB PIL image, arrays of frames to a tensor). How a family samples,
resizes and patches them is its own (``hooked_avllm/architectures/<family>/``).

Example:
    >>> import numpy as np
    >>> to_pil(np.zeros((4, 6, 3), np.uint8)).size
    (6, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.inputs.audio import Audio
from hooked_avllm.inputs.decode import existing_path
from hooked_avllm.inputs.errors import InputError


@dataclass
class Image:
    """A resized RGB image, float values in [0, 255], sides multiples of 28."""

    pixels: Float[Tensor, "3 height width"]
    source: str | None = None


@dataclass
class Video:
    """Sampled, resized RGB frames (float in [0, 255]) and, if loaded, the audio track.

    ``fps`` is the frame rate the model's positions assume (``second_per_grid =
    temporal_patch_size / fps``); ``sample_fps`` the rate at which frames were really taken.
    They differ when the reference sampling rounds the frame count (see :func:`load_video`).
    """

    frames: Float[Tensor, "frames 3 height width"]
    fps: float
    sample_fps: float
    audio: Audio | None = None
    source: str | None = None

    @property
    def duration(self) -> float:
        """Seconds of video the frames span."""
        return self.frames.shape[0] / self.sample_fps


ImageLike = Union[str, Path, PILImage.Image, np.ndarray, Tensor, Image]
VideoLike = Union[str, Path, np.ndarray, Tensor, Sequence, Video]


def to_pil(source: ImageLike) -> PILImage.Image:
    """An image path, PIL image, array ``[H, W, 3]`` or tensor as an RGB PIL image.

    Transparency (RGBA, LA, a palette with a transparent colour) is put over white, as the Hugging
    Face image processors' ``convert_to_rgb`` does; grayscale and palette images are expanded to
    RGB; 16-bit images are scaled to 8 bits by their bit depth (:func:`eight_bit`), never clipped.

    Example:
        >>> to_pil(PILImage.new("I;16", (2, 1), 65535)).getpixel((0, 0))
        (255, 255, 255)
        >>> to_pil(PILImage.new("LA", (1, 1), (0, 0))).getpixel((0, 0))  # fully transparent black: white
        (255, 255, 255)
    """
    if isinstance(source, (str, Path)):
        path = existing_path(source, "Image")
        try:
            with PILImage.open(path) as opened:
                opened.load()
                picture = opened.copy()
        except Exception as err:
            raise InputError(
                f"Cannot read image {path}: {err}. The file may be corrupt or not an image "
                "(png, jpeg, webp, bmp, gif, tiff are supported); for a video pass video=."
            ) from err
    elif isinstance(source, PILImage.Image):
        picture = source
    elif isinstance(source, (np.ndarray, Tensor)):
        picture = PILImage.fromarray(to_uint8_hwc(source, "image"))
    else:
        raise InputError(
            f"Unsupported image input of type {type(source).__name__}; pass a path, a PIL image, "
            "a numpy array or a torch tensor."
        )
    if picture.width < 1 or picture.height < 1:
        raise InputError(f"The image has size {picture.size} (width, height): it has no pixels; pass a non-empty one.")
    picture = eight_bit(picture)
    if picture.mode in ("RGBA", "LA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = PILImage.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[3])
        return background
    return picture.convert("RGB")


def eight_bit(picture: PILImage.Image) -> PILImage.Image:
    """A PIL image of more than 8 bits per sample as an 8-bit one, scaled by its bit depth.

    Pillow opens 16-bit grayscale files as mode ``I;16`` (or ``I``), whose ``convert("RGB")`` clips
    every value above 255 to white; they are scaled by ``>> 8`` here, as Pillow itself reduces 16-bit
    colour PNGs. Mode ``I`` holding values above 65,535 (32-bit data) is refused; mode ``F`` (float)
    is read as floats in [0, 1], like a float array. Other modes are returned as they are.

    Example:
        >>> eight_bit(PILImage.new("I;16", (1, 1), 257 * 100)).getpixel((0, 0))
        100
    """
    if picture.mode == "F":
        return PILImage.fromarray(to_uint8_hwc(np.asarray(picture, dtype=np.float32), "image"))
    if not (picture.mode.startswith("I;16") or picture.mode == "I"):
        return picture
    data = np.asarray(picture).astype(np.int64)
    if data.size and (data.min() < 0 or data.max() > 65535):
        raise InputError(
            f"A {picture.mode} image holds values in [{data.min()}, {data.max()}], beyond 16 bits; convert it to 8 bits "
            "per channel (e.g. scale to [0, 255] and pass a uint8 array)."
        )
    return PILImage.fromarray((data >> 8).astype(np.uint8), mode="L")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _channels_first(shape: tuple[int, ...], is_tensor: bool) -> bool:
    if len(shape) != 3:
        return False
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if first != last or not first:
        return first
    if (shape[0] == 3) != (shape[-1] == 3):
        return shape[0] == 3
    return is_tensor


def to_uint8_hwc(array: np.ndarray | Tensor, what: str) -> np.ndarray:
    """One image as uint8 ``[H, W, 3]`` (or ``[H, W]``), from HWC/CHW, uint8, uint16 (scaled by
    ``>> 8``) or float in [0, 1].

    A shape that reads both ways takes the side of 3 channels (``[3, 1, 1]`` is a 1x1 RGB image
    channels-first, ``[1, 1, 3]`` channels-last); where both or neither side is 3 (``[3, 5, 3]``) a
    torch tensor is channels-first and a numpy array channels-last, each library's convention.

    Example:
        >>> to_uint8_hwc(np.full((1, 1, 3), 65535, np.uint16), "image").tolist()
        [[[255, 255, 255]]]
        >>> to_uint8_hwc(torch.ones(3, 1, 1), "image").shape
        (1, 1, 3)
    """
    if isinstance(array, Tensor):
        tensor = array.detach().cpu()
        data = (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy()
    else:
        data = np.asarray(array)
    an = f"{_article(what).capitalize()} {what}"
    if _channels_first(data.shape, isinstance(array, Tensor)):
        data = np.moveaxis(data, 0, -1)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (3, 4))):
        raise InputError(f"{an} array has shape {data.shape}; expected [H, W, 3], [3, H, W] or [H, W].")
    if data.size == 0:
        raise InputError(f"{an} array of shape {data.shape} is empty.")
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"{an} array has dtype {data.dtype}; pass uint8 in [0, 255] or float in [0, 1].")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"{an} array has {bad} NaN or infinite values; clean them first (e.g. np.nan_to_num).")
    if data.dtype == np.uint16:  # 16-bit pixels: scale by the bit depth, as Pillow reduces 16-bit PNGs
        return (data >> 8).astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        if data.min() < -1e-3 or data.max() > 1 + 1e-3:
            raise InputError(
                f"A float {what} array has values in [{data.min():.3g}, {data.max():.3g}]; float pixels must "
                "be in [0, 1]. Divide by 255 or pass uint8."
            )
        return np.clip(np.round(data * 255.0), 0, 255).astype(np.uint8)
    if data.min() < 0 or data.max() > 255:
        raise InputError(
            f"An integer {what} array has values in [{data.min()}, {data.max()}], outside [0, 255]; pass uint8 pixels "
            "(or uint16 for 16-bit ones)."
        )
    return data.astype(np.uint8)


def check_image(image: "Image") -> "Image":
    """A loaded :class:`Image` as it must be: pixels ``[3, H, W]`` of finite values in [0, 255].

    Example:
        >>> check_image(Image(torch.zeros(3, 28, 28))).pixels.shape
        torch.Size([3, 28, 28])
    """
    pixels = image.pixels
    if not isinstance(pixels, Tensor) or pixels.ndim != 3 or pixels.shape[0] != 3 or 0 in pixels.shape:
        shape = tuple(pixels.shape) if hasattr(pixels, "shape") else type(pixels).__name__
        raise InputError(f"Image pixels have shape {shape}; an Image holds [3, height, width] (load_image makes one)")
    if pixels.is_floating_point() and not torch.isfinite(pixels).all():
        raise InputError("The Image's pixels hold NaN or infinite values; clean them first.")
    if float(pixels.min()) < 0 or float(pixels.max()) > 255:
        raise InputError(f"The Image's pixels hold values in [{float(pixels.min()):.3g}, {float(pixels.max()):.3g}]; an "
                         "Image's pixels are in [0, 255] (load_image makes them)")
    return image


def check_video(video: "Video") -> "Video":
    """A loaded :class:`Video` as it must be: frames ``[T, 3, H, W]`` of finite values in [0, 255], at
    least one frame, positive frame rates; otherwise an :class:`InputError` naming what is wrong.

    Example:
        >>> check_video(Video(torch.zeros(2, 3, 28, 28), fps=-1.0, sample_fps=2.0))
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: Video fps=-1.0: the frame rate must be positive (seconds per frame group would be negative or infinite); build the Video with fps > 0
    """
    frames = video.frames
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if hasattr(frames, "shape") else type(frames).__name__
        raise InputError(f"Video frames have shape {shape}; a Video holds [frames, 3, height, width] (load_video makes one)")
    if frames.shape[0] < 1:
        raise InputError("The Video has no frames; pass at least one (two for a temporal patch).")
    for name in ("fps", "sample_fps"):
        value = getattr(video, name)
        if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            raise InputError(
                f"Video {name}={value!r}: the frame rate must be positive (seconds per frame group would be negative or "
                f"infinite); build the Video with {name} > 0"
            )
    if frames.is_floating_point() and not torch.isfinite(frames).all():
        raise InputError("The Video's frames hold NaN or infinite values; clean them first.")
    if frames.numel() and (float(frames.min()) < 0 or float(frames.max()) > 255):
        raise InputError(
            f"The Video's frames hold values in [{float(frames.min()):.3g}, {float(frames.max()):.3g}]; a Video's "
            "frames are in [0, 255] (load_video makes them)"
        )
    return video


def frames_from_arrays(source: np.ndarray | Tensor | Sequence) -> Tensor:
    """Frames as uint8 ``[T, 3, H, W]`` from a 4-D array/tensor or a list of images."""
    if isinstance(source, (np.ndarray, Tensor)):
        if source.ndim != 4:
            raise InputError(
                f"A video array must be 4-D ([T, H, W, 3] or [T, 3, H, W]), got shape {tuple(source.shape)}; "
                "for one image use images=."
            )
        items = list(source)
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        items = list(source)
    else:
        raise InputError(
            f"Unsupported video input of type {type(source).__name__}; pass a path, a [T, H, W, 3] array, "
            "a [T, 3, H, W] tensor or a list of frames."
        )
    if not items:
        shape = f" (shape {tuple(source.shape)})" if hasattr(source, "shape") else ""
        raise InputError(f"The video has no frames{shape}; pass at least one frame ([T, H, W, 3] with T >= 1).")
    arrays = [
        np.asarray(to_pil(item))
        if isinstance(item, (PILImage.Image, str, Path))
        else to_uint8_hwc(item, "video frame")
        for item in items
    ]
    arrays = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3] for a in arrays]
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise InputError(f"Video frames differ in size ({sizes[:3]}, height x width); resize them to one size first.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


__all__ = ["Image", "ImageLike", "Video", "VideoLike", "check_image", "check_video", "eight_bit", "frames_from_arrays", "to_pil", "to_uint8_hwc"]
