"""Decoding media files: audio with soundfile or PyAV, video frames with PyAV.

Everything here turns decoder failures into :class:`InputError` messages that name the file and
say what to do; nothing resamples or resizes (that is :mod:`.resample` and :mod:`.vision`).

Example:
    >>> samples, rate = decode_audio_file("speech.wav")          # doctest: +SKIP
    >>> samples.shape  # [channels, samples]                   # doctest: +SKIP
    (1, 52000)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hooked_avllm.inputs.errors import InputError, MediaFileNotFoundError

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".mp3", ".w64", ".rf64"}
CONTAINER_SUFFIXES = {
    ".mp4",
    ".m4a",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".aac",
    ".wma",
    ".wmv",
    ".flv",
    ".mpg",
    ".mpeg",
    ".ts",
    ".3gp",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_NOT_AUDIO = IMAGE_SUFFIXES | {".txt", ".json", ".npy", ".pt", ".csv", ".md", ".pdf"}


def existing_path(path: str | Path, what: str) -> Path:
    """The path as a ``Path``; an error that says what to do when it is missing or a folder."""
    text = str(path)
    if text.startswith(("http://", "https://")):
        raise InputError(f"{what} {text!r} is a URL; download it first and pass the local path.")
    path = Path(text[len("file://") :] if text.startswith("file://") else text).expanduser()
    if not path.exists():
        raise MediaFileNotFoundError(
            f"{what} file not found: {path}. Check the path (it is resolved from {Path.cwd()})."
        )
    if path.is_dir():
        raise InputError(f"{what} path {path} is a folder; pass a file.")
    return path


def _open_container(path: Path, what: str):
    import av

    try:
        return av.open(str(path))
    except Exception as err:  # PyAV raises many FFmpeg error types
        raise InputError(
            f"Cannot read {what} {path}: {err}. The file may be corrupt, truncated or not a media file; "
            "re-encode it (e.g. `ffmpeg -i in out.mp4`) or pass decoded arrays instead."
        ) from err


def decode_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file or the audio track of a video file.

    Returns float32 samples ``[channels, samples]`` in [-1, 1] and the native sampling rate.
    Plain audio formats go through soundfile; containers (mp4, mkv, m4a, ...) through PyAV.
    """
    path = existing_path(path, "Audio")
    suffix = path.suffix.lower()
    if suffix in _NOT_AUDIO:
        raise InputError(
            f"Unsupported audio format {suffix!r} ({path}). Pass a sound file (wav, flac, ogg, mp3, ...), "
            "a video with an audio track (mp4, mkv, webm, ...), or an array with its sampling rate."
        )
    samples, rate = None, None
    if suffix in SOUNDFILE_SUFFIXES:
        samples, rate = _decode_with_soundfile(path)
    if samples is None:
        samples, rate = _decode_audio_with_av(path)
    return samples, rate


def _decode_with_soundfile(path: Path) -> tuple[np.ndarray | None, int | None]:
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
    except Exception:  # fall back to FFmpeg, which reads more variants
        return None, None
    return np.ascontiguousarray(data.T), int(rate)


def _decode_audio_with_av(path: Path) -> tuple[np.ndarray, int]:
    container = _open_container(path, "audio of")
    with container:
        if not container.streams.audio:
            raise InputError(
                f"{path} has no audio track. Pass use_audio_in_video=False for a silent video, "
                "or give the sound separately as audio=."
            )
        stream = container.streams.audio[0]
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks.append(_audio_frame_to_float(frame))
        except Exception as err:
            raise InputError(
                f"Decoding the audio of {path} failed: {err}. The file may be corrupt; re-encode it."
            ) from err
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    if not chunks or rate <= 0:
        raise InputError(f"The audio track of {path} is empty or has no sampling rate; check the file.")
    return np.concatenate(chunks, axis=1), rate


def _audio_frame_to_float(frame) -> np.ndarray:
    """One PyAV audio frame as float32 ``[channels, samples]`` in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # interleaved: [1, samples * channels]
        data = data.reshape(-1, channels).T
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    return data.astype(np.float32)


@dataclass(frozen=True)
class VideoProbe:
    """What is known about a video file before decoding its frames."""

    total_frames: int
    fps: float
    height: int
    width: int
    has_audio: bool


def probe_video(path: str | Path, start: float | None = None, end: float | None = None) -> VideoProbe:
    """Count the frames (by demuxing, without decoding) and read the frame rate and size."""
    path = existing_path(path, "Video")
    container = _open_container(path, "video")
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video track. Pass it as audio= if it is a sound file.")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size and _in_range(packet.pts, stream.time_base, start, end):
                    count += 1
        except Exception as err:
            raise InputError(f"Reading {path} failed: {err}. The file may be corrupt; re-encode it.") from err
        if fps <= 0 and stream.duration and count:
            fps = count / float(stream.duration * stream.time_base)
        return VideoProbe(
            count, fps, stream.codec_context.height, stream.codec_context.width, bool(container.streams.audio)
        )


def _in_range(pts, time_base, start: float | None, end: float | None) -> bool:
    if pts is None or (start is None and end is None):
        return True
    seconds = float(pts * time_base)
    return (start is None or seconds >= start - 1e-6) and (end is None or seconds <= end + 1e-6)


def decode_video_frames(
    path: str | Path,
    wanted: Callable[[int], list[int]],
    total_frames: int,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Decode the frames whose indices ``wanted(total_frames)`` lists: uint8 ``[n, height, width, 3]`` RGB.

    If the decoder yields fewer frames than the demuxer counted, the indices are recomputed for
    the real count and the file is decoded once more.
    """
    path = existing_path(path, "Video")
    indices = wanted(total_frames)
    frames, decoded = _decode_indices(path, indices, start, end)
    if len(frames) < len(indices):
        if decoded < 1:
            raise InputError(f"No frame of {path} could be decoded; the file may be corrupt. Re-encode it.")
        indices = wanted(decoded)
        frames, _ = _decode_indices(path, indices, start, end)
    return np.stack(frames)


def _decode_indices(
    path: Path, indices: list[int], start: float | None, end: float | None
) -> tuple[list[np.ndarray], int]:
    container = _open_container(path, "video")
    wanted: dict[int, int] = {}
    for index in indices:
        wanted[index] = wanted.get(index, 0) + 1
    frames: list[np.ndarray] = []
    count = 0
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in _frames_in_range(container, stream, start, end):
                if count in wanted:
                    image = frame.to_ndarray(format="rgb24")
                    frames.extend([image] * wanted[count])
                count += 1
                if count > indices[-1] and len(frames) == len(indices):
                    break
        except Exception as err:
            raise InputError(
                f"Decoding {path} failed at frame {count}: {err}. The file may be corrupt; re-encode it."
            ) from err
    return frames, count


def _frames_in_range(container, stream, start: float | None, end: float | None) -> Iterator:
    for frame in container.decode(stream):
        if frame.time is not None and start is not None and frame.time < start - 1e-6:
            continue
        if frame.time is not None and end is not None and frame.time > end + 1e-6:
            break
        yield frame
