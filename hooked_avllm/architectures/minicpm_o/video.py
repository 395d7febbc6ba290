"""MiniCPM-o's videos: the vision-only recipe (about a frame a second, at most 64) and the
audio-visual "omni" recipe (one ``<unit>`` a second: the frame at ``t = i + 1`` s and that second's
sound).

Example:
    >>> [(u.frame_index, u.n_audio_samples) for u in omni_units(2.5, 10.0, 25, 40000)]
    [(10, 16000), (20, 16000), (20, 8000)]
"""


from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_avllm.architectures.minicpm_o.audio import (
    audio_placeholder,
    audio_token_count,
)
from hooked_avllm.architectures.minicpm_o.constants import (
    OMNI_SYSTEM_PROMPT,
    SAMPLING_RATE,
    UNIT_TOKEN,
    VIDEO_MAX_FRAMES,
)
from hooked_avllm.architectures.minicpm_o.image import image_placeholder
from hooked_avllm.inputs.audio import load_audio
from hooked_avllm.inputs.decode import decode_video_frames, existing_path, probe_video
from hooked_avllm.inputs.errors import InputError

# ---------------------------------------------------------------- video


def video_frame_indices(n_frames: int, fps: float, max_frames: int = VIDEO_MAX_FRAMES) -> list[int]:
    """The README's video frames: every ``round(fps)``-th frame from frame 0 (about 1 per second;
    Python's round), and if more than ``max_frames``, ``max_frames`` of those picked at
    ``int(i * gap + gap / 2)`` with ``gap = count / max_frames``. A frame rate under 0.5 (where the
    release's step would be 0) takes every frame.

    Example:
        >>> video_frame_indices(100, 25.0)
        [0, 25, 50, 75]
        >>> len(video_frame_indices(30 * 200, 30.0)), video_frame_indices(30 * 200, 30.0)[:3]
        (64, [30, 120, 210])
    """
    if n_frames < 1:
        raise InputError(f"the video has {n_frames} frames; it needs at least one")
    if not fps > 0:
        raise InputError(f"the video's frame rate must be positive; got {fps!r}. Pass frames with a known fps")
    if max_frames < 1:
        raise InputError(f"max_frames must be at least 1; got {max_frames}")
    step = max(round(fps), 1)
    picked = list(range(0, n_frames, step))
    if len(picked) > max_frames:
        gap = len(picked) / max_frames
        picked = [picked[int(i * gap + gap / 2)] for i in range(max_frames)]
    return picked


@dataclass
class SampledVideo:
    """Frames of the vision-only video recipe: uint8 RGB ``[n, H, W, 3]``, their indices and times (s)."""

    frames: np.ndarray
    indices: list[int]
    times: list[float]
    fps: float


def load_video_frames(path: str | Path, max_frames: int = VIDEO_MAX_FRAMES) -> SampledVideo:
    """Decode the frames :func:`video_frame_indices` picks from a video file (PyAV; the README
    reads them with decord at the same indices). Pass them as PIL images in one user message,
    followed by the question, with ``max_slice_nums=2`` and ``use_image_id=False``.

    Example:
        >>> video = load_video_frames("clip.mp4")                 # doctest: +SKIP
        >>> video.indices[:3], video.frames.shape[-1]              # doctest: +SKIP
        ([0, 25, 50], 3)
    """
    path = existing_path(path, "Video")
    probe = probe_video(path)
    if probe.total_frames < 1 or not probe.fps > 0:
        raise InputError(f"cannot read frames or a frame rate from {path} ({probe.total_frames} frames at {probe.fps} fps)")
    picked: list[int] = []

    def wanted(n: int) -> list[int]:
        picked[:] = video_frame_indices(n, probe.fps, max_frames)
        return picked

    frames = decode_video_frames(path, wanted, probe.total_frames)
    return SampledVideo(frames, list(picked), [i / probe.fps for i in picked], probe.fps)


@dataclass(frozen=True)
class OmniUnit:
    """One second of an audio-visual clip in the omni recipe: its frame (index into the decoded
    frames, and the time the recipe asked for), and its audio samples ``[audio_start, audio_end)``."""

    index: int
    frame_time: float
    frame_index: int
    frame_in_range: bool
    audio_start: int
    audio_end: int

    @property
    def n_audio_samples(self) -> int:
        return self.audio_end - self.audio_start


