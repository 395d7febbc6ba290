"""Audio inputs: resampling, loading, Whisper log-mel features against transformers' extractor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch
from test_inputs_support import audio_tokens
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank as reference_mel_filter_bank
from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

from hooked_avllm.architectures.qwen import PreprocessorConfig

from hooked_avllm.inputs import audio_features, load_audio, resample
from hooked_avllm.towers.whisper_audio import audio_token_counts as audio_token_count
from hooked_avllm.inputs.mel import mel_filter_bank


def _sine(freq: float, rate: int, seconds: float) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    """Odd lengths (0.3 s, 3.7 s, 10 s, 31 s) of speech-like signals, and 2 s of silence."""
    g = torch.Generator().manual_seed(0)
    out = []
    for seconds in (0.3, 3.7, 10.0, 31.0):
        n = int(round(16000 * seconds))
        t = torch.arange(n) / 16000
        envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t)
        voiced = 0.2 * torch.sin(2 * math.pi * 180 * t) + 0.1 * torch.sin(2 * math.pi * 1250 * t)
        out.append((envelope * voiced + 0.02 * torch.randn(n, generator=g)).float())
    out.append(torch.zeros(32000))
    return out


def test_log_mel_matches_whisper_feature_extractor(clips):
    config = PreprocessorConfig()
    extractor = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400, return_attention_mask=True
    )
    ref = extractor([c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    ours = audio_features(clips, config)
    assert ours.input_features.shape == ref["input_features"].shape == (5, 128, 30000)
    assert torch.equal(ours.feature_attention_mask, ref["attention_mask"].long())
    assert ours.feature_attention_mask.sum(-1).tolist() == [30, 370, 1000, 3100, 200]
    diff = (ours.input_features - ref["input_features"]).abs()
    assert diff.max() < 1e-3, f"max abs difference {diff.max():.2e}"
    assert torch.allclose(ours.input_features[4], torch.full((128, 30000), -1.5))  # silence: (log10(1e-10)+4)/4


def test_unpadded_features_equal_padded_on_real_frames(clips):
    padded = audio_features(clips, padding="max_length")
    longest = audio_features(clips, padding="longest")
    assert longest.input_features.shape == (5, 128, 3100)
    for i, n in enumerate(padded.frame_counts.tolist()):
        assert torch.equal(longest.feature_attention_mask[i, :n], torch.ones(n, dtype=torch.long))
        assert longest.feature_attention_mask[i, n:].sum() == 0
        assert torch.equal(longest.input_features[i, :, :n], padded.input_features[i, :, :n])
    assert torch.equal(audio_token_count(longest.frame_counts), audio_token_count(padded.frame_counts))


def test_mel_filters_match_reference():
    ours = mel_filter_bank(201, 128, 16000, 0.0, 8000.0)
    ref = reference_mel_filter_bank(201, 128, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    assert np.abs(ours.numpy() - ref).max() < 1e-9


def test_audio_token_count_formula():
    lengths = torch.arange(3, 30001)
    assert torch.equal(audio_token_count(lengths), _get_feat_extract_output_lengths(lengths))
    assert audio_token_count(200) == 50
    assert [audio_tokens(16000 * s) for s in (1, 2, 10)] == [25, 50, 250]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_reproduces_in_band_tones(rate):
    for freq in [f for f in (440.0, 3000.0, 7000.0) if f < 0.45 * rate]:  # tones the source can hold
        out = resample(_sine(freq, rate, 1.0).float(), rate, 16000)
        assert out.shape == (16000,)
        expected = _sine(freq, 16000, 1.0)
        middle = slice(400, -400)  # away from the zero-padded edges
        assert (out[middle].double() - expected[middle]).abs().max() < 2e-3, freq


@pytest.mark.parametrize("freq", [8300.0, 9000.0, 12000.0, 20000.0])
def test_resample_removes_tones_above_the_new_nyquist(freq):
    out = resample(_sine(freq, 44100, 1.0).float(), 44100, 16000)
    rms = out[400:-400].pow(2).mean().sqrt() / math.sqrt(0.5)
    assert rms < 1e-4, f"{freq} Hz leaks at {20 * math.log10(rms):.0f} dB"


def test_resample_keeps_time_origin_and_batch_axes():
    x = torch.stack([_sine(440, 48000, 0.5), _sine(880, 48000, 0.5)]).float()  # [2, 24000]
    y = resample(x, 48000, 16000)
    assert y.shape == (2, 8000)
    assert torch.allclose(y[:, 100:-100], x[:, ::3][:, 100:-100], atol=1e-3)


def test_load_audio_files_mix_and_resample(tmp_path):
    tone = _sine(1000, 22050, 1.5).numpy()
    stereo = np.stack([tone, tone], axis=1) * 0.5  # [samples, channels]
    soundfile.write(tmp_path / "a.wav", stereo, 22050, subtype="PCM_16")
    soundfile.write(tmp_path / "a.flac", stereo, 22050)
    expected = 0.5 * _sine(1000, 16000, 1.5)
    for name in ("a.wav", "a.flac"):
        clip = load_audio(tmp_path / name)
        assert clip.sampling_rate == 16000 and clip.waveform.shape == (24000,)
        assert (clip.waveform[400:-400].double() - expected[400:-400]).abs().max() < 2e-3
        assert clip.duration == pytest.approx(1.5)


def test_load_audio_arrays():
    int16 = (np.sin(np.linspace(0, 200, 16000)) * 16384).astype(np.int16)
    assert load_audio(int16).waveform.abs().max() == pytest.approx(0.5, abs=1e-3)
    stereo = torch.stack([torch.ones(8000), -torch.ones(8000)])  # [channels, samples]
    assert torch.equal(load_audio(stereo).waveform, torch.zeros(8000))
    assert load_audio((torch.zeros(44100), 44100)).waveform.shape == (16000,)
    assert load_audio(np.zeros(48000, np.float32), source_rate=48000).waveform.shape == (16000,)
    assert load_audio(torch.zeros(32000), start=0.5, end=1.0).waveform.shape == (8000,)
