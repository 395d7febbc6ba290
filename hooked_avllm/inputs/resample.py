"""Band-limited resampling: a polyphase windowed-sinc filter in torch (runs on any device), exact
for any pair of integer rates with memory bounded by the rates, not by their ratio.

For the reduced ratio ``new/orig = up/down`` output sample ``n = q*up + r`` sits at input position
``t = q*down + r*down/up``: phase ``r`` has its own Kaiser-windowed sinc kernel of ``taps`` (about
``101 * max(1, orig/new)``) input samples. Phases are taken in blocks whose kernels span about
``2 * taps`` input samples; each block is one matrix product over the input's windows (a strided
view, copied a bounded chunk at a time). A coprime pair such as 44,101 Hz -> 16 kHz (16,000
phases) thus needs a few hundred small kernels instead of one ``16000 x 44101`` matrix: the
memory is the input, the output and one block's kernel (about ``2 * 101**2 * orig/new`` values:
under 1.1 M, 9 MB, for any rate up to 768 kHz into 16 kHz), the work about ``2 * taps`` products
per output sample, and every phase keeps its exact fractional position (no rate approximation).
The low-pass cut-off sits just below the lower of the two Nyquist frequencies, so nothing above
the new Nyquist folds back (anti-aliasing). ``bench/bench_audio_rates.py`` measures time, memory
and the error against scipy at every rate from 8 to 192 kHz (``docs/benchmarks.md``).

Example:
    >>> import torch
    >>> x = torch.sin(2 * torch.pi * 440 * torch.arange(44100) / 44100)
    >>> resample(x, 44100, 16000).shape
    torch.Size([16000])
    >>> resample(torch.zeros(44101), 44101, 16000).shape  # coprime rates: 16,000 phases, small kernels
    torch.Size([16000])
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from hooked_avllm.inputs.errors import InputError

MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: below is a rate given in kHz by mistake, above no audio format goes
_CACHED_KERNEL_VALUES = 1 << 22  # kernel banks up to this many values (16 MB in float32) are kept for reuse
_CHUNK_VALUES = 1 << 21  # input values one matmul copies out of the overlapping windows (8 MB in float32)


def check_rate(rate: object, name: str) -> int:
    """``rate`` as an int number of Hz, or an :class:`InputError` naming ``name`` and the value.

    Example:
        >>> check_rate(44100.0, "source_rate")
        44100
    """
    label = f"{name}={rate!r}" if name.isidentifier() else f"{name} {rate!r}"
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not float(rate).is_integer() or rate <= 0:
        raise InputError(f"{label}: a sampling rate must be a positive whole number of Hz (e.g. 44100); "
                         "round the rate the file or array reports")
    if not MIN_RATE <= rate <= MAX_RATE:
        hint = f" (did you mean {int(rate) * 1000} Hz?)" if rate < MIN_RATE else ""
        raise InputError(f"{label} Hz is outside {MIN_RATE}..{MAX_RATE} Hz{hint}; sampling rates are in Hz")
    return int(rate)


def _filter_geometry(up: int, down: int, zero_crossings: int, rolloff: float) -> tuple[float, float, int, int]:
    """The cut-off (cycles per input sample), the half-width and reach (input samples) and the taps
    one phase's kernel needs (covering ``[-half_width, half_width]`` around any fractional position)."""
    cutoff = 0.5 * min(1.0, up / down) * rolloff  # below both the input and the output Nyquist frequency
    half_width = zero_crossings / (2.0 * cutoff)
    reach = math.ceil(half_width)
    return cutoff, half_width, reach, 2 * reach + 2


