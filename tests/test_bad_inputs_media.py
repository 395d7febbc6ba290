"""The bad-input catalogue, media: audio, images and videos as a user passes them, to the loaders and
to every family's ``model.prepare``.

Each :class:`~bad_inputs.Case` is run by :func:`~bad_inputs.check` on each family it names (a model
with its tokenizer: the shipped toy for Qwen2.5-Omni, the README's tiny stand-ins for Qwen3-Omni,
VideoLLaMA2 and MiniCPM-o), and the model must be left as a fresh one. Valid but unusual inputs
(``expect=None``) assert the right result against an independent computation: scipy's FFT
resampler for audio at any rate, PIL's own conversion of 8-bit data for 16-bit, grayscale,
palette and transparent images, a constant colour for a 1x1 image, grids counted by hand from
the released sizing rule.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.signal
import soundfile
import torch
from bad_inputs import Case, ModelSnapshot, check
from PIL import Image as PILImage
from test_inputs_support import write_mp4

from hooked_avllm.inputs import Video, load_audio
from hooked_avllm.inputs.errors import InputError, InputWarning, MediaFileNotFoundError
from hooked_avllm.inputs.vision import to_pil

FAMILIES = ("qwen2_5_omni", "qwen3_omni", "videollama2", "minicpm_o")  # every family with a prompt builder
QWEN = ("qwen2_5_omni", "qwen3_omni")
AUDIO_ERROR_BOUND = 1e-4  # max |ours - scipy.signal.resample| on band-limited tones of peak 0.8, away from the ends


# ---------------------------------------------------------------- models with tokenizers, media files


@functools.lru_cache(maxsize=None)
def model_of(name: str):
    """A model of family ``name`` that can ``prepare`` (a tokenizer attached), built once per session;
    ``"<family>:no_audio"`` is the same family without an audio tower (Qwen2.5-VL's toy, MiniCPM-V,
    VideoLLaMA2 without BEATs)."""
    from test_readme import tiny_minicpm, tiny_qwen3_omni, tiny_videollama2

    from hooked_avllm.toy import load_toy

    if name == "qwen2_5_omni":
        return load_toy("omni")
    if name == "qwen2_5_omni:no_audio":
        return load_toy("vl")
    if name == "qwen3_omni":
        return tiny_qwen3_omni()
    if name == "videollama2":
        return tiny_videollama2()
    if name == "videollama2:no_audio":
        return _videollama2_without_audio()
    if name == "minicpm_o":
        return tiny_minicpm(audio=True)
    if name == "minicpm_o:no_audio":
        return tiny_minicpm(audio=False)
    raise KeyError(name)


def _videollama2_without_audio():
    import tempfile

    from transformers import AutoTokenizer

    from hooked_avllm import HookedAVLLM
    from hooked_avllm.architectures.videollama2.config import tiny_config
    from hooked_avllm.toy.tokenizer import save_tokenizer

    model = HookedAVLLM.from_config(tiny_config(vocab_size=264, audio=False))
    with tempfile.TemporaryDirectory() as folder:
        save_tokenizer(folder, "vl")
        model.tokenizer = AutoTokenizer.from_pretrained(folder)
    return model


def write_png16(path, array: np.ndarray) -> None:
    """A 16-bit grayscale PNG of ``array`` (uint16 [H, W]), written by hand (the PNG format), not by
    the code under test."""
    import struct
    import zlib

    height, width = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@functools.lru_cache(maxsize=None)
def media_files(folder) -> SimpleNamespace:
    """The catalogue's media files, written once into ``folder``."""
    rng = np.random.default_rng(0)
    soundfile.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    left, right = rng.uniform(-0.5, 0.5, 8000), rng.uniform(-0.5, 0.5, 8000)
    soundfile.write(folder / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    levels = rng.integers(0, 256, (9, 13)).astype(np.uint8)
    write_png16(folder / "gray16.png", levels.astype(np.uint16) * 257)  # v * 257: exactly v in 8 bits
    PILImage.fromarray(levels, mode="L").save(folder / "gray8.png")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    write_mp4(folder / "silent.mp4", seconds=2.0, fps=4, size=(56, 56), audio_rate=None)
    return SimpleNamespace(folder=folder, empty_wav=folder / "empty.wav", stereo_wav=folder / "stereo.wav",
                           gray16=folder / "gray16.png", gray8=folder / "gray8.png", corrupt_mp4=folder / "corrupt.mp4",
                           silent_mp4=folder / "silent.mp4", missing_wav=folder / "missing.wav",
                           missing_mp4=folder / "missing.mp4", missing_png=folder / "missing.png")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return media_files(tmp_path_factory.mktemp("bad_media"))


def run_case(case: Case, family_name: str | None, files: SimpleNamespace) -> None:
    """Run one catalogue case on one family's model (or none) and check the model is left as fresh."""
    model = model_of(family_name) if family_name is not None else None
    ctx = SimpleNamespace(model=model, family=family_name, files=files, model_of=model_of)
    snapshot = ModelSnapshot(model) if model is not None else None
    check(case, ctx)
    if snapshot is not None:
        snapshot.assert_unchanged()


def case_params(cases: list[Case]) -> list:
    """One test per case and family it applies to (one without a model for ``families=None``)."""
    return [pytest.param(case, name, id=case.name if name is None else f"{case.name}[{name}]")
            for case in cases for name in (case.families or (None,))]


# ---------------------------------------------------------------- independent references


def tones(rate: int, seconds: float, band: float) -> np.ndarray:
    """Four tones inside ``band`` Hz, each a whole number of cycles in ``seconds`` (so the clip is one
    period of a band-limited signal), peak <= 0.8."""
    t = np.arange(int(round(rate * seconds))) / rate
    freqs = [round(band * f * seconds) / seconds for f in (0.05, 0.21, 0.47, 0.73)]
    return sum(0.2 * np.sin(2 * np.pi * f * t + k) for k, f in enumerate(freqs))


def resampling_error(rate: int) -> float:
    """max |load_audio((x, rate)) - scipy.signal.resample(x)| at 16 kHz, 50 ms from either end, for
    tones below 75% of the lower Nyquist frequency (where both filters are flat); scipy's FFT
    resampler is exact for a periodic band-limited signal. The clip lasts the shortest whole number
    of 1/gcd(rate, 16000) s from 0.2 s (whole samples at both rates: one period of the tones)."""
    g = math.gcd(rate, 16000)
    seconds = math.ceil(0.2 * g) / g
    x = tones(rate, seconds, 0.75 * min(rate, 16000) / 2)
    ours = load_audio((x.astype(np.float32), rate)).waveform.double().numpy()
    reference = scipy.signal.resample(x, int(round(16000 * seconds)))
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    edge = 800
    return float(np.abs(ours[edge:-edge] - reference[edge:-edge]).max())


def check_resampling(rate: int) -> None:
    error = resampling_error(rate)
    assert error < AUDIO_ERROR_BOUND, f"{rate} Hz -> 16 kHz: max error {error:.2e} vs scipy.signal.resample"


def pixels_per_channel(inputs) -> torch.Tensor:
    """The prepared image pixels as [rows, 3, values] (Qwen patches and MiniCPM-o patch rows are
    channel-major; VideoLLaMA2's images are [image, 3, H, W])."""
    pixels = inputs.media["pixel_values"]
    return pixels.reshape(pixels.shape[0], 3, -1).float()


def normalisation(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The image mean and std of a model's preprocessing (config constants)."""
    family = model.architecture.name
    if family.startswith("qwen"):
        mean, std = model.preprocessor.image_mean, model.preprocessor.image_std
    elif family == "videollama2":
        mean, std = model.cfg.vision.image_mean, model.cfg.vision.image_std
    else:  # MiniCPM-o: the released preprocessor_config.json
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def one_pixel_image(ctx) -> None:
    """A 1x1 image becomes a constant image of its colour at the family's size."""
    colour = np.array([200, 100, 50], np.uint8)
    inputs = ctx.model.prepare(prompt="What colour is it?", images=colour.reshape(1, 1, 3))
    mean, std = normalisation(ctx.model)
    expected = (torch.tensor(colour, dtype=torch.float32) / 255 - mean) / std
    pixels = pixels_per_channel(inputs)
    assert torch.allclose(pixels, expected[None, :, None].expand_as(pixels), atol=1e-5), \
        f"1x1 image: pixels {pixels.amin((0, 2)).tolist()}..{pixels.amax((0, 2)).tolist()}, expected {expected.tolist()}"
    assert int(inputs.layout.image.sum()) > 0


def same_media(ctx, a, b) -> None:
    """``images=a`` and ``images=b`` prepare the same pixels (``b``: an independent conversion of ``a``)."""
    first = ctx.model.prepare(prompt="Describe it.", images=a)
    second = ctx.model.prepare(prompt="Describe it.", images=b)
    assert torch.equal(first.input_ids, second.input_ids)
    assert torch.equal(first.media["pixel_values"], second.media["pixel_values"]), "the images prepare differently"


def sixteen_bit_png(ctx) -> None:
    same_media(ctx, ctx.files.gray16, ctx.files.gray8)
    white = ctx.model.prepare(prompt="Describe it.", images=np.full((9, 13, 3), 255, np.uint8))
    sixteen = ctx.model.prepare(prompt="Describe it.", images=ctx.files.gray16)
    assert not torch.equal(sixteen.media["pixel_values"], white.media["pixel_values"]), "the 16-bit image turned white"


def rgba_image(ctx) -> None:
    """Transparency over white (the Hugging Face processors' convert_to_rgb), except MiniCPM-o, whose
    released processor drops the alpha channel (PIL convert("RGB"))."""
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (20, 30, 4)).astype(np.uint8)
    rgba[..., 3] = np.where(rng.random((20, 30)) < 0.5, 0, 255)  # binary alpha: both ways exact in 8 bits
    picture = PILImage.fromarray(rgba, mode="RGBA")
    if ctx.family == "minicpm_o":
        expected = picture.convert("RGB")
    else:
        white = PILImage.new("RGBA", picture.size, (255, 255, 255, 255))
        expected = PILImage.alpha_composite(white, picture).convert("RGB")
    same_media(ctx, picture, expected)


def gray_and_palette(ctx) -> None:
    rng = np.random.default_rng(2)
    gray = PILImage.fromarray(rng.integers(0, 256, (20, 30)).astype(np.uint8), mode="L")
    same_media(ctx, gray, gray.convert("RGB"))
    palette = PILImage.fromarray(rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)).convert("P")
    same_media(ctx, palette, palette.convert("RGB"))
    same_media(ctx, np.asarray(gray), gray.convert("RGB"))  # a 2-D array is grayscale