def omni_units(
    duration: float,
    fps: float,
    n_frames: int,
    n_audio_samples: int,
    sampling_rate: int = SAMPLING_RATE,
    past_end: Literal["repeat_previous", "last_frame"] = "repeat_previous",
) -> list[OmniUnit]:
    """The README's omni units of a clip: ``ceil(duration)`` units; unit i takes the frame shown
    at ``t = i + 1`` s and audio samples ``[sr*i, sr*(i+1))`` (cut at the end of the track, so the
    last unit may hold less than a second, or nothing).

    The frame shown at ``t`` is frame ``floor(fps*t + 1e-5)`` (moviepy 1.x's reader, which reads
    the frames in order). The last unit's ``t`` is always at or past the end of the video; moviepy
    then warns and returns the last frame it *read*, i.e. the previous unit's frame (frame 0 for a
    clip of one unit): ``past_end="repeat_previous"`` (default) does the same;
    ``"last_frame"`` takes the video's last frame instead.

    Example:
        >>> [(u.frame_index, u.n_audio_samples) for u in omni_units(2.5, 10.0, 25, 40000)]
        [(10, 16000), (20, 16000), (20, 8000)]
        >>> [u.frame_index for u in omni_units(2.5, 10.0, 25, 40000, past_end="last_frame")]
        [10, 20, 24]
    """
    if not duration > 0:
        raise InputError(f"the clip's duration must be positive; got {duration!r} s")
    if not fps > 0:
        raise InputError(f"the clip's frame rate must be positive; got {fps!r}")
    if n_frames < 1:
        raise InputError(f"the clip has {n_frames} frames; the omni recipe needs at least one")
    if past_end not in ("repeat_previous", "last_frame"):
        raise InputError(f"past_end must be 'repeat_previous' or 'last_frame'; got {past_end!r}")
    units, last_read = [], 0
    for i in range(math.ceil(duration)):
        t = float(i + 1)
        wanted = int(fps * t + 0.00001)
        in_range = wanted < n_frames
        if in_range:
            frame, last_read = wanted, wanted
        else:
            frame = last_read if past_end == "repeat_previous" else n_frames - 1
        start = min(sampling_rate * i, n_audio_samples)
        end = min(sampling_rate * (i + 1), n_audio_samples)
        units.append(OmniUnit(i, t, frame, in_range, start, end))
    return units


def omni_unit_placeholder(n_audio_samples: int, n_queries: int = 64, chunk_input: bool = True) -> str:
    """The text of one omni unit: ``<unit>``, the frame as one slice without image id, the audio
    placeholder (94 tokens for a full second: 1 + 66 + 27).

    Example:
        >>> text = omni_unit_placeholder(16000)
        >>> text.count("<unk>"), text[:14]
        (89, '<unit><image><')
    """
    return (
        UNIT_TOKEN
        + image_placeholder(None, use_image_id=False, n_queries=n_queries)
        + audio_placeholder(n_audio_samples, chunk_input)
    )


def omni_unit_token_count(n_audio_samples: int, n_queries: int = 64, chunk_input: bool = True) -> int:
    """Sequence positions of one omni unit (94 for a full second).

    Example:
        >>> omni_unit_token_count(16000), omni_unit_token_count(8000), omni_unit_token_count(0)
        (94, 81, 67)
    """
    return 1 + (n_queries + 2) + audio_token_count(n_audio_samples, chunk_input)


def omni_content(frames: Sequence[Any], audios: Sequence[Any]) -> list[Any]:
    """The omni user message's content: ``["<unit>", frame_0, audio_0, "<unit>", frame_1, ...]``
    (render it with ``omni_input=True``, which joins the items with nothing between them).

    Example:
        >>> omni_content(["f0", "f1"], ["a0", "a1"])
        ['<unit>', 'f0', 'a0', '<unit>', 'f1', 'a1']
    """
    if len(frames) != len(audios):
        raise InputError(f"omni_content got {len(frames)} frames and {len(audios)} audio parts; give one of each per unit")
    content: list[Any] = []
    for frame, audio in zip(frames, audios):
        content.extend([UNIT_TOKEN, frame, audio])
    return content


def omni_system_message(language: Literal["en", "zh"] = "en") -> dict[str, Any]:
    """The omni recipe's system prompt, which the release sends as a *user* message.

    Example:
        >>> omni_system_message()["role"], omni_system_message()["content"][0][:20]
        ('user', 'You are a helpful as')
    """
    if language not in OMNI_SYSTEM_PROMPT:
        raise InputError(f"language must be one of {sorted(OMNI_SYSTEM_PROMPT)}; got {language!r}")
    return {"role": "user", "content": [OMNI_SYSTEM_PROMPT[language]]}