def _phase_blocks(up: int, down: int, taps: int, phases: int | None = None) -> list[tuple[int, int, int, int]]:
    """``(first phase, end phase, first input offset, kernel width)`` of each block of the first
    ``phases`` phases (default all ``up``): a block spans about ``taps`` input samples of phase
    offsets, so its kernel is about ``2 * taps`` wide."""
    phases = up if phases is None else phases
    size = max(1, min(up, taps * up // down))
    blocks = []
    for start in range(0, phases, size):
        end = min(phases, start + size)
        first = start * down // up
        blocks.append((start, end, first, taps + (end - 1) * down // up - first))
    return blocks


@lru_cache(maxsize=4)
def _kaiser_table(beta: float, points: int = 1 << 16) -> np.ndarray:
    u = np.linspace(0.0, 1.0, points + 1)
    return np.i0(beta * np.sqrt(1.0 - u**2)) / np.i0(beta)


def _kaiser(u: np.ndarray, beta: float) -> np.ndarray:
    """The Kaiser window at ``u = |x| / half_width`` (0 beyond 1), linearly interpolated in a table of
    65,537 points: within 1e-9 of the exact window for beta = 8.6 (its second derivative in u stays
    below 10) and far cheaper than a Bessel function per tap."""
    table = _kaiser_table(beta)
    points = table.shape[0] - 1
    position = np.minimum(u, 1.0) * points
    index = np.minimum(position.astype(np.int64), points - 1)  # u >= 0: the cast floors
    lower = table[index]
    return (lower + (position - index) * (table[index + 1] - lower)) * (u <= 1.0)


def _block_kernel(
    up: int, down: int, block: tuple[int, int, int, int], cutoff: float, half_width: float, reach: int, beta: float
) -> Float[Tensor, "width phases"]:
    """The kernels of one block of phases as matrix columns: column ``r`` holds phase ``r``'s taps
    (the filter at input sample minus ``r*down/up``) from its window's offset in the block. Built in
    numpy, float64: single-threaded small arrays, which a busy machine's thread pool would stall."""
    start, end, first, width = block
    phase = np.arange(start, end, dtype=np.int64) * down  # exact integers: r*down/up = whole + fraction/up
    whole, fraction = phase // up, phase % up
    taps = 2 * reach + 2
    x = (np.arange(taps, dtype=np.float64) - reach)[None, :] - fraction[:, None] / up  # [phases, taps]
    values = 2.0 * cutoff * np.sinc(2.0 * cutoff * x) * _kaiser(np.abs(x) / half_width, beta)
    kernel = np.zeros((end - start, width))
    kernel[np.arange(end - start)[:, None], (whole - first)[:, None] + np.arange(taps)[None, :]] = values
    return torch.from_numpy(kernel.T)


@lru_cache(maxsize=4)
def _cached_bank(up: int, down: int, zero_crossings: int, rolloff: float, beta: float) -> tuple[Tensor, ...]:
    """Every block's kernel of a ratio, in float32 (what audio is resampled in; 1e-7 of the taps)."""
    cutoff, half_width, reach, taps = _filter_geometry(up, down, zero_crossings, rolloff)
    return tuple(_block_kernel(up, down, b, cutoff, half_width, reach, beta).float() for b in _phase_blocks(up, down, taps))


def resample(
    waveform: Float[Tensor, "... time"],
    orig_rate: int,
    new_rate: int,
    *,
    zero_crossings: int = 48,
    rolloff: float = 0.95,
    beta: float = 8.6,
) -> Float[Tensor, "... new_time"]:
    """Resample along the last axis from ``orig_rate`` to ``new_rate`` (integer Hz, 1 kHz to 768 kHz).

    The output has ``ceil(time * new_rate / orig_rate)`` samples; sample 0 of both signals is at
    time 0. ``zero_crossings`` sets the filter length, ``rolloff`` the cut-off as a fraction of the
    lower Nyquist frequency, ``beta`` the Kaiser window. With the defaults, 44.1 kHz -> 16 kHz is
    flat within 0.1 dB up to 7.3 kHz and attenuates everything above 8.1 kHz by more than 90 dB.
    Computation is in the waveform's dtype and on its device.

    Example:
        >>> import torch
        >>> resample(torch.zeros(2, 48000), 48000, 16000).shape
        torch.Size([2, 16000])
    """
    orig_rate, new_rate = check_rate(orig_rate, "orig_rate"), check_rate(new_rate, "new_rate")
    if orig_rate == new_rate:
        return waveform.clone()
    if not waveform.is_floating_point():
        raise InputError(f"resample needs a float waveform, got {waveform.dtype}; convert it with .float().")
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    # a product with very few kernel columns is slow: compute several output steps per window by
    # using the unreduced ratio (group*up)/(group*down)
    group = max(1, -(-32 // up))
    up, down = up * group, down * group
    cutoff, half_width, reach, taps = _filter_geometry(up, down, zero_crossings, float(rolloff))
    lead = waveform.shape[:-1]
    length = waveform.shape[-1]
    out_length = math.ceil(length * up / down)
    if out_length == 0:
        return waveform.new_zeros(*lead, 0)
    # a clip shorter than one cycle of phases needs only its first out_length phases
    blocks = _phase_blocks(up, down, taps, min(up, out_length))
    small = sum((end - start) * width for start, end, _, width in blocks) <= _CACHED_KERNEL_VALUES
    cached = small and out_length >= up and waveform.dtype != torch.float64
    bank = _cached_bank(up, down, zero_crossings, float(rolloff), float(beta)) if cached else None

    signal = waveform.reshape(-1, length)  # [batch, time]
    n_steps = math.ceil(out_length / up)  # windows of `down` input samples, each gives one sample per phase
    right = max(0, max(first + (n_steps - 1) * down + width for _, _, first, width in blocks) - reach - length)
    signal = F.pad(signal, (reach, right))
    out = signal.new_zeros(signal.shape[0], n_steps, up)
    for k, block in enumerate(blocks):
        start, end, first, width = block
        kernel = bank[k] if bank is not None else _block_kernel(up, down, block, cutoff, half_width, reach, float(beta))
        kernel = kernel.to(device=waveform.device, dtype=waveform.dtype)  # [width, phases]
        windows = signal[:, first:].unfold(-1, width, down)  # a view [batch, steps, width]: no copy yet
        chunk = max(1, _CHUNK_VALUES // width)  # the matmul copies its windows: bound that copy
        for s in range(0, n_steps, chunk):
            out[:, s : s + chunk, start:end] = windows[:, s : min(s + chunk, n_steps)] @ kernel
    return out.reshape(signal.shape[0], -1)[:, :out_length].reshape(*lead, out_length)
