"""A real media round trip: an mp4 with an AAC track and a wav, written here, prepared from disk."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from test_inputs_support import OMNI, audio_tokens, omni_tokenizer, write_mp4

from hooked_avllm.architectures.qwen import load_video, prepare_inputs

from hooked_avllm.inputs import load_audio
from hooked_avllm.inputs.decode import probe_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    mp4 = write_mp4(folder / "clip.mp4", seconds=3.0, fps=10, audio_rate=44100, channels=2)
    silent = write_mp4(folder / "silent.mp4", seconds=2.0, fps=15, audio_rate=None)
    t = np.arange(int(2.5 * 48000)) / 48000
    soundfile.write(folder / "speech.wav", 0.25 * np.sin(2 * np.pi * 300 * t), 48000, subtype="PCM_16")
    return {"mp4": mp4, "silent": silent, "wav": folder / "speech.wav"}


def test_video_file_frames_and_audio_track(media):
    probe = probe_video(media["mp4"])
    assert (probe.total_frames, probe.fps, probe.has_audio) == (30, 10.0, True)
    clip = load_video(media["mp4"])
    assert clip.frames.shape[0] == 6  # 3 s at 2 fps
    assert clip.sample_fps == pytest.approx(2.0) and clip.duration == pytest.approx(3.0)
    red = clip.frames[:, 0, 10:-10, 10:-10].mean(dim=(1, 2))  # frame i of the file has red level 8*i
    expected = torch.tensor([8.0 * i for i in (0, 6, 12, 17, 23, 29)])
    assert (red - expected).abs().max() < 6  # H.264 / yuv420p colour loss
    track = clip.audio
    assert track.sampling_rate == 16000
    assert track.duration == pytest.approx(3.0, abs=0.05)  # AAC pads the last frame
    t = torch.arange(track.waveform.shape[0]) / 16000
    in_band = track.waveform[1600:40000].double()
    reference = 0.3 * torch.sin(2 * torch.pi * 440 * t[1600:40000]).double()
    assert (in_band - reference).abs().max() < 0.02  # stereo mixed to mono, 44.1 kHz resampled


def test_prepare_from_files(media):
    tok = omni_tokenizer()
    inputs = prepare_inputs(
        tok,
        OMNI,
        OMNI,
        prompt=["Describe what you see and hear.", "<|AUDIO|> What is said?"],
        video=[media["mp4"], None],
        audio=[None, str(media["wav"])],
    )
    clip_audio = load_audio(media["mp4"])
    n_video_audio = audio_tokens(clip_audio.waveform.shape[0])
    assert n_video_audio in (75, 76)
    grid = inputs.video_grid_thw[0].tolist()
    assert grid[0] == 3 and inputs.video_second_per_grid.tolist() == [1.0]
    layout = inputs.layout
    assert int(layout.video[0].sum()) == grid[0] * grid[1] * grid[2] // 4
    assert int(layout.audio[0].sum()) == n_video_audio
    assert int(layout.audio[1].sum()) == audio_tokens(int(2.5 * 16000)) == 62
    assert inputs.input_features.shape == (2, 128, 30000)
    assert inputs.feature_attention_mask.sum(-1).tolist() == [-(-clip_audio.waveform.shape[0] // 160), 250]
    assert layout.audio_time[0][layout.audio[0]].max() == pytest.approx(0.04 * (n_video_audio - 1))


def test_silent_video_needs_use_audio_in_video_false(media):
    tok = omni_tokenizer()
    inputs = prepare_inputs(tok, OMNI, OMNI, prompt="What happens?", video=media["silent"], use_audio_in_video=False)
    assert inputs.video_grid_thw[0, 0] == 2 and inputs.input_features is None  # 2 s at 2 fps -> 4 frames
    assert not inputs.layout.audio.any()
