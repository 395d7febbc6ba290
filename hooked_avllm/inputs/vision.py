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
    """An image path, PIL image, array ``[H, W, 3]`` or tensor as an RGB PIL image."""
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
    if picture.mode in ("RGBA", "LA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = PILImage.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[3])
        return background
    return picture.convert("RGB")


def to_uint8_hwc(array: np.ndarray | Tensor, what: str) -> np.ndarray:
    """One image as uint8 ``[H, W, 3]`` (or ``[H, W]``), from HWC/CHW, uint8 or float in [0, 1]."""
    data = array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)
    if data.ndim == 3 and data.shape[0] in (1, 3, 4) and data.shape[-1] not in (1, 3, 4):
        data = np.moveaxis(data, 0, -1)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in (3, 4))):
        raise InputError(f"An {what} array has shape {data.shape}; expected [H, W, 3], [3, H, W] or [H, W].")
    if data.size == 0:
        raise InputError(f"An {what} array of shape {data.shape} is empty.")
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"An {what} array has dtype {data.dtype}; pass uint8 in [0, 255] or float in [0, 1].")
    if not np.isfinite(data).all():
        raise InputError(f"An {what} array has NaN or infinite values; clean it first.")
    if np.issubdtype(data.dtype, np.floating):
        if data.min() < -1e-3 or data.max() > 1 + 1e-3:
            raise InputError(
                f"A float {what} array has values in [{data.min():.3g}, {data.max():.3g}]; float pixels must "
                "be in [0, 1]. Divide by 255 or pass uint8."
            )
        return np.clip(np.round(data * 255.0), 0, 255).astype(np.uint8)
    if data.min() < 0 or data.max() > 255:
        raise InputError(f"An integer {what} array has values outside [0, 255]; pass uint8 pixels.")
    return data.astype(np.uint8)


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
        raise InputError("The video has no frames.")
    arrays = [
        np.asarray(to_pil(item))
        if isinstance(item, (PILImage.Image, str, Path))
        else to_uint8_hwc(item, "video frame")
        for item in items
    ]
    arrays = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3] for a in arrays]
    if len({a.shape for a in arrays}) > 1:
        raise InputError("Video frames differ in size; resize them to one size first.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


__all__ = ["Image", "ImageLike", "Video", "VideoLike", "frames_from_arrays", "to_pil", "to_uint8_hwc"]
