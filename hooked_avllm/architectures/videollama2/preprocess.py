"""VideoLLaMA2.1-AV's media preprocessing, as its released processor does it.

* Frames: ``num_frames`` indices at the middles of equal segments of the video's frames (its
  "uniform" rule), each frame resized to the SigLIP size with bicubic resampling (no crop, no
  padding: the audio-visual inference path passes ``aspect_ratio=None``), scaled to [0, 1] and
  normalised with mean 0.5 and std 0.5. Frames given as an array are sampled by the same rule
  (the released code takes every frame of an array as given; with exactly ``num_frames`` frames
  the two agree).
* Audio input: the first channel of a multi-channel clip (the released ``soundfile`` path keeps
  channel 0), mono 16 kHz, cut or zero-padded to 30 s, ``×2**15``, 128-bin Kaldi fbank
  (25 ms / 10 ms). The released code picks a random 30-s window of a longer file; we take
  ``start`` (default 0).
* A video's sound track: decoded, mixed to mono and rounded to 16-bit samples (the released code
  reads it through ``ffmpeg -ac 1 -ar 16000 -f s16le``), then ``clips`` clips of
  ``clip_duration`` s whose starts are spread evenly from 0 to ``duration - clip_duration`` of
  the track, in exact rational arithmetic as pytorchvideo's ``ConstantClipsPerVideoSampler``
  computes them, concatenated, then padded to 30 s like audio.

Each function also returns where its output came from in time, for the token layout.

Example:
    >>> sample_frame_indices(100, 4)
    [12, 37, 62, 87]
    >>> [str(s) for s in clip_starts(5.0, clips=4, clip_duration=2.0)]
    ['0', '1', '2', '3']
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.inputs.audio import Audio, load_audio, warn_unstated_rate
from hooked_avllm.inputs.decode import decode_audio_file, decode_video_frames, existing_path, probe_video
from hooked_avllm.inputs.errors import InputError, describe
from hooked_avllm.inputs.fbank import beats_fbank
from hooked_avllm.inputs.vision import Image, Video, check_image, check_video, eight_bit, frames_from_arrays, to_pil

PCM16_SCALE = 32768.0  # ffmpeg's s16 output: round(x * 2**15), clipped to int16


def sample_frame_indices(n_total: int, num_frames: int) -> list[int]:
    """The middles of ``num_frames`` equal segments of frame indices ``0 .. n_total - 1``, each
    nudged up by 1e-6 and rounded (indices repeat when the video is shorter than ``num_frames``)."""
    if n_total < 1:
        raise InputError(f"the video has {n_total} frames; it needs at least one")
    if num_frames < 1:
        raise InputError(f"num_frames must be at least 1; got {num_frames}")
    segment = float(n_total - 1) / num_frames
    k = np.arange(num_frames, dtype=np.float64)
    middles = (segment * k + segment * (k + 1)) / 2
    return [int(i) for i in np.round(middles + 1e-6)]


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


def _pixels_to_uint8(pixels: Tensor) -> np.ndarray:
    """An :class:`Image`'s or :class:`Video`'s float pixels in [0, 255], channels first -> uint8 channels last."""
    return pixels.detach().cpu().round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).numpy()


@dataclass
class SampledVideo:
    """Preprocessed frames with the time (s) of each, and the video's sound track if it has one."""

    pixels: Float[Tensor, "frame 3 size size"]
    frame_times: Float[Tensor, "frame"]
    duration: float
    audio: Audio | None = None