def wide_image(ctx) -> None:
    """A 1-pixel-high, 150-pixel-wide strip: Qwen's smart resize rounds it to 28 (32) x 140 (160)
    pixels, counted by hand from the released rule (factor 28 / 32, the area above min_pixels):
    a grid of 1 x 2 x 10 patches; MiniCPM-o's slices match its released processor's."""
    strip = np.zeros((1, 150, 3), np.uint8)
    strip[..., 0] = 120
    inputs = ctx.model.prepare(prompt="Describe it.", images=strip)
    if ctx.family.startswith("qwen"):
        assert inputs.media["image_grid_thw"].tolist() == [[1, 2, 10]]
    else:
        from minicpm_reference_processor import ReferenceImageProcessor

        _, _, tgt_sizes = ReferenceImageProcessor().preprocess([PILImage.fromarray(strip)])
        assert inputs.media["tgt_sizes"].tolist() == tgt_sizes.tolist()
    mean, std = normalisation(ctx.model)
    expected = (torch.tensor([120.0, 0.0, 0.0]) / 255 - mean) / std
    pixels = pixels_per_channel(inputs)
    assert torch.allclose(pixels, expected[None, :, None].expand_as(pixels), atol=1e-5)


def coprime_rate_through_prepare(ctx) -> None:
    """Audio at 16,001 Hz (coprime with 16 kHz: 16,000 phases) prepares the features of scipy's 16-kHz resampling
    of it, away from the clip's 5 first and last frames (scipy's FFT resampler wraps around the
    ends, ours pads with silence): Whisper log-mel to 1e-3, VideoLLaMA2's fbank (no floor on empty
    bins) on the bins below 5 kHz, inside the tones' band, to 1e-2 in log energy."""
    x = tones(16001, 1.0, 6000.0).astype(np.float32)  # 1 s: whole samples at both rates
    reference = scipy.signal.resample(x.astype(np.float64), 16000).astype(np.float32)
    ours = ctx.model.prepare(prompt="What do you hear?", audio=(x, 16001)).media["input_features"]
    theirs = ctx.model.prepare(prompt="What do you hear?", audio=(reference, 16000)).media["input_features"]
    assert ours.shape == theirs.shape
    if ctx.family == "videollama2":  # [clip, frame, 128 bins]
        difference = (ours[:, 5:95, :100] - theirs[:, 5:95, :100]).abs().max()
        assert difference < 1e-2, float(difference)
    else:  # [clip, bins, frame]
        difference = (ours[..., 5:95] - theirs[..., 5:95]).abs().max()
        assert difference < 1e-3, float(difference)


