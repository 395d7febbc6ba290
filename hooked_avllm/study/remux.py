"""Remuxing a clip with another clip's sound (PyAV): the video packets copied, the sound stored as float PCM.

:func:`remux_with_audio` writes a clip whose video stream is the source's packets muxed as they are
(bytes, pts and dts unchanged, never re-encoded) and whose only sound track is another file's
sound, trimmed or padded with silence to the video's duration.

The sound is decoded (:func:`hooked_avllm.inputs.decode.decode_audio_file`, as the library reads
every clip) and stored as 32-bit float PCM (``pcm_f32le``) at the partner's own sampling rate and
channel count: no resampling, no down-mix, no second lossy encoding. Decoding the written clip
therefore gives the partner's decoded float32 samples bit for bit (tolerance: none), then zeros
for the padding. The price is size: 0.38 MB per second of 48 kHz stereo, some 25 times 128 kb/s AAC.

The container is QuickTime (``.mov``, the default), which keeps the video's time base, so pts and
dts are copied tick for tick (negative dts of B-frame streams included) and holds H.264, HEVC and
MPEG-4 video (from a Matroska source, whose packets carry no dts, FFmpeg fills the dts in). It
cannot hold VP9 or AV1 (webm downloads): pass ``container="mkv"`` for those; Matroska copies the
packet bytes too, but stores pts in milliseconds and no dts.

The video's duration is the span of its frames: from the first frame's pts to the end of the
last frame (its pts plus its duration), so a 10-frame clip at 10 fps lasts exactly 1 s and gets
``round(1 s * rate)`` samples, starting at the first frame's time.

Example:
    >>> import numpy as np
    >>> fitted, silence = fit_to_length(np.ones((2, 5), np.float32), 8)  # 5 samples padded to 8
    >>> fitted[0].tolist(), silence
    ([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], 3)
    >>> report = remux_with_audio("video.mp4", "other.mp4", "out.mov")  # doctest: +SKIP
    >>> report.silence_seconds  # the other clip's sound was long enough  # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from hooked_avllm.inputs.decode import decode_audio_file, existing_path
from hooked_avllm.inputs.errors import InputError

CONTAINERS = {"mov": ".mov", "mkv": ".mkv"}  # container name -> file suffix
AUDIO_CODEC = "pcm_f32le"
_CHUNK = 4096  # samples per encoded audio frame


@dataclass(frozen=True)
class ClipProbe:
    """What a clip holds, read by demuxing its video packets (nothing is decoded)."""

    path: Path
    video_codec: str
    video_start: Fraction  # seconds: the first frame's pts
    video_end: Fraction  # seconds: the last frame's pts plus its duration
    audio_codec: str

    @property
    def video_seconds(self) -> float:
        return float(self.video_end - self.video_start)


@dataclass(frozen=True)
class RemuxReport:
    """What :func:`remux_with_audio` wrote: durations in seconds."""

    video_seconds: float  # the span of the copied frames
    audio_seconds: float  # the sound written: round(video_seconds * rate) samples
    audio_source_seconds: float  # the partner's whole decoded sound
    silence_seconds: float  # padding appended because the partner's sound was shorter (0 when trimmed)


def probe_clip(path: str | Path) -> ClipProbe:
    """Open ``path``, require a video track with frames and a sound track, and measure the video's span."""
    path = existing_path(path, "Clip")
    container = _open(path)
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video track; pass video files with sound (mp4, mov, mkv, ...)")
        if not container.streams.audio:
            raise InputError(f"{path} has no sound track, so it cannot lend its sound or be a factual clip; "
                             "leave it out or add its sound (ffmpeg -i video -i sound -c:v copy out.mp4)")
        stream = container.streams.video[0]
        start, end = _video_span(path, stream, _demux(path, container, stream))
        return ClipProbe(path, stream.codec_context.name, start, end, container.streams.audio[0].codec_context.name)


def check_container_holds(probe: ClipProbe, container: str) -> None:
    """Mux the clip's first video packet into an in-memory ``container``: raise now, not mid-run, if it cannot."""
    import av

    muxer = _format(container)
    with av.open(str(probe.path)) as source:
        stream = source.streams.video[0]
        packet = next(p for p in source.demux(stream) if p.size)
        try:
            with av.open(io.BytesIO(), "w", format=muxer) as target:
                packet.stream = target.add_stream_from_template(stream)
                target.mux(packet)
        except Exception as err:  # FFmpeg's muxers raise several error types
            other = "mkv" if container == "mov" else "mov"
            raise InputError(f"{probe.path}: the {container} container cannot hold its {probe.video_codec} video "
                             f"({err}); pass container={other!r} (--container {other})") from err