def load_frames(source, num_frames: int, size: int, mean, std, fps: float | None = None, with_audio: bool = True) -> SampledVideo:
    """A video file, a frame array ``[T, H, W, 3]`` / ``[T, 3, H, W]`` (uint8, or float in [0, 1]),
    a list of frames (arrays, PIL images or image paths) or a :class:`~hooked_avllm.inputs.Video`
    -> ``num_frames`` preprocessed frames.

    Frames given without a file are taken at ``fps`` frames per second (default 1; a ``Video``'s
    own ``sample_fps``) for their times.
    """
    track = None
    if isinstance(source, (str, Path)):
        path = existing_path(source, "Video")
        probe = probe_video(path)
        if probe.total_frames < 1:
            raise InputError(f"the video {path} has no frames; check the file")
        rate, total = probe.fps, probe.total_frames
        raw = decode_video_frames(path, lambda n: sample_frame_indices(n, num_frames), total)
        frames = list(raw)
        if with_audio and probe.has_audio:
            track = load_audio(path)
    else:
        if isinstance(source, Video):
            check_video(source)
            track, rate = (source.audio if with_audio else None), source.sample_fps
            all_frames = list(_pixels_to_uint8(source.frames))
        else:
            if fps is not None and not fps > 0:
                raise InputError(f"video_fps must be positive; got {fps}")
            rate = fps or 1.0
            all_frames = list(frames_from_arrays(source).permute(0, 2, 3, 1).numpy())
        total = len(all_frames)
        frames = [all_frames[i] for i in sample_frame_indices(total, num_frames)]
    if not rate > 0:
        raise InputError(f"cannot tell the frame rate of the video ({rate}); pass the frames as an array with video_fps=")
    indices = sample_frame_indices(total, num_frames)
    while len(frames) < num_frames:  # a decoder that yields fewer frames than counted: black frames, as released
        frames.append(np.zeros_like(frames[-1]))
    return SampledVideo(resize_frames(frames, size, mean, std), torch.tensor(indices, dtype=torch.float32) / rate,
                        total / rate, track)


def load_image_pixels(source, size: int, mean, std) -> Float[Tensor, "3 size size"]:
    """An image path, PIL image, array or :class:`~hooked_avllm.inputs.Image` -> normalised ``[3, size, size]``.

    A file is read as the released ``process_image`` reads it (``convert("RGB")``, which drops an
    alpha channel); a PIL image or array with transparency is put over white, as the SigLIP
    processor's RGB conversion does.
    """
    if isinstance(source, (str, Path)):
        path = existing_path(source, "Image")
        try:
            with PILImage.open(path) as opened:
                array = np.asarray(eight_bit(opened).convert("RGB"))  # 16-bit scaled, not clipped to white
        except Exception as err:
            raise InputError(f"cannot read the image {path}: {err}. Pass a png/jpeg/webp/bmp file or an array") from err
    elif isinstance(source, Image):
        array = _pixels_to_uint8(check_image(source).pixels)
    else:
        array = np.asarray(to_pil(source))
    return resize_frames([array], size, mean, std)[0]


# ---------------------------------------------------------------- audio


def load_audio_input(source, sample_rate: int, start: float | None = None,
                     seconds: float | None = None) -> tuple[Audio, float]:
    """An audio input (path, array, ``(array, rate)`` or :class:`~hooked_avllm.inputs.Audio`) ->
    (mono clip at ``sample_rate``, source time in s of its first sample).

    Multi-channel input keeps its first channel, as the released ``process_audio_file`` does (an
    array's channel axis is the shorter one). ``start`` (s, default 0) and ``seconds`` cut the
    clip at its own rate before resampling, as the released code crops before it resamples.
    """
    if isinstance(source, Audio):
        samples, rate = source.waveform, source.sampling_rate
    elif isinstance(source, (str, Path)):
        samples, rate = decode_audio_file(source)  # [channels, samples]
    elif isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], (int, float)):
        samples, rate = source
    elif isinstance(source, (np.ndarray, Tensor)):
        warn_unstated_rate(source, sample_rate, stacklevel=4)
        samples, rate = source, sample_rate
    else:
        raise InputError(
            f"audio= got {describe(source)}; pass a file path, a 16-kHz array or tensor, "
            "an (array, sampling_rate) pair or an Audio"
        )
    if isinstance(samples, (np.ndarray, Tensor)) and samples.ndim not in (1, 2):
        raise InputError(f"audio= got an array of shape {tuple(samples.shape)}; expected [samples] or [channels, samples]")
    samples = samples.detach().cpu() if isinstance(samples, Tensor) else torch.from_numpy(np.asarray(samples))
    if samples.numel() == 0:  # before picking a channel: [1, 0] has no first sample to index
        raise InputError(f"the audio is empty (0 samples, shape {tuple(samples.shape)}); pass a clip of at least 0.02 s")
    if samples.ndim == 2:  # the first channel; the channel axis is the shorter one, as load_audio reads arrays
        if min(samples.shape) > 8:
            raise InputError(
                f"audio= got an array of shape {tuple(samples.shape)}; expected [samples] or [channels, samples] with at "
                "most 8 channels. For a batch give one clip per prompt in a list"
            )
        samples = samples[0] if samples.shape[0] <= samples.shape[1] else samples[:, 0]
    if not float(rate).is_integer() or rate <= 0:
        raise InputError(f"the audio's sampling rate must be a positive whole number of Hz; got {rate}")
    rate = int(rate)
    first = int(round((start or 0.0) * rate))
    if first < 0 or (start is not None and first >= samples.shape[-1]):
        raise InputError(
            f"audio_start={start} s is outside the audio ({samples.shape[-1] / rate:.3f} s); pick 0 <= audio_start < its length"
        )
    last = samples.shape[-1] if seconds is None else first + int(round(seconds * rate))
    clip = load_audio((samples[first:last], rate), sampling_rate=sample_rate)
    return clip, first / rate