def stereo_through_prepare(ctx) -> None:
    """A stereo clip is mixed down as each family's released processor does it: the mean of the
    channels (librosa's mono=True), or VideoLLaMA2's first channel (its soundfile path)."""
    data, rate = soundfile.read(ctx.files.stereo_wav, dtype="float32")  # [samples, 2], read independently
    mono = data[:, 0] if ctx.family == "videollama2" else data.mean(axis=1)
    ours = ctx.model.prepare(prompt="What do you hear?", audio=ctx.files.stereo_wav)
    expected = ctx.model.prepare(prompt="What do you hear?", audio=(mono, rate))
    assert torch.allclose(ours.media["input_features"], expected.media["input_features"], atol=1e-5)


def stereo_wav_loads_as_mean(ctx) -> None:
    data, rate = soundfile.read(ctx.files.stereo_wav, dtype="float32")
    clip = load_audio(ctx.files.stereo_wav)
    assert rate == 16000 and torch.allclose(clip.waveform, torch.from_numpy(data.mean(axis=1)), atol=1e-6)


def six_channel_array(ctx) -> None:
    data = np.random.default_rng(3).uniform(-0.5, 0.5, (16000, 6)).astype(np.float32)  # [samples, channels]
    clip = load_audio((data, 16000))
    assert torch.allclose(clip.waveform, torch.from_numpy(data.mean(axis=1)), atol=1e-6)


