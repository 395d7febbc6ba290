"""VideoLLaMA2.1-AV's media preprocessing, as its released processor does it.

* Frames: ``num_frames`` indices at the middles of equal segments of the video (its "uniform"
  rule), each frame resized to the SigLIP size with bicubic resampling (no crop, no padding: the
  audio-visual inference path passes ``aspect_ratio=None``), scaled to [0, 1] and normalised with
  mean 0.5 and std 0.5.
* Audio: mono 16 kHz, cut or zero-padded to 30 s, ``×2**15``, 128-bin Kaldi fbank (25 ms / 10 ms).
  The released code picks a random 30-s window of a longer file; we take ``start`` (default 0).
* A video's sound track: ``clips_per_video`` clips of ``clip_duration`` s whose starts are spread
  evenly from 0 to ``duration - clip_duration``, concatenated, then padded to 30 s like audio.

Each function also returns where its output came from in time, for the token layout.

Example:
    >>> sample_frame_indices(100, 4)
    [12, 37, 62, 87]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.inputs.audio import Audio, load_audio
from hooked_avllm.inputs.decode import decode_video_frames, existing_path, probe_video
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.fbank import beats_fbank
from hooked_avllm.inputs.vision import Image, Video


def sample_frame_indices(n_total: int, num_frames: int) -> list[int]:
    """The middles of ``num_frames`` equal segments of frame indices ``0 .. n_total - 1``, rounded
    half up (indices repeat when the video is shorter than ``num_frames``)."""
    if n_total < 1:
        raise InputError(f"the video has {n_total} frames; it needs at least one")
    segment = (n_total - 1) / num_frames
    return [int(math.floor(segment * (i + 0.5) + 1e-6 + 0.5)) for i in range(num_frames)]


def resize_frames(
    frames: list[np.ndarray], size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Float[Tensor, "frame 3 size size"]:
    """uint8 RGB frames ``[H, W, 3]`` -> normalised ``[frame, 3, size, size]`` (bicubic, as SigLIP's processor)."""
    out = []
    for frame in frames:
        image = PILImage.fromarray(np.ascontiguousarray(frame)).convert("RGB").resize((size, size), PILImage.BICUBIC)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0)
    pixels = torch.stack(out)
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _uint8_frames(source) -> list[np.ndarray]:
    if isinstance(source, Tensor):
        source = source.numpy()
    array = np.asarray(source)
    if array.ndim != 4:
        raise InputError(f"video frames must be [frames, H, W, 3] or [frames, 3, H, W]; got shape {array.shape}")
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    return list(array)


@dataclass
class SampledVideo:
    """Preprocessed frames with the time (s) of each, and the video's sound track if it has one."""

    pixels: Float[Tensor, "frame 3 size size"]
    frame_times: Float[Tensor, "frame"]
    duration: float
    audio: Audio | None = None


def load_frames(source, num_frames: int, size: int, mean, std, fps: float | None = None, with_audio: bool = True) -> SampledVideo:
    """A video file, frame array or :class:`~hooked_avllm.inputs.Video` -> ``num_frames`` preprocessed frames.

    Arrays are taken at ``fps`` frames per second (default 1) for their times.
    """
    track = None
    if isinstance(source, (str, Path)):
        probe = probe_video(existing_path(source, "Video"))
        raw = decode_video_frames(source, lambda total: sample_frame_indices(total, num_frames), probe.total_frames)
        rate, total = probe.fps, probe.total_frames
        indices = sample_frame_indices(total, num_frames)
        frames = list(raw)
        if with_audio and probe.has_audio:
            track = load_audio(existing_path(source, "Video"))
    else:
        if isinstance(source, Video):
            track, rate = source.audio, source.sample_fps
            source = (source.frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        else:
            rate = fps or 1.0
        all_frames = _uint8_frames(source)
        total = len(all_frames)
        indices = sample_frame_indices(total, num_frames)
        frames = [all_frames[i] for i in indices]
    while len(frames) < num_frames:  # a decoder that yields fewer frames than counted: black frames
        frames.append(np.zeros_like(frames[-1]))
    return SampledVideo(resize_frames(frames, size, mean, std), torch.tensor(indices, dtype=torch.float32) / rate,
                        total / rate, track)


def load_image_pixels(source, size: int, mean, std) -> Float[Tensor, "3 size size"]:
    """An image path, PIL image, array or :class:`~hooked_avllm.inputs.Image` -> normalised ``[3, size, size]``."""
    if isinstance(source, (str, Path)):
        image = PILImage.open(existing_path(source, "Image")).convert("RGB")
        array = np.asarray(image)
    elif isinstance(source, PILImage.Image):
        array = np.asarray(source.convert("RGB"))
    elif isinstance(source, Image):
        array = _uint8_frames(source.pixels[None])[0]
    else:
        array = _uint8_frames(np.asarray(source)[None])[0]
    return resize_frames([array], size, mean, std)[0]


@dataclass
class AudioStream:
    """The fbank of one 30-s audio input and the source time (s) of each fbank frame (NaN for padding)."""

    fbank: Float[Tensor, "frame 128"]
    frame_source_time: Float[Tensor, "frame"]


def audio_stream(waveform: Float[Tensor, "samples"], sample_rate: int, clip_seconds: float,
                 source_times: Float[Tensor, "samples"] | None = None) -> AudioStream:
    """Cut or zero-pad 16-kHz audio to ``clip_seconds`` and take its BEATs fbank."""
    n = int(round(clip_seconds * sample_rate))
    if source_times is None:
        source_times = torch.arange(waveform.shape[0], dtype=torch.float64) / sample_rate
    waveform, source_times = waveform[:n].float(), source_times[:n].double()
    if waveform.shape[0] < n:
        pad = n - waveform.shape[0]
        waveform = torch.nn.functional.pad(waveform, (0, pad))
        source_times = torch.cat([source_times, torch.full((pad,), float("nan"), dtype=torch.float64)])
    fbank = beats_fbank(waveform)
    shift = sample_rate // 100  # 10 ms frames
    starts = torch.arange(fbank.shape[0]) * shift
    return AudioStream(fbank, source_times[starts].float())


def video_audio_clips(track: Audio, duration: float, clips: int, clip_duration: float) -> tuple[Tensor, Tensor]:
    """The released processor's clips of a video's sound track: ``clips`` windows of
    ``clip_duration`` s starting evenly from 0 to ``duration - clip_duration`` (all at 0 for a
    video shorter than one clip), concatenated; returns (waveform, source time of each sample)."""
    rate = track.sampling_rate
    latest = max(duration - clip_duration, 0.0)
    step = latest / max(clips - 1, 1)
    parts, times = [], []
    for k in range(clips):
        start = step * k
        a, b = int(start * rate), int((start + clip_duration) * rate)
        part = track.waveform[a:b]
        parts.append(part)
        times.append(torch.arange(a, a + part.shape[0], dtype=torch.float64) / rate)
    return torch.cat(parts), torch.cat(times)


def load_audio_waveform(source, sample_rate: int, start: float | None = None) -> Audio:
    """Any audio input :func:`~hooked_avllm.inputs.load_audio` takes, mono at ``sample_rate``, from ``start`` s."""
    return load_audio(source, sampling_rate=sample_rate, start=start)