def clip_starts(duration: float, clips: int, clip_duration: float) -> list[Fraction]:
    """Start times (s, exact) of ``clips`` windows of ``clip_duration`` s spread evenly over
    ``duration`` s, as pytorchvideo's ``ConstantClipsPerVideoSampler`` gives them: the latest start
    ``max(duration - clip_duration, 0)`` divided into ``max(clips - 1, 1)`` equal steps, computed
    with ``Fraction`` so the sample boundaries round the same way."""
    latest = Fraction(max(duration - clip_duration, 0))  # the subtraction in float, as the sampler does it
    step = latest / max(clips - 1, 1)
    starts = []
    for k in range(clips):
        starts.append(step * k)
        if step * (k + 1) > latest:  # the sampler's early stop (never reached in exact arithmetic)
            break
    return starts


def video_audio_clips(track: Audio, clips: int, clip_duration: float) -> tuple[Tensor, Tensor]:
    """The released processor's clips of a video's sound track: the track rounded to 16-bit
    samples, then ``clips`` windows of ``clip_duration`` s (:func:`clip_starts` over the track's own
    duration; every window at 0 for a track shorter than one clip, each as long as the track
    allows), concatenated; returns (waveform, source time in s of each sample)."""
    rate = track.sampling_rate
    wave = (track.waveform.double() * PCM16_SCALE).round().clamp(-PCM16_SCALE, PCM16_SCALE - 1) / PCM16_SCALE
    duration = track.waveform.shape[0] / rate
    parts, times = [], []
    for start in clip_starts(duration, clips, clip_duration):
        a, b = int(start * rate), int((start + Fraction(clip_duration)) * rate)
        part = wave[a:b]
        parts.append(part.float())
        times.append(torch.arange(a, a + part.shape[0], dtype=torch.float64) / rate)
    return torch.cat(parts), torch.cat(times)


@dataclass
class AudioStream:
    """The fbank of one 30-s audio input and the source time (s) of each fbank frame (NaN for padding)."""

    fbank: Float[Tensor, "frame 128"]
    frame_source_time: Float[Tensor, "frame"]


def audio_stream(waveform: Float[Tensor, "samples"], sample_rate: int, clip_seconds: float,
                 source_times: Float[Tensor, "samples"] | None = None) -> AudioStream:
    """Cut or zero-pad 16-kHz audio to ``clip_seconds`` and take its BEATs fbank; a frame's source
    time is that of its first sample (NaN when that sample is padding)."""
    n = int(round(clip_seconds * sample_rate))
    if source_times is None:
        source_times = torch.arange(waveform.shape[0], dtype=torch.float64) / sample_rate
    if source_times.shape[0] != waveform.shape[0]:
        raise InputError(f"source_times has {source_times.shape[0]} entries for {waveform.shape[0]} samples")
    waveform, source_times = waveform[:n].float(), source_times[:n].double()
    if waveform.shape[0] < n:
        pad = n - waveform.shape[0]
        waveform = torch.nn.functional.pad(waveform, (0, pad))
        source_times = torch.cat([source_times, torch.full((pad,), float("nan"), dtype=torch.float64)])
    fbank = beats_fbank(waveform)
    shift = sample_rate // 100  # 10 ms frames
    starts = torch.arange(fbank.shape[0]) * shift
    return AudioStream(fbank, source_times[starts].float())
