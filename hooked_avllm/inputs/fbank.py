"""Kaldi log mel filter banks (``compute-fbank-feats``) in plain torch, as BEATs consumes them.

The steps follow Kaldi's feature code with ``torchaudio.compliance.kaldi.fbank``'s defaults:

1. frames of ``frame_length_ms`` every ``frame_shift_ms``, only those that fit inside the signal
   (Kaldi's ``snip_edges``); frame and shift lengths in samples are truncated to integers;
2. per frame: the mean is removed (DC offset), then pre-emphasis ``x[i] - 0.97 * x[i - 1]``, where
   the first sample uses itself as its predecessor, then the Povey window (a symmetric Hann
   window raised to the power 0.85);
3. the frame is zero-padded to the next power of two and its power spectrum is taken;
4. triangular filters, equally spaced on the mel scale ``1127 * ln(1 + f / 700)`` between
   ``low_freq`` (20 Hz) and ``high_freq`` (the Nyquist frequency), weight every FFT bin but the
   Nyquist one;
5. the natural log of each filter's energy, floored at float32's machine epsilon (Kaldi's floor).

There is no dither (its default in torchaudio, and what BEATs uses). The input's scale is the
caller's: Kaldi expects 16-bit sample values, so BEATs multiplies a [-1, 1] waveform by 2**15
first (:func:`beats_fbank` does that). The computation runs in float64 and returns float32.

A filter that no FFT bin falls inside is left empty, as torchaudio does, and its feature is
``log(epsilon)`` (about -15.94) for every frame; Kaldi's C++ code refuses such settings instead.
BEATs' own setting (128 filters at 16 kHz with a 512-point FFT) has such empty low-frequency
filters.

Example:
    >>> import torch
    >>> kaldi_fbank(torch.randn(16000) * 1000, sample_rate=16000).shape  # 1 s -> 98 frames
    torch.Size([98, 128])
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from jaxtyping import Float
from torch import Tensor

FLOAT32_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's floor before the log
BEATS_SAMPLE_RATE = 16000
BEATS_WAVEFORM_SCALE = 2**15  # [-1, 1] audio -> 16-bit sample values, as Kaldi expects
WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular")


def mel_scale(freq: Float[Tensor, "..."] | float) -> Float[Tensor, "..."] | float:
    """Kaldi's (HTK's) mel scale, ``1127 * ln(1 + f / 700)``.

    Example:
        >>> round(mel_scale(1000.0), 3)
        999.991
    """
    if isinstance(freq, Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def frame_geometry(
    sample_rate: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, round_to_power_of_two: bool = True
) -> tuple[int, int, int]:
    """``(window_size, window_shift, fft_size)`` in samples, truncated to integers as Kaldi does.

    Example:
        >>> frame_geometry(16000), frame_geometry(22050)
        ((400, 160, 512), (551, 220, 1024))
    """
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be positive; got {sample_rate!r}. Pass the waveform's rate in Hz, e.g. 16000")
    # the product's order follows torchaudio, so truncation agrees on every rate
    window_size = int(sample_rate * frame_length_ms * 0.001)
    window_shift = int(sample_rate * frame_shift_ms * 0.001)
    if window_size < 2:
        raise ValueError(
            f"frame_length_ms={frame_length_ms} at sample_rate={sample_rate} gives a {window_size}-sample window; "
            "a frame needs at least 2 samples: use a longer frame_length_ms"
        )
    if window_shift < 1:
        raise ValueError(
            f"frame_shift_ms={frame_shift_ms} at sample_rate={sample_rate} gives a shift of {window_shift} samples; "
            "use a frame_shift_ms of at least one sample"
        )
    fft_size = 1 << (window_size - 1).bit_length() if round_to_power_of_two else window_size
    if fft_size % 2:
        raise ValueError(
            f"the FFT size {fft_size} must be even; keep round_to_power_of_two=True or pick a frame_length_ms "
            "that gives an even number of samples"
        )
    return window_size, window_shift, fft_size


def fbank_frame_count(
    n_samples: int, sample_rate: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> int:
    """Frames :func:`kaldi_fbank` returns for ``n_samples`` (0 when not even one frame fits).

    Example:
        >>> fbank_frame_count(480000, 16000)  # 30 s at 16 kHz
        2998
    """
    window_size, window_shift, _ = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    return 0 if n_samples < window_size else 1 + (n_samples - window_size) // window_shift


@lru_cache(maxsize=16)
def kaldi_mel_banks(
    num_mel_bins: int, fft_size: int, sample_rate: int, low_freq: float = 20.0, high_freq: float = 0.0
) -> Float[Tensor, "n_freqs mel"]:
    """Kaldi's triangular mel filters as a ``[fft_size // 2 + 1, num_mel_bins]`` float64 matrix.

    ``high_freq <= 0`` counts down from the Nyquist frequency. The Nyquist bin's row is zero.

    Example:
        >>> kaldi_mel_banks(128, 512, 16000).shape
        torch.Size([257, 128])
    """
    if num_mel_bins <= 3:
        raise ValueError(f"num_mel_bins must be more than 3; got {num_mel_bins}")
    nyquist = 0.5 * sample_rate
    top = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < top <= nyquist and low_freq < top):
        raise ValueError(
            f"low_freq={low_freq} and high_freq={high_freq} (-> {top} Hz) must satisfy 0 <= low_freq < high_freq <= "
            f"{nyquist} (the Nyquist frequency at sample_rate={sample_rate}); high_freq <= 0 counts down from Nyquist"
        )
    mel_low, mel_high = mel_scale(float(low_freq)), mel_scale(float(top))
    step = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + step * torch.arange(num_mel_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [mel, 1]
    bin_mel = mel_scale(torch.arange(fft_size // 2, dtype=torch.float64) * (sample_rate / fft_size))[None, :]
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    weights = torch.minimum(rising, falling).clamp(min=0.0)  # [mel, fft_size // 2]
    return torch.nn.functional.pad(weights, (0, 1)).T.contiguous()  # Nyquist bin: no weight


def _window(window_type: str, size: int, device) -> Tensor:
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, dtype=torch.float64, device=device).pow(0.85)
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, dtype=torch.float64, device=device)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64, device=device)
    if window_type == "rectangular":
        return torch.ones(size, dtype=torch.float64, device=device)
    raise ValueError(f"window_type must be one of {WINDOW_TYPES}; got {window_type!r}")


def kaldi_fbank(
    waveform: Float[Tensor, "samples"] | Float[Tensor, "batch samples"],
    sample_rate: int,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    *,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    window_type: str = "povey",
    round_to_power_of_two: bool = True,
    use_power: bool = True,
    log_floor: float = FLOAT32_EPSILON,
) -> Float[Tensor, "frames mel"] | Float[Tensor, "batch frames mel"]:
    """Log mel filter banks of a mono waveform, equal to ``torchaudio.compliance.kaldi.fbank`` with
    its defaults (``dither=0``, ``snip_edges=True``) and the same frame and filter settings.

    Args:
        waveform: ``[samples]`` or ``[batch, samples]`` (rows of one length), in the scale the
            caller wants Kaldi to see (16-bit values for BEATs: see :func:`beats_fbank`).
        sample_rate: samples per second of ``waveform``.
        num_mel_bins: triangular filters (features per frame).
        frame_length_ms, frame_shift_ms: frame length and hop.
        low_freq, high_freq: filter range in Hz; ``high_freq <= 0`` is an offset from Nyquist.
        log_floor: energies below it are raised to it before the log (Kaldi: float32 epsilon).

    Returns:
        float32 ``[frames, num_mel_bins]`` (``[batch, frames, num_mel_bins]`` for a batch), with
        ``frames = 1 + (samples - window) // shift``.

    Example:
        >>> import torch
        >>> kaldi_fbank(torch.randn(2, 8000), sample_rate=8000, num_mel_bins=40).shape
        torch.Size([2, 98, 40])
    """
    x = torch.as_tensor(waveform)
    if x.ndim not in (1, 2):
        raise ValueError(
            f"waveform must be [samples] or [batch, samples]; got shape {tuple(x.shape)}. "
            "Mix several channels down to mono first (e.g. waveform.mean(0))"
        )
    if x.is_complex():
        raise ValueError("waveform must be real-valued sample values; got a complex tensor")
    window_size, window_shift, fft_size = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms, round_to_power_of_two)
    n_samples = x.shape[-1]
    if n_samples < window_size:
        raise ValueError(
            f"waveform has {n_samples} samples, fewer than one {frame_length_ms} ms frame ({window_size} samples at "
            f"{sample_rate} Hz); pass a longer clip or pad it (with zeros) to at least {window_size} samples"
        )
    if not 0.0 <= preemphasis_coefficient <= 1.0:
        raise ValueError(f"preemphasis_coefficient must be in [0, 1]; got {preemphasis_coefficient}")
    banks = kaldi_mel_banks(num_mel_bins, fft_size, sample_rate, float(low_freq), float(high_freq)).to(x.device)

    frames = x.to(torch.float64).unfold(-1, window_size, window_shift)  # [..., frame, window]
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis_coefficient != 0.0:
        previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=-1)
        frames = frames - preemphasis_coefficient * previous
    frames = frames * _window(window_type, window_size, x.device)
    spectrum = torch.fft.rfft(frames, n=fft_size).abs()  # zero-padded on the right to fft_size
    if use_power:
        spectrum = spectrum.square()
    energies = spectrum @ banks  # [..., frame, mel]
    return energies.clamp(min=log_floor).log().to(torch.float32)


def beats_fbank(
    waveform: Float[Tensor, "samples"] | Float[Tensor, "batch samples"],
) -> Float[Tensor, "frames 128"] | Float[Tensor, "batch frames 128"]:
    """BEATs' input features for a 16 kHz waveform in [-1, 1]: 128 Kaldi filter banks of
    ``waveform * 2**15`` with 25 ms frames every 10 ms, as VideoLLaMA2's processor computes them
    (before its cast to bfloat16). The tower normalises them itself.

    Example:
        >>> import torch
        >>> beats_fbank(torch.zeros(16000)).shape  # silence: every feature is log(epsilon)
        torch.Size([98, 128])
    """
    x = torch.as_tensor(waveform)
    if not x.is_floating_point():
        raise ValueError(
            f"beats_fbank expects a float waveform in [-1, 1] (it multiplies by 2**15 itself); got dtype {x.dtype}. "
            "For 16-bit integer samples call kaldi_fbank(samples, 16000) directly"
        )
    return kaldi_fbank(x.to(torch.float64) * BEATS_WAVEFORM_SCALE, BEATS_SAMPLE_RATE, 128, 25.0, 10.0)