def pcm16(waveform: Float[Tensor, "samples"]) -> Float[Tensor, "samples"]:
    """Round samples to 16-bit PCM and back (the omni recipe writes the sound track as pcm_s16le).

    Example:
        >>> pcm16(torch.tensor([0.1, 2.0]))
        tensor([0.1000, 1.0000])
    """
    return (waveform.double() * 32768.0).round().clamp(-32768, 32767).div(32768.0).to(torch.float32)


def _container_duration(path: Path) -> float | None:
    import av

    with av.open(str(path)) as container:
        if container.duration is not None:
            return container.duration / 1_000_000  # AV_TIME_BASE
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
    return None


@dataclass
class OmniVideo:
    """A clip cut into omni units: one RGB frame ``[H, W, 3]`` uint8 and one 16-kHz audio part per unit."""

    frames: list[np.ndarray]
    audios: list[Float[Tensor, "samples"]]
    units: list[OmniUnit]
    duration: float
    fps: float


def load_omni_video(
    path: str | Path, past_end: Literal["repeat_previous", "last_frame"] = "repeat_previous"
) -> OmniVideo:
    """Decode a video file with sound into omni units (frames with PyAV, the sound track mixed
    to mono, resampled to 16 kHz and rounded to 16 bits). The duration is the container's, as
    moviepy reads it; see :func:`omni_units` for the frame rule.

    Example:
        >>> clip = load_omni_video("clip.mp4")                 # doctest: +SKIP
        >>> len(clip.units), clip.audios[0].shape              # doctest: +SKIP
        (10, torch.Size([16000]))
    """
    path = existing_path(path, "Video")
    probe = probe_video(path)
    if not probe.has_audio:
        raise InputError(
            f"{path} has no sound track, so the omni (audio-visual) recipe cannot use it; "
            "pass use_audio_in_video=False to take its frames only (the vision-only video recipe)"
        )
    if probe.total_frames < 1 or not probe.fps > 0:
        raise InputError(f"cannot read frames or a frame rate from {path} ({probe.total_frames} frames at {probe.fps} fps)")
    duration = _container_duration(path) or probe.total_frames / probe.fps
    track = pcm16(load_audio(path, sampling_rate=SAMPLING_RATE).waveform)
    units = omni_units(duration, probe.fps, probe.total_frames, track.shape[0], SAMPLING_RATE, past_end)
    wanted = sorted({u.frame_index for u in units})
    decoded = decode_video_frames(path, lambda n: [min(i, n - 1) for i in wanted], probe.total_frames)
    by_index = dict(zip(wanted, decoded))
    frames = [by_index[u.frame_index] for u in units]
    audios = [track[u.audio_start : u.audio_end] for u in units]
    return OmniVideo(frames, audios, units, duration, probe.fps)


def omni_video_from(video: Any, past_end: Literal["repeat_previous", "last_frame"] = "repeat_previous") -> OmniVideo:
    """A loaded :class:`~hooked_avllm.inputs.Video` with its sound track (frames at ``sample_fps``)
    cut into omni units as :func:`load_omni_video` cuts a file: unit i takes the frame shown at
    ``t = i + 1`` s and that second of the track (mixed to mono, 16 kHz, rounded to 16 bits).

    Example:
        >>> from hooked_avllm.inputs import Audio, Video
        >>> clip = Video(torch.zeros(5, 3, 28, 28), fps=2.0, sample_fps=2.0, audio=Audio(torch.zeros(40000), 16000))
        >>> [(u.frame_index, u.n_audio_samples) for u in omni_video_from(clip).units]
        [(2, 16000), (4, 16000), (4, 8000)]
    """
    if video.audio is None:
        raise InputError("the Video has no sound track, so the omni (audio-visual) recipe cannot use it; "
                         "pass use_audio_in_video=False to take its frames only")
    track = pcm16(load_audio(video.audio, sampling_rate=SAMPLING_RATE).waveform)
    frames = video.frames.detach().cpu().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    units = omni_units(video.duration, video.sample_fps, len(frames), track.shape[0], SAMPLING_RATE, past_end)
    return OmniVideo([frames[u.frame_index] for u in units], [track[u.audio_start : u.audio_end] for u in units],
                     units, video.duration, video.sample_fps)


__all__ = ["OmniUnit", "OmniVideo", "SampledVideo", "load_omni_video", "load_video_frames", "omni_content", "omni_system_message", "omni_unit_placeholder", "omni_unit_token_count", "omni_units", "omni_video_from", "pcm16", "video_frame_indices"]
