"""The sizes and frame counts the reference pipeline (qwen-omni-utils) picks.

``smart_resize`` chooses a height and width that are multiples of 28, keep the aspect ratio as
well as possible and fit a pixel budget; ``smart_nframes`` picks how many frames to sample (2 fps
by default, an even count between ``min_frames`` and ``max_frames``); ``frame_indices`` spreads
them evenly over the video; ``video_max_pixels`` is the per-frame budget of a video.

Example:
    >>> smart_resize(480, 640, min_pixels=3136, max_pixels=12845056)
    (476, 644)
    >>> smart_nframes(total_frames=300, video_fps=30.0)
    20
"""

from __future__ import annotations

import math

import torch

from hooked_avllm.inputs.errors import InputError


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 4 * 28 * 28,
    max_pixels: int = 16384 * 28 * 28,
    max_ratio: float = 200.0,
) -> tuple[int, int]:
    """Height and width, multiples of ``factor``, with ``min_pixels <= h*w <= max_pixels``.

    Each side is first rounded to the nearest multiple (at least one ``factor``); if the area is
    then too large (small) both sides are scaled down (up) by the same factor and floored (ceiled).

    Example:
        >>> smart_resize(10, 10)
        (56, 56)
    """
    if height <= 0 or width <= 0:
        raise InputError(f"An image or frame of size {height}x{width} has no pixels; pass a non-empty one.")
    if max(height, width) / min(height, width) > max_ratio:
        raise InputError(
            f"An image or frame of size {height}x{width} has aspect ratio "
            f"{max(height, width) / min(height, width):.0f}, above the model's limit of {max_ratio:.0f}; "
            "crop or pad it first."
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_nframes(
    total_frames: int,
    video_fps: float,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = 768,
    frame_factor: int = 2,
) -> int:
    """Frames to sample from a video of ``total_frames`` at ``video_fps``: about ``fps`` per second.

    The count is clamped to ``[min_frames, min(max_frames, total_frames)]`` and floored to a
    multiple of ``frame_factor`` (the temporal patch size).

    Example:
        >>> smart_nframes(total_frames=99, video_fps=30.0)
        6
    """
    if total_frames < frame_factor:
        raise InputError(
            f"The video has {total_frames} frame(s); at least {frame_factor} are needed "
            "(one temporal patch). Pass a single frame as an image (images=) instead."
        )
    if video_fps <= 0:
        raise InputError("The video reports no frame rate; pass frames as an array with source_fps=.")
    lower = math.ceil(min_frames / frame_factor) * frame_factor
    upper = math.floor(min(max_frames, total_frames) / frame_factor) * frame_factor
    wanted = total_frames / video_fps * fps
    count = min(max(wanted, lower), upper, total_frames)
    return max(frame_factor, math.floor(count / frame_factor) * frame_factor)


def frame_indices(total_frames: int, n_frames: int) -> list[int]:
    """``n_frames`` indices spread evenly from the first to the last frame (float32 linspace, rounded)."""
    return torch.linspace(0, total_frames - 1, n_frames).round().long().tolist()


def video_max_pixels(
    n_frames: int, *, min_pixels: int, max_pixels: int, total_pixels: int, frame_factor: int = 2
) -> int:
    """Per-frame pixel budget of a video: a share of ``total_pixels``, never below 1.05 * min_pixels."""
    return int(max(min(max_pixels, total_pixels / n_frames * frame_factor), int(min_pixels * 1.05)))


__all__ = ["frame_indices", "smart_nframes", "smart_resize", "video_max_pixels"]
