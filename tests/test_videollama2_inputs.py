"""VideoLLaMA2.1-AV's inputs against the released processor's rules, each computed here from its
description or by an independent implementation, never by our own code:

* frame indices: the "uniform" rule (middles of equal segments of ``0 .. n - 1``, nudged by 1e-6
  and rounded), in exact rational arithmetic;
* frame pixels: ``transformers.SiglipImageProcessorPil`` (bicubic resize to the square size,
  1/255, mean and std 0.5), on frames decoded here with PyAV;
* audio features: kaldi-native-fbank (Kaldi's C++ feature code) on the zero-padded 30-s waveform
  ``×2**15``; a video's sound track: decoded here with PyAV, mixed to mono, rounded to 16 bits
  (the release reads it through ``ffmpeg -ac 1 -f s16le``) and cut into pytorchvideo's
  ``ConstantClipsPerVideoSampler`` clips, whose starts are computed here with ``Fraction``;
* prompt text: the Qwen2 chat template of the real Qwen2 tokenizer (``tests/fixtures/hub``),
  with the tag and a newline put first, tokenized in chunks around the tag as the release does.

Behaviour of the release not reproduced on purpose (see preprocess.py): the random 30-s crop of
longer audio (we take ``audio_start``), taking every frame of an array as given (we sample
``num_frames`` by the same uniform rule), and the cast of the fbank to bfloat16 (the model's
dtype casts it). Reproduced: the newline ``mm_infer`` puts before a text-only prompt, and 30 s of
silence for a video without a sound track.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image as PILImage
from test_fbank import reference_fbank
from test_inputs_support import encode_mp4, omni_tokenizer
from transformers import AutoTokenizer, SiglipImageProcessorPil

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.videollama2.config import tiny_config
from hooked_avllm.architectures.videollama2.preprocess import (
    audio_stream,
    clip_starts,
    load_frames,
    load_image_pixels,
    resize_frames,
    sample_frame_indices,
    video_audio_clips,
)
from hooked_avllm.architectures.videollama2.prompt import prepare_videollama2
from hooked_avllm.inputs import Audio, InputError, MediaFileNotFoundError, Video
from hooked_avllm.inputs.fbank import beats_fbank
from hooked_avllm.toy.tokenizer import save_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")

RATE = 16000
CLIP = 30 * RATE  # the released processor's 30 s
FBANK_FRAMES = 1 + (CLIP - 400) // 160  # 2998
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
FPS = 10
LOG_EPS = math.log(np.finfo(np.float32).eps)


# ---------------------------------------------------------------- helpers and fixtures


def siglip_processor(size: int) -> SiglipImageProcessorPil:
    return SiglipImageProcessorPil(size={"height": size, "width": size}, resample=3, do_rescale=True,
                                   rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def reference_pixels(frames: list[np.ndarray], size: int) -> torch.Tensor:
    return siglip_processor(size)([PILImage.fromarray(f) for f in frames], return_tensors="pt")["pixel_values"]


def uniform_indices(n_total: int, num_frames: int) -> list[int]:
    """The release's uniform rule in exact arithmetic: segment i of [0, n-1] has its middle at
    (n-1)(2i+1)/(2F); np.round(middle + 1e-6) is floor(middle + 1e-6 + 1/2), as middle + 1e-6 is
    never a half-integer for these sizes."""
    nudge = Fraction(1, 10**6)
    return [math.floor(Fraction((n_total - 1) * (2 * i + 1), 2 * num_frames) + nudge + Fraction(1, 2))
            for i in range(num_frames)]


def sampler_clips(n_samples: int, rate: int = RATE, clips: int = 8, seconds: int = 2) -> list[tuple[int, int]]:
    """ConstantClipsPerVideoSampler's clips of a track as sample ranges: the latest start
    max(duration - 2, 0) (a float subtraction, then exact), k/7 of it for clip k, sliced at
    int(start * rate) .. int((start + 2) * rate)."""
    duration = n_samples / rate
    latest = Fraction(max(duration - seconds, 0))
    out = []
    for k in range(clips):
        start = latest / max(clips - 1, 1) * k
        out.append((int(start * rate), min(int((start + seconds) * rate), n_samples)))
    return out


def reference_beats_fbank(wave_16bit: np.ndarray) -> np.ndarray:
    """BEATs' 128 filters at 16 kHz from kaldi-native-fbank, which refuses that setting whole (filter
    3 gets no FFT bin). Filter j of an n-filter bank spans mel edges j..j+2 of n+2 equally spaced
    edges, so two smaller banks over sub-ranges of the same edges give the same filters: 3
    filters on edges 0..4 and 124 on edges 4..129. Filter 3 is log(float32 eps), torchaudio's."""
    mel = lambda f: 1127.0 * math.log1p(f / 700.0)
    inverse = lambda m: 700.0 * math.expm1(m / 1127.0)
    low, high = mel(20.0), mel(RATE / 2)
    edge4 = inverse(low + 4 * (high - low) / 129)
    first = reference_fbank(wave_16bit, RATE, 3, 20.0, edge4)
    rest = reference_fbank(wave_16bit, RATE, 124, edge4, RATE / 2)
    return np.concatenate([first, np.full((first.shape[0], 1), LOG_EPS, np.float32), rest], axis=1)


