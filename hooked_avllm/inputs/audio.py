"""Audio in, Whisper features out: load, mix to mono, resample to 16 kHz, log-mel, masks.

``load_audio`` accepts a path (wav/flac/ogg/mp3 via soundfile, any container's audio track via
PyAV), a numpy array or torch tensor (with ``source_rate``; a bare array is taken to be at the
target rate already), a ``(array, rate)`` pair or an :class:`Audio`. ``audio_features`` turns a
list of clips into the ``input_features`` and ``feature_attention_mask`` the audio tower takes,
either padded to the checkpoint's ``chunk_length`` (300 s, as the reference processor does) or
only to the longest clip; the real frames are identical in both modes.

Example:
    >>> import torch
    >>> clip = load_audio(torch.zeros(8000), source_rate=16000)
    >>> feats = audio_features([clip], WhisperFeatureConfig(), padding="longest")
    >>> feats.input_features.shape, feats.frame_counts.tolist()
    (torch.Size([1, 128, 50]), [50])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.inputs.decode import decode_audio_file
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.mel import log_mel_spectrogram, padded_for_frames
from hooked_avllm.inputs.resample import resample


@dataclass(frozen=True)
class WhisperFeatureConfig:
    """Whisper log-mel settings: ``sampling_rate``, ``feature_size`` (mel bins), ``n_fft``,
    ``hop_length``, ``chunk_length`` (seconds the features are padded to), ``n_samples`` and
    ``nb_max_frames`` (the same limit in samples and frames), ``dither``, ``padding_value``.
    Defaults: Qwen2.5-Omni's feature extractor (128 bins, 300 s). A family's preprocessing
    config extends it (the Qwen pipeline's ``PreprocessorConfig``).

    Example:
        >>> WhisperFeatureConfig().nb_max_frames
        30000
    """

    sampling_rate: int = 16000
    feature_size: int = 128
    n_fft: int = 400
    hop_length: int = 160
    chunk_length: int = 300
    n_samples: int = 4_800_000
    nb_max_frames: int = 30_000
    dither: float = 0.0
    padding_value: float = 0.0


@dataclass
class Audio:
    """A mono clip: float32 samples in [-1, 1] at ``sampling_rate`` Hz."""

    waveform: Float[Tensor, "samples"]
    sampling_rate: int
    source: str | None = None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.waveform.shape[-1] / self.sampling_rate


AudioLike = Union[str, Path, np.ndarray, Tensor, Audio, tuple]


def load_audio(
    source: AudioLike,
    *,
    sampling_rate: int = 16000,
    source_rate: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> Audio:
    """Load any audio-like value as mono float32 at ``sampling_rate``.

    Multi-channel audio is averaged to mono; other rates are resampled with the band-limited
    resampler of :mod:`.resample`. Arrays may be ``[samples]``, ``[channels, samples]`` or
    ``[samples, channels]`` (at most 8 channels); integer arrays are scaled to [-1, 1]. For an
    array without ``source_rate`` (and not a ``(array, rate)`` pair) the rate is taken to be
    ``sampling_rate`` already. ``start``/``end`` (seconds) cut the clip.

    Example:
        >>> clip = load_audio("speech.wav")                       # doctest: +SKIP
        >>> clip.sampling_rate, clip.waveform.ndim                # doctest: +SKIP
        (16000, 1)
    """
    name: str | None = None
    if isinstance(source, Audio):
        samples, rate, name = source.waveform, source.sampling_rate, source.source
    elif isinstance(source, tuple):
        if len(source) != 2 or not isinstance(source[1], (int, float)):
            raise InputError("An audio tuple must be (samples, sampling_rate), e.g. (array, 44100).")
        samples, rate = source
    elif isinstance(source, (str, Path)):
        samples, rate = decode_audio_file(source)
        name = str(source)
    elif isinstance(source, (np.ndarray, Tensor)):
        samples, rate = source, source_rate or sampling_rate
    else:
        raise InputError(
            f"Unsupported audio input of type {type(source).__name__}; pass a file path, a numpy array, "
            "a torch tensor, an (array, sampling_rate) pair or an Audio."
        )
    if not float(rate).is_integer() or rate <= 0:
        raise InputError(f"A sampling rate must be a positive whole number of Hz, got {rate}; round it first.")
    rate = int(rate)
    waveform = _cut(_to_mono_float(samples, name), rate, start, end)
    _check_samples(waveform, name)
    if rate != sampling_rate:
        waveform = resample(waveform, rate, sampling_rate)
    return Audio(waveform.contiguous(), sampling_rate, name)


def _to_mono_float(samples: np.ndarray | Tensor, name: str | None) -> Float[Tensor, "samples"]:
    what = name or "audio array"
    array = samples.detach().cpu() if isinstance(samples, Tensor) else torch.from_numpy(np.asarray(samples))
    if array.dtype == torch.uint8:
        array = (array.float() - 128.0) / 128.0
    elif not array.is_floating_point():
        if array.dtype == torch.bool or array.is_complex():
            raise InputError(f"{what} has dtype {array.dtype}; audio must be real float or integer samples.")
        array = array.double() / float(-torch.iinfo(array.dtype).min)
    array = array.to(torch.float32)
    if array.ndim == 2:
        channel_axis = 0 if array.shape[0] <= array.shape[1] else 1
        if array.shape[channel_axis] > 8:
            raise InputError(
                f"{what} has shape {tuple(array.shape)}; expected [samples] or [channels, samples] with at most "
                "8 channels. Pass one clip at a time (a list of clips for several)."
            )
        array = array.mean(dim=channel_axis)
    elif array.ndim != 1:
        raise InputError(f"{what} has shape {tuple(array.shape)}; expected [samples] or [channels, samples].")
    return array


def _cut(waveform: Tensor, rate: int, start: float | None, end: float | None) -> Tensor:
    if start is None and end is None:
        return waveform
    first = int(round((start or 0.0) * rate))
    last = waveform.shape[0] if end is None else int(round(end * rate))
    if not 0 <= first < last:
        raise InputError(f"Empty audio range start={start}, end={end}; pick 0 <= start < end.")
    return waveform[first:last]


def _check_samples(waveform: Tensor, name: str | None) -> None:
    what = name or "The audio"
    if waveform.numel() == 0:
        raise InputError(f"{what} is empty (0 samples); pass a clip of at least 0.02 s.")
    if not torch.isfinite(waveform).all():
        bad = int((~torch.isfinite(waveform)).sum())
        raise InputError(f"{what} has {bad} NaN or infinite samples; clean it (e.g. np.nan_to_num) before passing it.")


@dataclass
class AudioFeatures:
    """Log-mel features of a list of clips, as the audio tower takes them."""

    input_features: Float[Tensor, "n_audio n_mels frames"]
    feature_attention_mask: Int[Tensor, "n_audio frames"]

    @property
    def frame_counts(self) -> Int[Tensor, "n_audio"]:
        """Real (unpadded) mel frames per clip."""
        return self.feature_attention_mask.sum(-1)



def audio_features(
    clips: Sequence[Audio | Tensor],
    config: WhisperFeatureConfig | None = None,
    *,
    padding: Literal["max_length", "longest", "processor_longest"] = "max_length",
    sampling_rate: int | None = None,
    device: torch.device | str | None = None,
) -> AudioFeatures:
    """Whisper log-mel features and the feature attention mask of several clips.

    ``padding="max_length"`` pads every clip to ``config.nb_max_frames`` frames (300 s for
    Qwen2.5-Omni), as the reference processor does; ``"longest"`` pads only to the longest clip.
    ``"processor_longest"`` is what ``WhisperFeatureExtractor(padding="longest")`` does (Qwen3-Omni's
    processor): clips padded to the longest clip's samples, ``samples // hop_length`` frames (the
    STFT reflects at that clip's end and its partial last frame is dropped), each clip's real
    frames ``ceil(samples / hop_length)`` capped at that.
    A clip has ``ceil(samples / hop_length)`` real frames. Tensors are taken to be at
    ``sampling_rate`` (default: the config's); if that is not the config's rate, this raises.
    Clips longer than ``config.chunk_length`` seconds raise too: cut them with ``load_audio(...,
    start=, end=)`` or split them.

    Example:
        >>> import torch
        >>> feats = audio_features([torch.zeros(16000)], padding="longest")
        >>> feats.input_features.shape, feats.feature_attention_mask.sum().item()
        (torch.Size([1, 128, 100]), 100)
    """
    config = config or WhisperFeatureConfig()
    if sampling_rate is not None and sampling_rate != config.sampling_rate:
        raise InputError(
            f"Audio at {sampling_rate} Hz given, but the model's features need {config.sampling_rate} Hz. "
            f"Load it with load_audio(x, source_rate={sampling_rate}) to resample it first."
        )
    if padding not in ("max_length", "longest", "processor_longest"):
        raise InputError(f"padding must be 'max_length', 'longest' or 'processor_longest', got {padding!r}.")
    if not clips:
        raise InputError("audio_features needs at least one clip.")
    waves = []
    for clip in clips:
        if isinstance(clip, Audio):
            if clip.sampling_rate != config.sampling_rate:
                raise InputError(
                    f"Audio {clip.source or ''} is at {clip.sampling_rate} Hz but the model needs "
                    f"{config.sampling_rate} Hz; pass it through load_audio(clip) to resample it."
                )
            wave = clip.waveform
        else:
            wave = _to_mono_float(clip, None)
        _check_samples(wave, clip.source if isinstance(clip, Audio) else None)
        if wave.shape[-1] > config.n_samples:
            raise InputError(
                f"An audio clip lasts {wave.shape[-1] / config.sampling_rate:.1f} s, longer than the "
                f"{config.n_samples / config.sampling_rate:.0f} s the model's audio input allows. "
                "Cut it with load_audio(..., start=, end=) (a video's track: load_video(..., start=, end=)) "
                "or split it into several clips."
            )
        waves.append(wave)
    frame_counts = [math.ceil(w.shape[-1] / config.hop_length) for w in waves]
    if padding == "processor_longest":  # WhisperFeatureExtractor(padding="longest"): reflect at the longest clip's end
        longest = max(w.shape[-1] for w in waves)
        n_frames = longest // config.hop_length
        frame_counts = [min(n, n_frames) for n in frame_counts]
        batch = torch.stack([torch.nn.functional.pad(w, (0, longest - w.shape[-1])) for w in waves])
    else:
        n_frames = config.nb_max_frames if padding == "max_length" else max(frame_counts)
        batch = torch.stack([padded_for_frames(w, n_frames, config.hop_length, config.n_fft) for w in waves])
    if device is not None:
        batch = batch.to(device)
    features = log_mel_spectrogram(
        batch,
        n_frames=n_frames,
        n_mels=config.feature_size,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        sampling_rate=config.sampling_rate,
        dither=config.dither,
    )
    mask = (
        torch.arange(n_frames, device=features.device)[None, :]
        < torch.tensor(frame_counts, device=features.device)[:, None]
    )
    return AudioFeatures(features, mask.long())
