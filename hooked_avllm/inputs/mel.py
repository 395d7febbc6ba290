"""Whisper log-mel features in torch: Slaney mel filters, STFT power, log10, clamp, rescale.

The steps are those of Whisper's ``log_mel_spectrogram``: a centred STFT with a periodic Hann
window (reflect padding at the signal edges), the power of every bin but the last frame, a
Slaney-normalised mel filter bank on the Slaney mel scale (0 Hz to 8 kHz), ``log10`` of the mel
power floored at 1e-10, a clamp to at most 8 below each clip's maximum, and ``(x + 4) / 4``.

Example:
    >>> import torch
    >>> log_mel_spectrogram(torch.zeros(1, 16000), n_frames=100).shape
    torch.Size([1, 128, 100])
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

_SLANEY_F_SP = 200.0 / 3  # Hz per mel below 1 kHz
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    linear = freq / _SLANEY_F_SP
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    logarithmic = min_log_mel + torch.log(freq.clamp(min=_SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return torch.where(freq >= _SLANEY_MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """Inverse of :func:`hz_to_mel`."""
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    linear = mel * _SLANEY_F_SP
    logarithmic = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mel - min_log_mel))
    return torch.where(mel >= min_log_mel, logarithmic, linear)


@lru_cache(maxsize=8)
def mel_filter_bank(
    n_freqs: int, n_mels: int, sampling_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Float[Tensor, "n_freqs n_mels"]:
    """Triangular filters between mel-spaced edges, each scaled by 2 / (its width in Hz) (float64).

    Example:
        >>> mel_filter_bank(201, 128, 16000).shape
        torch.Size([201, 128])
    """
    f_max = sampling_rate / 2 if f_max is None else f_max
    mel_edges = torch.linspace(
        hz_to_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
        hz_to_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz(mel_edges)  # [n_mels + 2]
    bin_freqs = torch.linspace(0, sampling_rate // 2, n_freqs, dtype=torch.float64)  # [n_freqs]
    lower, centre, upper = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]  # [n_mels] each
    rising = (bin_freqs[:, None] - lower) / (centre - lower)  # [n_freqs, n_mels]
    falling = (upper - bin_freqs[:, None]) / (upper - centre)
    triangles = torch.minimum(rising, falling).clamp(min=0.0)
    return triangles * (2.0 / (upper - lower))


def log_mel_spectrogram(
    waveforms: Float[Tensor, "batch samples"],
    *,
    n_frames: int,
    n_mels: int = 128,
    n_fft: int = 400,
    hop_length: int = 160,
    sampling_rate: int = 16000,
    dither: float = 0.0,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "batch n_mels n_frames"]:
    """Whisper log-mel features of zero-padded waveforms, the first ``n_frames`` frames of each.

    ``waveforms`` must already be zero-padded so that frame ``n_frames - 1`` (centred at sample
    ``(n_frames - 1) * hop_length``) is fully inside them; the clamp uses each row's maximum over
    those frames. Runs on the waveforms' device, in float32.

    Example:
        >>> import torch
        >>> log_mel_spectrogram(torch.randn(2, 4000), n_frames=25).shape
        torch.Size([2, 128, 25])
    """
    waveforms = waveforms.to(torch.float32)
    if dither:
        noise = torch.randn(waveforms.shape, generator=generator, device=waveforms.device)
        waveforms = waveforms + dither * noise
    window = torch.hann_window(n_fft, periodic=True, device=waveforms.device)
    spectrum = torch.stft(waveforms, n_fft, hop_length, window=window, center=True, return_complex=True)
    power = spectrum[..., :n_frames].abs().square()  # [batch, n_fft//2 + 1, n_frames]
    filters = mel_filter_bank(n_fft // 2 + 1, n_mels, sampling_rate, 0.0, 8000.0)
    mel = filters.to(device=waveforms.device, dtype=torch.float32).T @ power  # [batch, n_mels, n_frames]
    log_mel = mel.clamp(min=1e-10).log10()
    peak = log_mel.amax(dim=(1, 2), keepdim=True)  # [batch, 1, 1]
    log_mel = torch.maximum(log_mel, peak - 8.0)
    return (log_mel + 4.0) / 4.0


def padded_for_frames(
    waveform: Float[Tensor, "samples"], n_frames: int, hop_length: int, n_fft: int
) -> Float[Tensor, "padded"]:
    """Zero-pad (or cut) a waveform so frames ``0..n_frames-1`` see zeros, never a reflection, after its end."""
    target = n_frames * hop_length + n_fft
    return F.pad(waveform[:target], (0, target - min(len(waveform), target)))
