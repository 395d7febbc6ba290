"""Shared helpers for the tests of hooked_avllm.inputs (no tests here).

The Omni tokenizer is loaded once per session from the hub fixtures in tests/fixtures; media files are
written with PyAV / soundfile so the tests never depend on files outside the repository.
"""

from __future__ import annotations

import fractions
import functools
from pathlib import Path

import numpy as np

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"
OMNI = HUB / "Qwen__Qwen2.5-Omni-7B"
VL = HUB / "Qwen__Qwen2.5-VL-7B-Instruct"

# special-token ids of Qwen2.5-Omni, written out here (not read from the library under test)
IM_START, IM_END, PAD = 151644, 151645, 151643
AUDIO, AUDIO_BOS, AUDIO_EOS = 151646, 151647, 151648
VISION_BOS, VISION_EOS, IMAGE, VIDEO = 151652, 151653, 151655, 151656


@functools.lru_cache(maxsize=1)
def omni_tokenizer():
    from transformers import AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(str(OMNI))


def encode_mp4(path: Path, frames: np.ndarray, fps: int, track: np.ndarray | None = None, audio_rate: int = 44100) -> Path:
    """An H.264 mp4 of uint8 ``frames`` [T, H, W, 3], with an AAC track of ``track`` [channels, samples] if given."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = None
        if track is not None:
            audio = out.add_stream("aac", rate=audio_rate)
            audio.layout = "stereo" if track.shape[0] == 2 else "mono"
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            signal = track.astype(np.float32)
            for start in range(0, signal.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(signal[:, start : start + 1024]), format="fltp", layout=audio.layout.name
                )
                frame.sample_rate, frame.pts, frame.time_base = audio_rate, start, fractions.Fraction(1, audio_rate)
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return path


def write_mp4(
    path: Path,
    seconds: float = 3.0,
    fps: int = 10,
    size: tuple[int, int] = (48, 64),
    audio_rate: int | None = 44100,
    channels: int = 2,
    tone: float = 440.0,
) -> Path:
    """An H.264 mp4 whose frame i has red level 8*i, with an AAC sine track (or none)."""
    height, width = size
    n_frames = int(round(seconds * fps))
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    frames[..., 0] = (8 * np.arange(n_frames) % 256)[:, None, None]
    track = None
    if audio_rate:
        t = np.arange(int(seconds * audio_rate)) / audio_rate
        track = np.stack([0.3 * np.sin(2 * np.pi * tone * t)] * channels)
    return encode_mp4(path, frames, fps, track, audio_rate or 44100)


def audio_tokens(n_samples: int, hop: int = 160) -> int:
    """The audio token count, written out from the issue's formula."""
    frames = -(-n_samples // hop)
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1