def fit_to_length(samples: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """``samples`` ``[channels, n]`` cut or padded with zeros to ``length``; also the zeros added."""
    if samples.shape[1] >= length:
        return samples[:, :length], 0
    silence = length - samples.shape[1]
    return np.pad(samples, ((0, 0), (0, silence))), silence


def remux_with_audio(video_source: str | Path, audio_source: str | Path, out: str | Path,
                     container: str = "mov") -> RemuxReport:
    """Write ``out``: the video packets of ``video_source`` copied, with the sound of ``audio_source``
    (from its first sample) as float PCM fitted to the video's span. The file appears only when complete."""
    video_source, out = existing_path(video_source, "Video source"), Path(out)
    samples, rate = decode_audio_file(audio_source)
    partial = out.with_name(f".{out.name}.partial")
    try:
        report = _write(video_source, samples, rate, partial, container)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return report


def _write(video_source: Path, samples: np.ndarray, rate: int, target: Path, container: str) -> RemuxReport:
    import av

    source = _open(video_source)
    with source, av.open(str(target), "w", format=_format(container)) as output:
        stream = source.streams.video[0]
        packets = _demux(video_source, source, stream)
        start, end = _video_span(video_source, stream, packets)
        length = round((end - start) * rate)
        fitted, silence = fit_to_length(samples, length)
        video_out = output.add_stream_from_template(stream)
        audio_out = output.add_stream(AUDIO_CODEC, rate=rate, layout=_layout(fitted.shape[0]))
        for packet in packets:
            packet.stream = video_out
            output.mux(packet)
        _encode_audio(output, audio_out, fitted, rate, first_pts=round(start * rate))
    return RemuxReport(float(end - start), length / rate, samples.shape[1] / rate, silence / rate)


def _encode_audio(output, stream, samples: np.ndarray, rate: int, first_pts: int) -> None:
    import av

    interleaved = np.ascontiguousarray(samples.T, dtype=np.float32)  # [n, channels]: packed 'flt'
    layout = _layout(samples.shape[0])
    for begin in range(0, interleaved.shape[0], _CHUNK):
        chunk = interleaved[begin : begin + _CHUNK]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, first_pts + begin, Fraction(1, rate)
        for packet in stream.encode(frame):
            output.mux(packet)
    for packet in stream.encode():
        output.mux(packet)


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def _format(container: str) -> str:
    if container not in CONTAINERS:
        raise InputError(f"container={container!r} is not one of {sorted(CONTAINERS)}; pass 'mov' (keeps every "
                         "timestamp) or 'mkv' (for VP9 or AV1 video)")
    return {"mov": "mov", "mkv": "matroska"}[container]


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except Exception as err:  # PyAV raises many FFmpeg error types
        raise InputError(f"cannot read {path}: {err}; the file may be corrupt, truncated or not a media file "
                         "(re-encode it: ffmpeg -i in.mp4 out.mp4)") from err


def _demux(path: Path, container, stream) -> list:
    try:
        return [packet for packet in container.demux(stream) if packet.size]  # the last, empty one flushes
    except Exception as err:
        raise InputError(f"reading the video of {path} failed: {err}; the file may be corrupt (re-encode it)") from err


def _video_span(path: Path, stream, packets: list) -> tuple[Fraction, Fraction]:
    """First frame's time and the end of the last frame, in seconds (exact fractions)."""
    if not packets:
        raise InputError(f"{path} has a video track without frames; re-encode it or leave it out")
    if any(p.pts is None for p in packets):
        raise InputError(f"{path} has video packets without timestamps; remux it to mp4 first "
                         "(ffmpeg -i in -c copy out.mp4)")
    base = Fraction(stream.time_base)
    pts = sorted(p.pts for p in packets)
    last = max(packets, key=lambda p: p.pts)
    duration = last.duration or _frame_ticks(stream, pts)
    return pts[0] * base, (last.pts + duration) * base


def _frame_ticks(stream, pts: list[int]) -> int:
    """One frame's duration in ticks when the last packet does not say: from the frame rate, else the median gap."""
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return round(1 / (Fraction(rate) * Fraction(stream.time_base)))
    gaps = np.diff(pts)
    return int(np.median(gaps)) if len(gaps) else 0


__all__ = ["AUDIO_CODEC", "CONTAINERS", "ClipProbe", "RemuxReport", "check_container_holds", "fit_to_length",
           "probe_clip", "remux_with_audio"]