def sixteen_bit_to_pil(ctx) -> None:
    ours = np.asarray(to_pil(ctx.files.gray16))
    expected = np.asarray(PILImage.open(ctx.files.gray8).convert("RGB"))
    assert np.array_equal(ours, expected), "16-bit levels v * 257 must read as the 8-bit levels v"
    assert (ours < 255).mean() > 0.9, "the 16-bit image turned white"


def frames(n: int = 4, size: int = 56, channels: int = 3) -> np.ndarray:
    return np.zeros((n, size, size, channels), np.uint8)


def prepare(ctx, **kwargs):
    return ctx.model.prepare(**{"prompt": "Describe it.", **kwargs})


def silent_frames(ctx, **kwargs):
    """``video=`` frames, without their sound where the family takes sound from a video by default."""
    return prepare(ctx, use_audio_in_video=False, **kwargs)


# ---------------------------------------------------------------- the catalogue

CASES = [
    # -- audio: files and arrays at the loader
    Case("a wav file with 0 samples", "media", lambda ctx: load_audio(ctx.files.empty_wav), InputError,
         r"empty\.wav is empty \(0 samples.*at least 0\.02 s"),
    Case("float audio at int16 magnitudes (3000.0): raises, the log-mel of such audio is not the model's", "media",
         lambda ctx: load_audio((np.full(16000, 3000.0, np.float32), 16000)), InputError,
         r"float samples up to 3000.*\[-1, 1\].*32768"),
    Case("a raw audio array without its sampling rate: warns that 16 kHz is assumed", "media",
         lambda ctx: load_audio(np.zeros(16000, np.float32)), InputWarning,
         r"shape \(16000,\) was given without its sampling rate.*16000 Hz.*\(array, rate\)"),
    Case("NaN audio samples", "media", lambda ctx: load_audio((np.array([0.1, np.nan, 0.2] * 100), 16000)),
         InputError, r"100 NaN or infinite samples.*nan_to_num"),
    Case("infinite audio samples", "media", lambda ctx: load_audio((np.array([0.1, np.inf] * 100), 16000)),
         InputError, r"100 NaN or infinite samples"),
    Case("a sampling rate given in kHz (16)", "media", lambda ctx: load_audio((np.zeros(100), 16)), InputError,
         r"rate 16 Hz is outside.*did you mean 16000 Hz"),
    Case("a fractional sampling rate (44100.5)", "media", lambda ctx: load_audio((np.zeros(100), 44100.5)),
         InputError, r"44100\.5.*positive whole number of Hz"),
    Case("an audio array of 9 channels", "media", lambda ctx: load_audio((np.zeros((9, 16000)), 16000)), InputError,
         r"shape \(9, 16000\).*at most 8 channels"),
    Case("a stereo wav is mixed down to the channels' mean", "media", stereo_wav_loads_as_mean, None),
    Case("a [samples, 6] array is mixed down to the channels' mean", "media", six_channel_array, None),
    *[Case(f"audio at {rate} Hz matches scipy within {AUDIO_ERROR_BOUND:g}", "media",
           functools.partial(lambda ctx, rate: check_resampling(rate), rate=rate), None)
      for rate in (8000, 11025, 44100, 44101, 96000, 176400)],  # 8 to 192 kHz: bench/bench_audio_rates.py
    # -- audio through every family's prepare
    Case("audio= a path that does not exist", "media", lambda ctx: prepare(ctx, audio=ctx.files.missing_wav),
         MediaFileNotFoundError, r"audio= '.*missing\.wav'.*not found", families=FAMILIES),
    Case("audio= a wav with 0 samples", "media", lambda ctx: prepare(ctx, audio=ctx.files.empty_wav), InputError,
         r"audio= '.*empty\.wav'.*empty \(0 samples", families=FAMILIES),
    Case("audio= NaN samples", "media", lambda ctx: prepare(ctx, audio=(np.full(16000, np.nan, np.float32), 16000)),
         InputError, r"audio= \(ndarray of shape \(16000,\).*16000 NaN or infinite", families=FAMILIES),
    Case("audio= float samples at int16 magnitudes", "media",
         lambda ctx: prepare(ctx, audio=(np.full(16000, -3000.0, np.float32), 16000)), InputError,
         r"audio= .*float samples up to 3000.*32768", families=FAMILIES),
    Case("audio= a raw array without its sampling rate", "media",
         lambda ctx: prepare(ctx, audio=np.zeros(16000, np.float32)), InputWarning,
         r"without its sampling rate: it is taken to be at 16000 Hz", families=FAMILIES),
    Case("audio= at 16,001 Hz (coprime) gives scipy's resampling's features", "media", coprime_rate_through_prepare, None,
         families=FAMILIES),
    Case("audio= a stereo wav is mixed down as released", "media", stereo_through_prepare, None, families=FAMILIES),
    # -- images
    Case("a 16-bit grayscale PNG is scaled by its bit depth (not white)", "media", sixteen_bit_to_pil, None),
    Case("images= a 16-bit PNG prepares as its 8-bit version", "media", sixteen_bit_png, None, families=FAMILIES),
    Case("images= an RGBA image", "media", rgba_image, None, families=FAMILIES),
    Case("images= grayscale and palette images", "media", gray_and_palette, None, families=FAMILIES),
    Case("images= a 1x1 image", "media", one_pixel_image, None, families=FAMILIES),
    Case("images= a 1x150 strip", "media", wide_image, None, families=(*QWEN, "minicpm_o")),
    Case("images= an aspect ratio of 250", "media", lambda ctx: prepare(ctx, images=np.zeros((2, 500, 3), np.uint8)),
         InputError, r"images= ndarray of shape \(2, 500, 3\).*aspect ratio 250.*crop or pad", families=QWEN),
    Case("images= NaN pixels", "media", lambda ctx: prepare(ctx, images=np.full((28, 28, 3), np.nan, np.float32)),
         InputError, r"images= ndarray of shape \(28, 28, 3\).*2352 NaN or infinite", families=FAMILIES),
    Case("images= float pixels in [0, 255]", "media",
         lambda ctx: prepare(ctx, images=np.full((28, 28, 3), 255.0, np.float32)), InputError,
         r"images= .*values in \[255, 255\].*must be in \[0, 1\].*Divide by 255", families=FAMILIES),
    Case("images= an empty array", "media", lambda ctx: prepare(ctx, images=np.zeros((0, 28, 3), np.uint8)),
         InputError, r"images= ndarray of shape \(0, 28, 3\).*is empty", families=FAMILIES),
    Case("images= a corrupt file", "media", lambda ctx: prepare(ctx, images=ctx.files.corrupt_mp4), InputError,
         r"images= '.*corrupt\.mp4'.*(not an image|cannot read)", families=FAMILIES),
    Case("images= a path that does not exist", "media", lambda ctx: prepare(ctx, images=ctx.files.missing_png),
         MediaFileNotFoundError, r"images= '.*missing\.png'.*not found", families=FAMILIES),
    # -- videos
    Case("video= frames of rank 3", "media", lambda ctx: silent_frames(ctx, video=np.zeros((56, 56, 3), np.uint8)),
         InputError, r"video= ndarray of shape \(56, 56, 3\).*4-D", families=FAMILIES),
    Case("video= frames with 5 channels", "media", lambda ctx: silent_frames(ctx, video=frames(channels=5)),
         InputError, r"video= ndarray of shape \(4, 56, 56, 5\).*frame array has shape \(56, 56, 5\)",
         families=FAMILIES),
    Case("video= 0 frames", "media", lambda ctx: silent_frames(ctx, video=frames(n=0)), InputError,
         r"video= ndarray of shape \(0, 56, 56, 3\).*no frames", families=FAMILIES),
    Case("video= a corrupt file", "media", lambda ctx: silent_frames(ctx, video=ctx.files.corrupt_mp4), InputError,
         r"video= '.*corrupt\.mp4'.*corrupt", families=FAMILIES),
    Case("video= a path that does not exist", "media", lambda ctx: silent_frames(ctx, video=ctx.files.missing_mp4),
         MediaFileNotFoundError, r"video= '.*missing\.mp4'.*not found", families=FAMILIES),
    Case("video= a file without a sound track where sound is required", "media",
         lambda ctx: prepare(ctx, video=ctx.files.silent_mp4), InputError,
         r"video= '.*silent\.mp4'.*no (audio|sound) track.*use_audio_in_video=False", families=(*QWEN, "minicpm_o")),
    Case("video= a file without a sound track (VideoLLaMA2: 30 s of silence, as released)", "media",
         lambda ctx: prepare(ctx, video=ctx.files.silent_mp4), InputWarning,
         r"video= \(prompt 0\): the video has no sound track.*silence.*use_audio_in_video=False",
         families=("videollama2",)),
    Case("video= frames without sound and use_audio_in_video=True", "media",
         lambda ctx: prepare(ctx, video=frames(), use_audio_in_video=True), InputError,
         r"video= ndarray.*(no audio track|carry no sound track).*use_audio_in_video=False",
         families=(*QWEN, "minicpm_o")),
    Case("video_fps=0", "media", lambda ctx: silent_frames(ctx, video=frames(), video_fps=0), InputError,
         r"video_fps=0: a frame rate must be a positive", families=(*QWEN, "videollama2")),
    Case("video_fps=-2 (negative seconds per frame group)", "media",
         lambda ctx: silent_frames(ctx, video=frames(), video_fps=-2.0), InputError,
         r"video_fps=-2\.0: a frame rate must be a positive", families=(*QWEN, "videollama2")),
    Case("video= a Video with fps=-2 (negative seconds per frame group)", "media",
         lambda ctx: silent_frames(ctx, video=Video(torch.zeros(4, 3, 56, 56), fps=-2.0, sample_fps=-2.0)), InputError,
         r"video= a Video.*fps=-2\.0: the frame rate must be positive", families=FAMILIES),
]


@pytest.mark.parametrize("case, family_name", case_params(CASES))
def test_bad_media(case, family_name, files):
    run_case(case, family_name, files)