def decode_file(path) -> tuple[list[np.ndarray], np.ndarray | None]:
    """All frames (RGB) and the sound track ([channels, samples], float) of a file, read with PyAV."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    track = None
    with av.open(str(path)) as container:
        if container.streams.audio:
            chunks = []
            for frame in container.decode(audio=0):
                assert frame.format.name == "fltp" and frame.sample_rate == RATE
                chunks.append(frame.to_ndarray())
            track = np.concatenate(chunks, axis=1)
    return frames, track


def pcm16(x: np.ndarray) -> np.ndarray:
    """ffmpeg's float -> s16 conversion (round half to even, clip), back to [-1, 1]."""
    return np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767) / 32768.0


def padded(wave: np.ndarray, n: int = CLIP) -> np.ndarray:
    wave = np.asarray(wave, np.float64)[:n]
    return np.pad(wave, (0, n - wave.shape[0]))


def test_frames(n: int, height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    """uint8 frames that differ per frame (red = 10 i) with texture (random green and blue)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    frames[..., 0] = (10 * np.arange(n) % 256)[:, None, None]
    return frames


test_frames.__test__ = False  # a helper, not a test


def noise(seconds: float, seed: int, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(int(round(seconds * RATE)))).astype(np.float32)


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy_tokenizer")
    save_tokenizer(folder, "vl")
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def cfg():
    return tiny_config(vocab_size=264)  # 4 frames of 56², 2 x 2 tokens per frame pair; BEATs tiny


@pytest.fixture(scope="module")
def model(cfg, toy_tokenizer):
    model = HookedAVLLM.from_config(cfg)
    model.tokenizer = toy_tokenizer
    return model


@pytest.fixture(scope="module")
def qwen():
    """The real Qwen2 tokenizer (VideoLLaMA2.1's LLM is Qwen2) and a config whose placeholder ids
    lie past its vocabulary."""
    return omni_tokenizer(), tiny_config(vocab_size=152064)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videollama2_media")
    t23 = np.arange(int(2.3 * RATE)) / RATE
    files = {
        # 23 frames at 10 fps with a mono 16-kHz AAC track (2.3 s)
        "mp4": encode_mp4(folder / "clip.mp4", test_frames(23), FPS, (0.3 * np.sin(2 * np.pi * 440 * t23))[None], RATE),
        # 14 frames (1.4 s, shorter than one 2-s clip), stereo track with different channels
        "short": encode_mp4(folder / "short.mp4", test_frames(14, seed=1), FPS,
                            np.stack([0.3 * np.sin(2 * np.pi * 440 * t23[:22400]), 0.05 * noise(1.4, 1)]), RATE),
        "silent": encode_mp4(folder / "silent.mp4", test_frames(9, seed=2), FPS),
    }
    stereo = np.stack([0.25 * np.sin(2 * np.pi * 300 * np.arange(3 * RATE) / RATE), noise(3.0, 2)], axis=1)
    soundfile.write(folder / "stereo.wav", stereo, RATE, subtype="FLOAT")
    files["stereo"] = folder / "stereo.wav"
    PILImage.fromarray(test_frames(1, 40, 70, seed=3)[0]).save(folder / "picture.png")
    files["png"] = folder / "picture.png"
    return files


def real_ids(inputs, row: int = 0) -> list[int]:
    return inputs.input_ids[row][inputs.attention_mask[row].bool()].tolist()


def expected_ids(tokenizer, text: str, tag: str | None, media_ids: list[int]) -> list[int]:
    """The release's ``tokenizer_multimodal_token``: chunks around the tag tokenized separately,
    the tag replaced (here: by the media's placeholder run)."""
    if tag is None:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    before, after = text.split(tag)
    return (tokenizer(before, add_special_tokens=False)["input_ids"] + media_ids
            + tokenizer(after, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- frame sampling and pixels


PAIRS = [(1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (3, 2), (5, 8), (7, 16), (15, 16), (16, 16), (17, 16),
         (23, 4), (23, 16), (31, 8), (99, 16), (100, 4), (101, 16), (250, 16), (1001, 8), (7919, 16), (100000, 32)]


@pytest.mark.parametrize("n_total, num_frames", PAIRS)
def test_frame_indices_follow_the_released_uniform_rule(n_total, num_frames):
    indices = sample_frame_indices(n_total, num_frames)
    assert indices == uniform_indices(n_total, num_frames)
    assert len(indices) == num_frames and all(0 <= i < n_total for i in indices)


def test_frame_indices_known_answers():
    assert sample_frame_indices(100, 4) == [12, 37, 62, 87]
    assert sample_frame_indices(1, 4) == [0, 0, 0, 0]
    assert sample_frame_indices(3, 4) == [0, 1, 1, 2]  # fewer frames than asked: repeats
    assert sample_frame_indices(16, 16) == list(range(16))  # as many as asked: every frame once
    # exact half-way middles (0.5, 1.5, ...) go up because of the 1e-6 nudge (np.round alone: half to even)
    assert sample_frame_indices(3, 2) == [1, 2]
    assert sample_frame_indices(5, 4) == [1, 2, 3, 4]


@pytest.mark.parametrize("size", [56, 384])
@pytest.mark.parametrize("height, width", [(40, 52), (100, 30), (56, 56), (7, 300), (216, 384), (480, 640)])
def test_frames_resize_like_the_siglip_processor(size, height, width):
    frames = list(np.random.default_rng(height * width).integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    ours = resize_frames(frames, size, (0.5,) * 3, (0.5,) * 3)
    theirs = reference_pixels(frames, size)
    assert ours.shape == theirs.shape == (2, 3, size, size)
    assert (ours - theirs).abs().max().item() <= 1e-5  # measured: 0 (the same Pillow bicubic resize)


def test_image_inputs_of_every_kind_match_the_processor(media):
    picture = np.asarray(PILImage.open(media["png"]).convert("RGB"))
    theirs = reference_pixels([picture], 56)[0]
    for source in (media["png"], str(media["png"]), PILImage.open(media["png"]), picture, picture.astype(np.float32) / 255):
        assert (load_image_pixels(source, 56, (0.5,) * 3, (0.5,) * 3) - theirs).abs().max().item() <= 1e-5


def test_frame_arrays_are_sampled_by_the_uniform_rule():
    frames = test_frames(23)
    sampled = load_frames(frames, 4, 56, (0.5,) * 3, (0.5,) * 3, fps=5.0)
    indices = uniform_indices(23, 4)
    assert (sampled.pixels - reference_pixels([frames[i] for i in indices], 56)).abs().max().item() <= 1e-5
    assert sampled.frame_times.tolist() == pytest.approx([i / 5.0 for i in indices])
    channels_first = load_frames(torch.from_numpy(frames).permute(0, 3, 1, 2), 4, 56, (0.5,) * 3, (0.5,) * 3, fps=5.0)
    assert torch.equal(channels_first.pixels, sampled.pixels)


def test_a_video_object_keeps_its_pixel_scale():
    """A Video holds floats in [0, 255]; they must not be read as [0, 1] (which whitens every frame)."""
    frames = test_frames(8)
    video = Video(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), fps=2.0, sample_fps=2.0)
    from_object = load_frames(video, 4, 56, (0.5,) * 3, (0.5,) * 3)
    from_array = load_frames(frames, 4, 56, (0.5,) * 3, (0.5,) * 3, fps=2.0)
    assert torch.equal(from_object.pixels, from_array.pixels)
    assert torch.equal(from_object.frame_times, from_array.frame_times)


# ---------------------------------------------------------------- audio


def test_audio_stream_pads_to_30_s_and_matches_kaldi():
    seconds = 12.3
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (0.1 * np.sin(2 * np.pi * 440 * t) + noise(seconds, 0)).astype(np.float32)
    stream = audio_stream(torch.from_numpy(wave), RATE, 30.0)
    assert stream.fbank.shape == (FBANK_FRAMES, 128)
    theirs = reference_beats_fbank(padded(wave) * 2**15)
    error = np.abs(stream.fbank.numpy() - theirs)
    # The reference computes in float32: a filter's energy is only resolved to ~1e-7 of the frame's
    # loudest filter energy (float32 FFT rounding), so near-empty filters (gap of many nats below
    # the frame's loudest) carry its rounding. Within 12 nats (1.6e5 in power): 1e-3 (measured 1e-4).
    # Below that: the float32 bound itself, 1e-3 + 1e3 * eps32 * exp(gap) (measured factor < 250).
    gap = theirs.max(axis=1, keepdims=True) - theirs
    assert error[gap < 12].max() < 1e-3
    assert (error <= 1e-3 + 1e3 * np.finfo(np.float32).eps * np.exp(gap)).all()
    assert (stream.fbank[:, 3] == LOG_EPS).all()  # the filter with no FFT bin, as torchaudio keeps it
    real = np.arange(FBANK_FRAMES) * 160 < wave.shape[0]  # a frame is timed by its first sample
    assert torch.allclose(stream.frame_source_time[real].double(), torch.arange(int(real.sum()), dtype=torch.float64) * 0.01, atol=1e-5)
    assert stream.frame_source_time[~real].isnan().all()
    assert (stream.fbank[~real][:, :] == LOG_EPS).all()  # zero padding: every filter at the floor


def test_audio_longer_than_30_s_keeps_its_first_30_s():
    wave = torch.from_numpy(noise(31.7, 1))
    long, cut = audio_stream(wave, RATE, 30.0), audio_stream(wave[:CLIP], RATE, 30.0)
    assert torch.equal(long.fbank, cut.fbank)
    assert not long.frame_source_time.isnan().any()


@pytest.mark.parametrize("n_samples", [int(0.7 * RATE), int(1.5 * RATE), 2 * RATE, 2 * RATE + 7, 32007, 36864,
                                       int(5.2 * RATE), int(16.0 * RATE) + 3, int(37.1 * RATE), 10 * 60 * RATE + 11])
def test_video_track_clips_follow_the_clip_sampler(n_samples):
    """Values on the 16-bit grid (k / 2**15), so the rounding to 16 bits keeps them and every
    sample's origin shows; 32007 samples is a duration where float arithmetic would move a clip
    boundary by one sample."""
    grid = ((np.arange(n_samples) % 20011) - 10005).astype(np.float32) / 32768
    wave, times = video_audio_clips(Audio(torch.from_numpy(grid), RATE), clips=8, clip_duration=2.0)
    ranges = sampler_clips(n_samples)
    assert len(ranges) == 8
    expected = np.concatenate([grid[a:b] for a, b in ranges])
    assert torch.equal(wave, torch.from_numpy(expected))
    assert torch.equal(times, torch.from_numpy(np.concatenate([np.arange(a, b) for a, b in ranges]) / RATE))
    if n_samples <= 2 * RATE:  # shorter than one clip: 8 copies of the whole track, from 0
        assert ranges == [(0, n_samples)] * 8
    starts = clip_starts(n_samples / RATE, 8, 2.0)
    assert [int(s * RATE) for s in starts] == [a for a, _ in ranges]


def test_float_arithmetic_would_move_a_clip_boundary():
    """Why the clips are cut in exact arithmetic: for these tracks float arithmetic puts a clip
    boundary one sample off the sampler's (which works in Fraction)."""
    for n_samples in (32007, 36864):  # 36864: the AAC track of the 2.3-s test clip
        step = max(n_samples / RATE - 2.0, 0.0) / 7
        floats = [(int(step * k * RATE), min(int((step * k + 2.0) * RATE), n_samples)) for k in range(8)]
        assert floats != sampler_clips(n_samples)


def test_video_track_is_rounded_to_16_bits():
    x = torch.from_numpy(noise(2.5, 3, scale=0.2))
    wave, _ = video_audio_clips(Audio(x, RATE), clips=8, clip_duration=2.0)
    expected = np.concatenate([pcm16(x.numpy())[a:b] for a, b in sampler_clips(x.shape[0])])
    assert torch.equal(wave, torch.from_numpy(expected).float())
    assert not torch.equal(wave, torch.cat([x[a:b] for a, b in sampler_clips(x.shape[0])]))


# ---------------------------------------------------------------- model.prepare on files and arrays


def audio_token_times(times: np.ndarray, n_tokens: int) -> np.ndarray:
    """Each BEATs token's time: the first sample of its 16-frame time patch (8 bands per patch)."""
    patch = np.arange(n_tokens) // 8
    first = patch * 16 * 160
    return np.where(first < times.shape[0], times[np.minimum(first, times.shape[0] - 1)], np.nan)


@pytest.mark.parametrize("num_frames", [4, 16])
def test_a_video_file_gives_the_released_frames_and_sound_clips(media, toy_tokenizer, num_frames):
    cfg = tiny_config(vocab_size=264, num_frames=num_frames)
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?", video=media["mp4"])
    frames, track = decode_file(media["mp4"])
    assert len(frames) == 23
    indices = uniform_indices(len(frames), num_frames)
    assert inputs.pixel_values_videos.shape == (1, num_frames, 3, 56, 56)
    assert (inputs.pixel_values_videos[0] - reference_pixels([frames[i] for i in indices], 56)).abs().max() <= 1e-5

    # the sound track: mono, 16-bit, the sampler's 8 clips of the track's own duration, padded to 30 s
    mono = pcm16(track.mean(axis=0))
    ranges = sampler_clips(mono.shape[0])
    clips = np.concatenate([mono[a:b] for a, b in ranges])
    assert inputs.input_features.shape == (1, FBANK_FRAMES, 128)
    assert (inputs.input_features[0] - beats_fbank(torch.from_numpy(padded(clips)))).abs().max() <= 1e-5

    layout = inputs.layout
    groups, rows, cols = cfg.vision.token_grid()
    assert int(layout.video.sum()) == groups * rows * cols and int(layout.audio.sum()) == 187 * 8
    video_pos, audio_pos = layout.video[0].nonzero().flatten(), layout.audio[0].nonzero().flatten()
    assert int(video_pos.max()) + 1 == int(audio_pos.min()), "the audio tokens follow the video tokens"
    group_of = np.arange(groups * rows * cols) // (rows * cols)
    assert layout.frame_group[0, video_pos].tolist() == group_of.tolist()
    assert layout.video_time[0, video_pos].tolist() == pytest.approx([indices[2 * g] / FPS for g in group_of])
    times = np.concatenate([np.arange(a, b) for a, b in ranges]) / RATE
    np.testing.assert_allclose(layout.audio_time[0, audio_pos].numpy(), audio_token_times(times, 1496), atol=1e-6)
    (audio_span,) = layout.spans_of("audio")
    assert audio_span.in_video == 0


def test_a_short_video_repeats_its_whole_track_and_mixes_stereo(media, toy_tokenizer, cfg):
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", video=media["short"])
    _, track = decode_file(media["short"])
    assert track.shape[0] == 2 and track.shape[1] < 2 * RATE
    mono = pcm16(track.mean(axis=0))  # ffmpeg -ac 1 averages the channels
    assert sampler_clips(mono.shape[0]) == [(0, mono.shape[0])] * 8
    expected = beats_fbank(torch.from_numpy(padded(np.tile(mono, 8))))
    # the channel average is summed in float32 on both sides; a sample that rounds to the other
    # 16-bit neighbour moves the log energies by far less than 1e-3
    assert (inputs.input_features[0] - expected).abs().max() < 1e-3
    first_channel = beats_fbank(torch.from_numpy(padded(np.tile(pcm16(track[0]), 8))))
    assert (inputs.input_features[0] - first_channel).abs().max() > 0.1


def test_video_with_separate_audio_uses_the_given_sound(media, toy_tokenizer, cfg):
    sound = noise(3.0, 4)
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", video=media["mp4"], audio=sound)
    assert inputs.input_features.shape == (1, FBANK_FRAMES, 128)
    assert (inputs.input_features[0] - beats_fbank(torch.from_numpy(padded(sound)))).abs().max() <= 1e-5
    layout = inputs.layout
    times = layout.audio_time[layout.audio]
    np.testing.assert_allclose(times.numpy(), audio_token_times(np.arange(sound.shape[0]) / RATE, 1496), atol=1e-6)
    assert layout.spans_of("audio")[0].in_video == 0
    alone = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", video=media["mp4"])
    assert not torch.allclose(alone.input_features, inputs.input_features)
    assert torch.equal(alone.pixel_values_videos, inputs.pixel_values_videos)


def test_a_video_object_brings_its_sound_track(toy_tokenizer, cfg):
    sound = noise(3.1, 10)
    video = Video(torch.from_numpy(test_frames(8)).permute(0, 3, 1, 2).float(), fps=2.0, sample_fps=2.0,
                  audio=Audio(torch.from_numpy(sound), RATE))
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", video=video)
    clips = np.concatenate([pcm16(sound)[a:b] for a, b in sampler_clips(sound.shape[0])])
    assert (inputs.input_features[0] - beats_fbank(torch.from_numpy(padded(clips)))).abs().max() <= 1e-5
    silent = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?", video=video, use_audio_in_video=False)
    assert silent.input_features is None and int(silent.layout.audio.sum()) == 0


def test_video_without_its_sound(media, toy_tokenizer, cfg):
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?", video=media["mp4"], use_audio_in_video=False)
    assert inputs.input_features is None and int(inputs.layout.audio.sum()) == 0
    assert int(inputs.layout.video.sum()) == 8


def test_a_silent_video_gets_30_s_of_silence_as_released(media, toy_tokenizer, cfg):
    with pytest.warns(UserWarning, match="no sound track"):
        inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?", video=media["silent"])
    assert int(inputs.layout.video.sum()) == 8 and int(inputs.layout.audio.sum()) == 187 * 8
    assert (inputs.input_features[0] - beats_fbank(torch.zeros(30 * RATE))).abs().max() == 0
    assert bool(inputs.layout.audio_time[inputs.layout.audio].isnan().all()), "silence has no source time"
    assert [s.in_video for s in inputs.layout.spans if s.kind == "audio"] == [0]


def test_audio_only_keeps_the_first_channel(media, toy_tokenizer, cfg):
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", audio=media["stereo"])
    stereo, rate = soundfile.read(media["stereo"], dtype="float32")
    assert rate == RATE and stereo.shape[1] == 2
    assert (inputs.input_features[0] - beats_fbank(torch.from_numpy(padded(stereo[:, 0])))).abs().max() <= 1e-5
    assert inputs.pixel_values_videos is None and inputs.pixel_values is None
    layout = inputs.layout
    assert int(layout.audio.sum()) == 1496 and int(layout.video.sum()) == 0
    assert layout.spans_of("audio")[0].in_video is None
    text = SYSTEM + "<|im_start|>user\n<audio>\nWhat do you hear ?<|im_end|>\n<|im_start|>assistant\n"
    assert real_ids(inputs) == expected_ids(toy_tokenizer, text, "<audio>", [cfg.tokens.audio] * 1496)
    as_array = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", audio=(stereo.T, RATE))
    assert torch.equal(as_array.input_features, inputs.input_features)


def test_long_audio_is_cut_from_audio_start(toy_tokenizer, cfg):
    sound = noise(35.0, 5)
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", audio=sound, audio_start=3.5)
    window = sound[int(3.5 * RATE): int(3.5 * RATE) + CLIP]
    assert (inputs.input_features[0] - beats_fbank(torch.from_numpy(window.astype(np.float64)))).abs().max() <= 1e-5
    times = inputs.layout.audio_time[inputs.layout.audio]
    assert not times.isnan().any()
    np.testing.assert_allclose(times[::8][:3].numpy(), [3.5, 3.66, 3.82], atol=1e-5)
    default = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you hear ?", audio=sound)
    assert (default.input_features[0] - beats_fbank(torch.from_numpy(sound[:CLIP].astype(np.float64)))).abs().max() <= 1e-5


def test_image_only(media, toy_tokenizer, cfg):
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?", images=media["png"])
    picture = np.asarray(PILImage.open(media["png"]).convert("RGB"))
    assert (inputs.pixel_values - reference_pixels([picture], 56)).abs().max() <= 1e-5
    assert inputs.pixel_values_videos is None and inputs.input_features is None
    layout = inputs.layout
    n = int(np.prod(cfg.vision.token_grid()))
    assert int(layout.image.sum()) == n and int((layout.video | layout.audio).sum()) == 0
    text = SYSTEM + "<|im_start|>user\n<image>\nWhat do you see ?<|im_end|>\n<|im_start|>assistant\n"
    assert real_ids(inputs) == expected_ids(toy_tokenizer, text, "<image>", [cfg.tokens.image] * n)
    listed = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?", images=[media["png"]])
    assert torch.equal(listed.pixel_values, inputs.pixel_values)


def test_text_only(toy_tokenizer, cfg):
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="What do you see ?")
    assert inputs.pixel_values is None and inputs.pixel_values_videos is None and inputs.input_features is None
    text = SYSTEM + "<|im_start|>user\n\nWhat do you see ?<|im_end|>\n<|im_start|>assistant\n"  # mm_infer: "" + "\n"
    assert real_ids(inputs) == toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert bool(inputs.layout.text.all())


def test_a_batch_with_media_per_row(media, model, cfg):
    sound = noise(4.0, 6)
    prompts = ["Describe what you see and hear .", "What do you hear ?", "What do you see ?", "What do you see ?",
               "Hi"]
    videos = [media["mp4"], None, None, test_frames(12, seed=7), None]
    audios = [None, sound, None, None, None]
    images = [None, None, media["png"], None, None]
    with pytest.warns(UserWarning, match="no sound track"):  # the frame array (row 3)
        batch = model.prepare(prompt=prompts, video=videos, audio=audios, images=images)
        singles = [model.prepare(prompt=p, video=v, audio=a, images=i) for p, v, a, i in zip(prompts, videos, audios, images)]
    layout = batch.layout
    lengths = [s.input_ids.shape[1] for s in singles]
    assert batch.input_ids.shape == (5, max(lengths))
    for r, single in enumerate(singles):
        pad = max(lengths) - lengths[r]
        assert batch.attention_mask[r].tolist() == [0] * pad + [1] * lengths[r], "left padding"
        assert real_ids(batch, r) == real_ids(single)
        assert bool(layout.padding[r, :pad].all()) and not bool(layout.padding[r, pad:].any())
        for name in ("text", "audio", "video", "image", "frame_group", "row", "col"):
            assert torch.equal(getattr(layout, name)[r, pad:], getattr(single.layout, name)[0]), name
        for name in ("audio_time", "video_time"):
            assert torch.equal(getattr(layout, name)[r, pad:].isnan(), getattr(single.layout, name)[0].isnan())
            assert torch.allclose(getattr(layout, name)[r, pad:].nan_to_num(-1), getattr(single.layout, name)[0].nan_to_num(-1))
    # media tensors: the batch's items in row order
    assert torch.equal(batch.pixel_values_videos, torch.cat([singles[0].pixel_values_videos, singles[3].pixel_values_videos]))
    # the frame array has no sound track: 30 s of silence stand in for it, as released
    assert torch.equal(batch.input_features, torch.cat([singles[0].input_features, singles[1].input_features,
                                                        singles[3].input_features]))
    assert torch.equal(batch.pixel_values, singles[2].pixel_values)
    spans = [(s.batch, s.kind, s.index, s.in_video) for s in layout.spans]
    assert spans == [(0, "video", 0, None), (0, "audio", 0, 0), (1, "audio", 1, None), (2, "image", 0, None),
                     (3, "video", 1, None), (3, "audio", 2, 1)]  # row 3: the frames and the silence standing in for their sound
    for span in layout.spans:
        mask = getattr(layout, span.kind)[span.batch]
        assert mask[span.start: span.stop].all() and int(mask.sum()) == span.stop - span.start
    with torch.no_grad():
        logits = model(batch)
        for r, single in enumerate(singles):
            pad = max(lengths) - lengths[r]
            assert (logits[r, pad:] - model(single)[0]).abs().max() < 1e-4


# ---------------------------------------------------------------- prompt text


@pytest.mark.parametrize("tag, kind", [("<video>", "video"), ("<image>", "images"), ("<audio>", "audio")])
def test_prompt_text_is_the_released_rendering(qwen, tag, kind):
    tokenizer, cfg = qwen
    media = {"video": test_frames(4), "images": test_frames(1)[0], "audio": noise(1.0, 7)}[kind]
    prompt = "Describe what you see and hear."
    inputs = prepare_videollama2(tokenizer, cfg, prompt=prompt, use_audio_in_video=False, **{kind: media})
    released = tokenizer.apply_chat_template([{"role": "user", "content": f"{tag}\n{prompt}"}], tokenize=False,
                                             add_generation_prompt=True)
    assert released == f"{SYSTEM}<|im_start|>user\n{tag}\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    layout = inputs.layout
    media_ids = inputs.input_ids[0][~layout.text[0]].tolist()
    assert real_ids(inputs) == expected_ids(tokenizer, released, tag, media_ids)
    # the chunks are tokenized apart: "\n" after the tag is its own token, not merged into the text
    after = tokenizer("\n" + prompt, add_special_tokens=False)["input_ids"]
    first_text_after = int((~layout.text[0]).nonzero().max()) + 1
    assert inputs.input_ids[0, first_text_after:first_text_after + len(after)].tolist() == after


def test_chat_messages_system_prompt_and_raw_text(qwen):
    tokenizer, cfg = qwen
    frames = test_frames(4)
    chat = [{"role": "user", "content": "Hello ."}, {"role": "assistant", "content": "Hi ."},
            {"role": "user", "content": "What now ?"}]

    def prepared_text(**kwargs) -> str:
        inputs = prepare_videollama2(tokenizer, cfg, video=frames, use_audio_in_video=False, **kwargs)
        ids = inputs.input_ids[0].tolist()
        video = inputs.layout.video[0].nonzero().flatten()
        return tokenizer.decode(ids[: int(video.min())]) + "<video>" + tokenizer.decode(ids[int(video.max()) + 1:])

    # a chat: the tag goes first in the first user message (the release: into message 0)
    tagged = [dict(chat[0], content="<video>\nHello ."), *chat[1:]]
    released = tokenizer.apply_chat_template(tagged, tokenize=False, add_generation_prompt=True)
    assert prepared_text(prompt=chat) == released
    # a chat that opens with its own system message keeps it, as the template does
    with_system = [{"role": "system", "content": "Be brief."}, *chat]
    released = tokenizer.apply_chat_template([with_system[0], *tagged], tokenize=False, add_generation_prompt=True)
    assert prepared_text(prompt=with_system) == released and released.count("<|im_start|>system") == 1
    # system_prompt=False: no system turn; a string: that system turn
    assert prepared_text(prompt="Hi .", system_prompt=False) == "<|im_start|>user\n<video>\nHi .<|im_end|>\n<|im_start|>assistant\n"
    assert prepared_text(prompt="Hi .", system_prompt="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    # the tag where the user put it
    assert "user\nLook: <video> what is it?<|im_end|>" in prepared_text(prompt="Look: <video> what is it?")
    # chat_template=False: the text as given, tag included
    raw = "<video>\nWhat is it?"
    inputs = prepare_videollama2(tokenizer, cfg, prompt=raw, video=frames, use_audio_in_video=False, chat_template=False)
    assert real_ids(inputs) == expected_ids(tokenizer, raw, "<video>", [cfg.tokens.video] * 8)
    no_prompt = prepare_videollama2(tokenizer, cfg, prompt="Hi", add_generation_prompt=False)
    assert tokenizer.decode(real_ids(no_prompt)) == SYSTEM + "<|im_start|>user\n\nHi<|im_end|>\n"  # mm_infer's "" + "\n"


# ---------------------------------------------------------------- errors


def error_cases():
    frames, sound = test_frames(4), noise(1.0, 8)
    return {
        "image and video": (dict(prompt="Hi", images=frames[0], video=frames), ["images=", "video=", "drop one"]),
        "image and audio": (dict(prompt="Hi", images=frames[0], audio=sound), ["images=", "audio=", "one medium"]),
        "tag without media": (dict(prompt="<video>\nWhat is it?"), ["<video>", "no media", "remove the tag"]),
        "tag twice": (dict(prompt="<video>\n<video>\nWhat?", video=frames), ["<video>", "exactly once", "'<video>': 2"]),
        "another tag": (dict(prompt="<image>\nWhat?", video=frames), ["<video>", "<image>", "exactly once"]),
        "raw text without its tag": (dict(prompt="What?", video=frames, chat_template=False), ["<video>", "put it in the text"]),
        "short batch list": (dict(prompt=["Hi", "Hello"], video=[frames]), ["video=", "list of 1", "batch of 2"]),
        "batch given one item": (dict(prompt=["Hi", "Hello"], audio=sound), ["audio=", "ndarray", "one entry"]),
        "two images": (dict(prompt="Hi", images=[frames[0], frames[1]]), ["one image", "holds 2"]),
        "missing video": (dict(prompt="Hi", video="/nonexistent/clip.mp4"), ["/nonexistent/clip.mp4", "not found"]),
        "missing audio": (dict(prompt="Hi", audio="/nonexistent/sound.wav"), ["/nonexistent/sound.wav", "not found"]),
        "missing image": (dict(prompt="Hi", images="/nonexistent/picture.png"), ["/nonexistent/picture.png", "not found"]),
        "audio start past the end": (dict(prompt="Hi", audio=sound, audio_start=2.0), ["audio_start=2.0", "outside"]),
        "float frames past 1": (dict(prompt="Hi", video=frames.astype(np.float32)), ["[0, 1]", "Divide by 255"]),
        "two system prompts": (dict(prompt=[{"role": "system", "content": "A"}, {"role": "user", "content": "B"}],
                                    system_prompt="C"), ["system message", "system_prompt=", "once"]),
        "messages as raw text": (dict(prompt=[{"role": "user", "content": "B"}], chat_template=False), ["chat_template=False"]),
        "media inside a message": (dict(prompt=[{"role": "user", "content": [{"type": "video"}]}]), ["content", "video="]),
        "bad system prompt": (dict(prompt="Hi", system_prompt=3), ["system_prompt", "3"]),
        "empty prompt": (dict(prompt=[]), ["prompt must be"]),
    }


@pytest.mark.parametrize("case", list(error_cases()))
@pytest.mark.filterwarnings("ignore:.*no sound track")  # some cases pass silent frames on their way to the error
def test_bad_inputs_say_what_to_do(case, toy_tokenizer, cfg):
    kwargs, words = error_cases()[case]
    with pytest.raises(InputError) as info:
        prepare_videollama2(toy_tokenizer, cfg, **kwargs)
    for word in words:
        assert word in str(info.value), (case, str(info.value))


def test_missing_files_are_file_not_found_errors(toy_tokenizer, cfg):
    with pytest.raises(MediaFileNotFoundError):
        prepare_videollama2(toy_tokenizer, cfg, prompt="Hi", video="/nonexistent/clip.mp4")


def test_audio_to_a_model_without_an_audio_tower(toy_tokenizer, media):
    cfg = tiny_config(vocab_size=264, audio=False)
    with pytest.raises(InputError, match="no audio tower.*remove audio="):
        prepare_videollama2(toy_tokenizer, cfg, prompt="Hi", audio=noise(1.0, 9))
    # a video's own track is left out instead: the model cannot hear it
    inputs = prepare_videollama2(toy_tokenizer, cfg, prompt="Hi", video=media["mp4"])
    assert inputs.input_features is None and int(inputs.layout.video.sum()) == 8


def test_model_prepare_goes_through_the_family(model, media):
    inputs = model.prepare(prompt="What do you see ?", video=media["mp4"])
    direct = prepare_videollama2(model.tokenizer, model.cfg, prompt="What do you see ?", video=media["mp4"])
    assert torch.equal(inputs.input_ids, direct.input_ids)
    assert torch.equal(inputs.input_features, direct.input_features)
    assert torch.equal(inputs.pixel_values_videos, direct.pixel_values_videos)
    with torch.no_grad():
        out = model(inputs)
        assert out.shape == (1, inputs.input_ids.shape[1], model.cfg.text.vocab_size)
