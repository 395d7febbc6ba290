"""Audio in, Whisper features out: load, mix to mono, resample to 16 kHz, log-mel, masks.

``load_audio`` accepts a path (wav/flac/ogg/mp3 via soundfile, any container's audio track via
PyAV), a numpy array or torch tensor (with ``source_rate``; a bare array is taken to be at the
target rate already, with a warning that says so), a ``(array, rate)`` pair or an :class:`Audio`. ``audio_features`` turns a
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
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.inputs.decode import decode_audio_file
from hooked_avllm.inputs.errors import InputError, InputWarning
from hooked_avllm.inputs.mel import log_mel_spectrogram, padded_for_frames
from hooked_avllm.inputs.resample import check_rate, resample


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

    Multi-channel audio is averaged to mono (as the Qwen and MiniCPM-o processors' ``librosa.load(...,
    mono=True)`` does); other rates, any whole number of Hz from 1 kHz to 768 kHz, are resampled with
    the band-limited resampler of :mod:`.resample`. Arrays may be ``[samples]``,
    ``[channels, samples]`` or ``[samples, channels]`` (at most 8 channels); integer arrays are scaled
    to [-1, 1]. Float samples must lie in [-1, 1] (peaks up to 2 pass, as decoders overshoot): float
    audio at integer magnitudes (e.g. 3000.0) raises, since the log-mel features of such audio are
    not the model's. An array given without its rate (no ``source_rate``, not an ``(array, rate)``
    pair or an :class:`Audio`) is taken to be at ``sampling_rate`` already, with an
    :class:`~hooked_avllm.inputs.errors.InputWarning` naming that assumption. ``start``/``end``
    (seconds) cut the clip. Empty clips and NaN or infinite samples raise.

    Example:
        >>> clip = load_audio("speech.wav")                       # doctest: +SKIP
        >>> clip.sampling_rate, clip.waveform.ndim                # doctest: +SKIP
        (16000, 1)
        >>> load_audio((torch.zeros(44101), 44101)).waveform.shape
        torch.Size([16000])
    """
    sampling_rate = check_rate(sampling_rate, "sampling_rate")
    source_rate = None if source_rate is None else check_rate(source_rate, "source_rate")
    name: str | None = None
    if isinstance(source, Audio):
        samples, rate, name = source.waveform, source.sampling_rate, source.source
    elif isinstance(source, tuple):
        if len(source) != 2 or isinstance(source[1], bool) or not isinstance(source[1], numbers.Real):
            raise InputError(
                f"an audio tuple must be (samples, sampling_rate), e.g. (array, 44100); got a tuple of {len(source)} "
                f"({', '.join(type(x).__name__ for x in source)})"
            )
        samples, rate = source
    elif isinstance(source, (str, Path)):
        samples, rate = decode_audio_file(source)
        name = str(source)
    elif isinstance(source, (np.ndarray, Tensor)):
        if source_rate is None:
            warn_unstated_rate(source, sampling_rate)
        samples, rate = source, source_rate or sampling_rate
    else:
        raise InputError(
            f"unsupported audio input of type {type(source).__name__}; pass a file path, a numpy array, "
            "a torch tensor, an (array, sampling_rate) pair or an Audio."
        )
    rate = check_rate(rate, "the audio's sampling rate")
    if source_rate is not None and source_rate != rate:
        raise InputError(f"source_rate={source_rate} but the audio says it is at {rate} Hz; leave source_rate out")
    waveform = _cut(_to_mono_float(samples, name), rate, start, end)
    _check_samples(waveform, name)
    if rate != sampling_rate:
        waveform = resample(waveform, rate, sampling_rate)
    return Audio(waveform.contiguous(), sampling_rate, name)


def warn_unstated_rate(array: np.ndarray | Tensor, rate: int, stacklevel: int = 3) -> None:
    """Warn (:class:`~hooked_avllm.inputs.errors.InputWarning`) that an audio array given without its
    sampling rate is taken to be at ``rate`` Hz, and how to say what it is.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_unstated_rate(np.zeros(100), 16000)
        >>> str(caught[0].message)[:60]
        'an audio array of shape (100,) was given without its samplin'
    """
    warnings.warn(
        f"an audio array of shape {tuple(array.shape)} was given without its sampling rate: it is taken to be at {rate} "
        "Hz. Say what it is: pass (array, rate), an Audio, or load_audio(array, source_rate=rate)",
        InputWarning, stacklevel=stacklevel,
    )


def _to_mono_float(samples: np.ndarray | Tensor, name: str | None) -> Float[Tensor, "samples"]:
    what = name or "the audio array"
    array = samples.detach().cpu() if isinstance(samples, Tensor) else torch.from_numpy(np.asarray(samples))
    if array.numel() == 0:  # before mixing: the mean over no samples would be NaN
        raise InputError(f"{what} is empty (0 samples, shape {tuple(array.shape)}); pass a clip of at least 0.02 s.")
    if array.dtype == torch.uint8:
        array = (array.float() - 128.0) / 128.0
    elif not array.is_floating_point():
        if array.dtype == torch.bool or array.is_complex():
            raise InputError(f"{what} has dtype {array.dtype}; audio must be real float or integer samples.")
        array = array.double() / float(-torch.iinfo(array.dtype).min)
    else:
        check_float_audio(array, what)
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


FLOAT_PEAK_LIMIT = 2.0  # float audio beyond this is integer PCM stored as floats, not decoder overshoot


def check_float_audio(array: Tensor, what: str) -> None:
    """Refuse NaN, infinite and integer-magnitude float samples (e.g. int16 PCM cast to float), naming ``what``.

    Example:
        >>> check_float_audio(torch.full((3,), 3000.0), "audio=")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: audio= holds float samples up to 3000, outside [-1, 1]: ...
    """
    finite = torch.isfinite(array)
    if not finite.all():
        raise InputError(
            f"{what} has {int((~finite).sum())} NaN or infinite samples; clean it (e.g. np.nan_to_num) before passing it."
        )
    peak = float(array.abs().max())
    if peak > FLOAT_PEAK_LIMIT:
        raise InputError(
            f"{what} holds float samples up to {peak:g}, outside [-1, 1]: float audio must be in [-1, 1] (it looks like "
            "integer PCM stored as floats). Divide by 32768 for 16-bit PCM (2**31 for 32-bit), or pass the integer "
            "array itself, which is scaled for you."
        )


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
