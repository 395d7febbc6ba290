"""The Qwen pipeline's images and videos: loaded, resized and cut into vision-tower patches.

Images (paths, PIL images, numpy arrays, torch tensors) are converted to RGB, resized with
Pillow's bicubic filter to the "smart" size (multiples of 28 within the pixel budget) and repeated
to two frames. Videos are decoded with PyAV and sampled the way qwen-omni-utils does (2 fps, an
even frame count, a per-frame pixel budget that shrinks for long videos), then resized with an
anti-aliased bicubic filter. Both are normalised with the CLIP mean/std and cut into 14x14x2
patches (1176-vectors, channel-major ``3*2*14*14``) ordered so that every 2x2 merge block is
contiguous; the grid ``(t, h, w)`` counts patches.

Example:
    >>> import numpy as np
    >>> pixel_values, grid = image_patches([np.zeros((56, 84, 3), np.uint8)])
    >>> pixel_values.shape, grid.tolist()
    (torch.Size([24, 1176]), [[1, 4, 6]])
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.sizing import frame_indices, smart_nframes, smart_resize, video_max_pixels
from hooked_avllm.inputs.audio import AudioLike, load_audio
from hooked_avllm.inputs.decode import decode_video_frames, existing_path, probe_video
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.vision import Image, ImageLike, Video, VideoLike, check_image, check_video, frames_from_arrays, to_pil


def load_image(source: ImageLike, config: PreprocessorConfig | None = None) -> Image:
    """Load an image and resize it (Pillow bicubic) to the smart size for the image budget.

    Arrays may be ``[H, W, 3]``, ``[3, H, W]`` or ``[H, W]``; uint8 in [0, 255] or float in
    [0, 1]. RGBA is composited over white.

    Example:
        >>> import numpy as np
        >>> load_image(np.zeros((10, 10, 3), np.uint8)).pixels.shape
        torch.Size([3, 56, 56])
    """
    if isinstance(source, Image):
        return check_image(source)
    config = config or PreprocessorConfig()
    name = str(source) if isinstance(source, (str, Path)) else None
    picture = to_pil(source)
    height, width = smart_resize(
        picture.height,
        picture.width,
        config.resize_factor,
        config.min_pixels,
        config.max_pixels,
        config.max_aspect_ratio,
    )
    if (width, height) != picture.size:
        picture = picture.resize((width, height), resample=PILImage.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1).float()  # [3, H, W]
    return Image(pixels, name)


def load_video(
    source: VideoLike,
    config: PreprocessorConfig | None = None,
    *,
    fps: float | None = None,
    source_fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    with_audio: bool = True,
    audio: AudioLike | None = None,
    timing: Literal["nominal", "sampled"] = "nominal",
) -> Video:
    """Decode, sample and resize a video the way qwen-omni-utils does.

    A path is decoded with PyAV: ``smart_nframes`` frames (about ``fps``, default the config's
    2 fps) evenly spread over the video (or over ``start``..``end`` seconds), and, with
    ``with_audio``, its audio track at 16 kHz. Frames given as an array ``[T, H, W, 3]`` /
    ``[T, 3, H, W]`` or a list of images are sampled the same way when ``source_fps`` is given,
    otherwise taken as already sampled at ``fps`` (an odd count is padded by repeating the last
    frame). ``audio`` attaches a sound track to frames given as arrays.

    ``timing="nominal"`` (default, the reference behaviour) makes positions assume exactly ``fps``
    frames per second; ``"sampled"`` uses the rate the frames were really taken at.

    Example:
        >>> clip = load_video("clip.mp4")                                  # doctest: +SKIP
        >>> clip.frames.shape, clip.fps, clip.audio.sampling_rate          # doctest: +SKIP
        (torch.Size([8, 3, 336, 588]), 2.0, 16000)
    """
    if isinstance(source, Video):
        return check_video(source)
    config = config or PreprocessorConfig()
    _check_times(fps, source_fps, start, end)
    fps = float(config.video_fps if fps is None else fps)
    factor = config.temporal_patch_size
    track: Audio | None = None
    name: str | None = None
    if isinstance(source, (str, Path)):
        name = str(source)
        probe = probe_video(source, start, end)
        n_frames = smart_nframes(
            probe.total_frames, probe.fps, fps, config.video_min_frames, config.video_max_frames, factor
        )
        resize = _frame_resizer(n_frames, config)
        raw = decode_video_frames(source, lambda total: frame_indices(total, n_frames), probe.total_frames, start, end)
        frames = resize(torch.from_numpy(raw).permute(0, 3, 1, 2))
        sample_fps = n_frames / probe.total_frames * probe.fps
        if with_audio and probe.has_audio:
            track = load_audio(existing_path(source, "Video"), start=start, end=end)
    else:
        frames_uint8 = frames_from_arrays(source)
        total = frames_uint8.shape[0]
        if source_fps is not None:
            n_frames = smart_nframes(total, source_fps, fps, config.video_min_frames, config.video_max_frames, factor)
            frames_uint8 = frames_uint8[frame_indices(total, n_frames)]
            sample_fps = n_frames / total * source_fps
        else:
            if total < factor:
                raise InputError(
                    f"The video has {total} frame(s); at least {factor} are needed. "
                    "Pass a single frame as an image (images=) instead."
                )
            if total % factor:
                pad = factor - total % factor
                frames_uint8 = torch.cat([frames_uint8, frames_uint8[-1:].expand(pad, -1, -1, -1)])
            sample_fps = fps
        frames = _frame_resizer(frames_uint8.shape[0], config)(frames_uint8)
    if audio is not None:
        track = load_audio(audio)
    if track is not None:
        track = load_audio(track, sampling_rate=config.sampling_rate)
    position_fps = fps if timing == "nominal" else sample_fps
    return Video(frames, position_fps, sample_fps, track, name)


def _check_times(fps: float | None, source_fps: float | None, start: float | None, end: float | None) -> None:
    """Frame rates must be positive and the time range non-empty (a rate of 0 would divide by zero,
    a negative one give negative seconds per frame group)."""
    for name, value in (("fps", fps), ("source_fps", source_fps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf):
            raise InputError(f"{name}={value!r}: a frame rate must be a positive number of frames per second (e.g. 2.0)")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf):
            raise InputError(f"{name}={value!r}: a time in the video must be a number of seconds >= 0")
    if start is not None and end is not None and end <= start:
        raise InputError(f"start={start}, end={end}: the range is empty; pick start < end (seconds)")


def check_video_size(video: "Video", config: PreprocessorConfig) -> None:
    """Warn when a loaded :class:`Video` was sized under other preprocessing settings than ``config``
    (its frames are not what the model's own preprocessing would make of them)."""
    n_frames, _, height, width = video.frames.shape
    budget = video_max_pixels(
        n_frames, min_pixels=config.video_min_pixels, max_pixels=config.video_max_pixels,
        total_pixels=config.video_total_pixels, frame_factor=config.temporal_patch_size,
    )
    expected = tuple(smart_resize(height, width, config.resize_factor, config.video_min_pixels, budget,
                                  config.max_aspect_ratio))
    factor = config.resize_factor
    if height % factor or width % factor:
        raise InputError(
            f"Video {video.source or ''} has {height}x{width} frames, which this model's {factor}-pixel patch grid cannot "
            f"take (its preprocessing would size them {expected[0]}x{expected[1]}): it was loaded with another model's "
            "settings. Load it with load_video(source, model.preprocessor), or pass the raw frames/path to prepare."
        )
    if expected != (height, width):
        warnings.warn(
            f"Video {video.source or ''} has {height}x{width} frames, but this model's preprocessing would size "
            f"them {expected[0]}x{expected[1]}: it was loaded with other settings. Load it with "
            "load_video(source, model.preprocessor) or pass the raw frames/path.",
            stacklevel=3,
        )


def _frame_resizer(n_frames: int, config: PreprocessorConfig):
    """Resize uint8 frames ``[T, 3, H, W]`` to the video budget (bicubic, anti-aliased, uint8 levels)."""
    budget = video_max_pixels(
        n_frames,
        min_pixels=config.video_min_pixels,
        max_pixels=config.video_max_pixels,
        total_pixels=config.video_total_pixels,
        frame_factor=config.temporal_patch_size,
    )

    def resize(frames: Tensor) -> Float[Tensor, "frames 3 height width"]:
        height, width = frames.shape[-2:]
        size = smart_resize(
            height, width, config.resize_factor, config.video_min_pixels, budget, config.max_aspect_ratio
        )
        if tuple(size) == (height, width):
            return frames.float()
        out = [
            F.interpolate(part.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
            .round_()
            .clamp_(0, 255)
            for part in frames.split(16)
        ]
        return torch.cat(out)

    return resize


def patchify(
    frames: Float[Tensor, "frames channels height width"],
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
) -> tuple[Float[Tensor, "patches patch_dim"], tuple[int, int, int]]:
    """Cut frames into ``temporal_patch_size x patch_size x patch_size`` patches in merge-block order.

    Rows are ordered (frame group, block row, block column, row in block, column in block), so the
    ``merge_size**2`` patches of every merge block are contiguous; each row is channel-major
    ``(channel, frame, y, x)``. Returns the rows and the grid ``(t, h, w)`` in patches.

    Example:
        >>> import torch
        >>> patches, grid = patchify(torch.zeros(2, 3, 28, 56))
        >>> patches.shape, grid
        (torch.Size([8, 1176]), (1, 2, 4))
    """
    n_frames, channels, height, width = frames.shape
    step = patch_size * merge_size
    if n_frames % temporal_patch_size or height % step or width % step:
        raise InputError(
            f"Frames of shape {tuple(frames.shape)} cannot be patched: the frame count must be a multiple of "
            f"{temporal_patch_size} and the sides multiples of {step}. Load them with load_image/load_video."
        )
    t, gh, gw = n_frames // temporal_patch_size, height // patch_size, width // patch_size
    blocks = frames.reshape(
        t,
        temporal_patch_size,
        channels,
        gh // merge_size,
        merge_size,
        patch_size,
        gw // merge_size,
        merge_size,
        patch_size,
    )
    # -> [t, block_row, block_col, row_in_block, col_in_block, channel, frame, y, x]
    blocks = blocks.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return blocks.reshape(t * gh * gw, channels * temporal_patch_size * patch_size * patch_size), (t, gh, gw)


def normalize(
    frames: Float[Tensor, "frames 3 height width"], config: PreprocessorConfig
) -> Float[Tensor, "frames 3 height width"]:
    """Scale [0, 255] to [0, 1] and standardise each channel with the CLIP mean/std (float32)."""
    mean = torch.tensor(config.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(config.image_std, dtype=torch.float32)[:, None, None]
    return (frames.to(torch.float32) * (1.0 / 255.0) - mean) / std


def image_patches(
    images: Sequence[ImageLike], config: PreprocessorConfig | None = None
) -> tuple[Float[Tensor, "patches patch_dim"], Int[Tensor, "n_images 3"]]:
    """``pixel_values`` and ``image_grid_thw`` of several images (each repeated to 2 frames).

    Example:
        >>> import numpy as np
        >>> image_patches([np.zeros((28, 28, 3), np.uint8)])[1].tolist()
        [[1, 4, 4]]
    """
    config = config or PreprocessorConfig()
    rows, grids = [], []
    for item in images:
        pixels = normalize(load_image(item, config).pixels[None], config)  # [1, 3, H, W]
        frames = pixels.expand(config.temporal_patch_size, -1, -1, -1)
        patches, grid = patchify(frames, config.patch_size, config.temporal_patch_size, config.merge_size)
        rows.append(patches)
        grids.append(grid)
    return torch.cat(rows), torch.tensor(grids, dtype=torch.long)


def video_patches(
    videos: Sequence[VideoLike], config: PreprocessorConfig | None = None
) -> tuple[Float[Tensor, "patches patch_dim"], Int[Tensor, "n_videos 3"], Float[Tensor, "n_videos"]]:
    """``pixel_values_videos``, ``video_grid_thw`` and ``video_second_per_grid`` of several videos.

    Example:
        >>> import numpy as np
        >>> _, grid, seconds = video_patches([np.zeros((4, 336, 448, 3), np.uint8)])
        >>> grid.tolist(), seconds.tolist()
        ([[2, 24, 32]], [1.0])
    """
    config = config or PreprocessorConfig()
    rows, grids, seconds = [], [], []
    for item in videos:
        video = load_video(item, config)
        patches, grid = patchify(
            normalize(video.frames, config), config.patch_size, config.temporal_patch_size, config.merge_size
        )
        rows.append(patches)
        grids.append(grid)
        seconds.append(config.temporal_patch_size / video.fps)
    return torch.cat(rows), torch.tensor(grids, dtype=torch.long), torch.tensor(seconds, dtype=torch.float32)


__all__ = ["check_video_size", "image_patches", "load_image", "load_video", "normalize", "patchify", "video_patches"]
