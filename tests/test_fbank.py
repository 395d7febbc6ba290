"""``kaldi_fbank`` against kaldi-native-fbank (k2-fsa's C++ port of Kaldi's feature code), run with
the settings torchaudio's ``kaldi.fbank`` defaults to: no dither, ``snip_edges``, pre-emphasis
0.97, DC removal, Povey window, power spectrum, filters from 20 Hz to Nyquist.

The reference computes in float32, its mel filter weights included; ours computes in float64. The
largest gap (up to ~8e-4 in log energy) is on filters whose edge FFT bin carries a small weight
over a loud tone: emulating Kaldi's float32 weights in ours shrinks it to ~1.5e-4. Kaldi's C++
refuses filter counts that leave a filter without an FFT bin (more than 126 at 16 kHz, 95 at 8 kHz),
where torchaudio, and we, keep the empty filter at log(epsilon); those settings are checked by
known answers instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hooked_avllm.inputs.fbank import (
    FLOAT32_EPSILON,
    beats_fbank,
    fbank_frame_count,
    kaldi_fbank,
    kaldi_mel_banks,
)

try:  # the independent reference: Kaldi's C++ feature code (a dev dependency)
    import kaldi_native_fbank as knf
except ImportError as error:  # pragma: no cover
    raise ImportError(f"kaldi-native-fbank is the fbank reference ({error}); pip install kaldi-native-fbank") from error

TOLERANCE = 1e-3  # absolute, in natural-log energy


def reference_fbank(samples: np.ndarray, sample_rate: int, num_mel_bins: int, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> np.ndarray:
    """kaldi-native-fbank at torchaudio's defaults (dither 0, snip edges, 25 ms / 10 ms windows)."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = low_freq
    opts.mel_opts.high_freq = high_freq
    online = knf.OnlineFbank(opts)
    online.accept_waveform(sample_rate, samples.astype(np.float32).tolist())
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])


def tone_and_noise(n_samples: int, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """Two tones and noise at 16-bit scale, float32 (what the reference reads)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples, dtype=torch.float64) / sample_rate
    tones = 6000 * torch.sin(2 * math.pi * 440 * t) + 1500 * torch.sin(2 * math.pi * 0.3 * sample_rate * t + 1.0)
    return (tones + 800 * torch.randn(n_samples, generator=g, dtype=torch.float64)).float()


@pytest.mark.parametrize(
    "sample_rate, num_mel_bins",
    [(8000, 80), (8000, 95), (16000, 80), (16000, 126), (22050, 128), (44100, 128)],
)
def test_matches_kaldi_native_fbank(sample_rate, num_mel_bins):
    window = int(sample_rate * 0.025)
    for n_samples in (window, window + 1, sample_rate // 2 + 37, 3 * sample_rate // 2 + 1):
        x = tone_and_noise(n_samples, sample_rate, seed=n_samples)
        ours = kaldi_fbank(x, sample_rate, num_mel_bins)
        ref = torch.from_numpy(reference_fbank(x.numpy(), sample_rate, num_mel_bins))
        assert ours.dtype == torch.float32
        assert ours.shape == ref.shape == (fbank_frame_count(n_samples, sample_rate), num_mel_bins)
        assert (ours - ref).abs().max().item() < TOLERANCE, (sample_rate, num_mel_bins, n_samples)


def test_quiet_frames_floor_at_float32_epsilon_like_the_reference():
    """Digital silence in the middle of a clip: every filter is at Kaldi's log floor."""
    x = tone_and_noise(8000, 16000)
    x[2000:6000] = 0.0
    ours = kaldi_fbank(x, 16000, 80)
    ref = torch.from_numpy(reference_fbank(x.numpy(), 16000, 80))
    assert (ours - ref).abs().max().item() < TOLERANCE
    silent = ours[15:33]  # frames entirely inside the zeros
    assert torch.equal(silent, torch.full_like(silent, math.log(FLOAT32_EPSILON)))


def test_batch_rows_equal_single_clips():
    batch = torch.stack([tone_and_noise(4001, 16000, seed=s) for s in range(3)])
    together = kaldi_fbank(batch, 16000, 64)
    assert together.shape == (3, 23, 64)
    for row, clip in zip(together, batch):
        assert torch.allclose(row, kaldi_fbank(clip, 16000, 64), atol=1e-6, rtol=0)


def test_beats_fbank_scales_by_2_15_at_16k_with_128_bins():
    wav = tone_and_noise(16003, 16000) / 2**15  # back to [-1, 1]
    features = beats_fbank(wav)
    assert features.shape == (1 + (16003 - 400) // 160, 128)
    # Multiplying samples by 2**15 multiplies every power by 2**30: the log energy rises by 30 ln 2.
    unscaled = kaldi_fbank(wav, 16000, 128)
    floor = math.log(FLOAT32_EPSILON)
    above = unscaled > floor + 1
    assert above.float().mean() > 0.9
    assert torch.allclose((features - unscaled)[above], torch.full_like(features[above], 30 * math.log(2)), atol=1e-4)


def test_beats_setting_has_one_empty_filter_kept_at_the_floor():
    """128 filters at 16 kHz over a 512-point FFT: filter 3 spans (97.1, 140.6) mel, but the FFT bins
    at 62.5 Hz and 93.75 Hz sit at 96.2 and 141.8 mel, so no bin falls inside it. torchaudio keeps
    it at log(epsilon) for every frame (Kaldi's C++ refuses the setting)."""
    banks = kaldi_mel_banks(128, 512, 16000)
    assert (banks.sum(0) == 0).nonzero().flatten().tolist() == [3]
    features = beats_fbank(tone_and_noise(8000, 16000) / 2**15)
    assert torch.equal(features[:, 3], torch.full_like(features[:, 3], math.log(FLOAT32_EPSILON)))
    assert bool((features[:, [2, 4]] > 0).all())


def test_frame_count_of_a_30_second_clip():
    assert fbank_frame_count(30 * 16000, 16000) == 2998
    assert fbank_frame_count(399, 16000) == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kaldi_fbank(torch.zeros(399), 16000), "399 samples, fewer than one 25.0 ms frame (400 samples"),
        (lambda: kaldi_fbank(torch.zeros(2, 2, 1000), 16000), "waveform must be [samples] or [batch, samples]"),
        (lambda: kaldi_fbank(torch.zeros(1000), 0), "sample_rate must be positive; got 0"),
        (lambda: kaldi_fbank(torch.zeros(1000), -16000), "sample_rate must be positive; got -16000"),
        (lambda: kaldi_fbank(torch.zeros(1000), 16000, num_mel_bins=3), "num_mel_bins must be more than 3"),
        (lambda: kaldi_fbank(torch.zeros(1000), 16000, high_freq=9000), "high_freq=9000"),
        (lambda: kaldi_fbank(torch.zeros(1000), 16000, window_type="kaiser"), "window_type must be one of"),
        (lambda: kaldi_fbank(torch.zeros(1000), 40, frame_length_ms=25), "needs at least 2 samples"),
        (lambda: beats_fbank(torch.zeros(1000, dtype=torch.int16)), "expects a float waveform in [-1, 1]"),
    ],
)
def test_errors_say_what_to_do(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)
