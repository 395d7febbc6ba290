"""MiniCPM-o 2.6's preprocessing (``hooked_avllm.architectures.minicpm_o.preprocess``) against an
independent reference of the released processor (``minicpm_reference_processor.py``, written
from reading ``image_processing_minicpmv.py``, ``processing_minicpmo.py`` and ``chat()``), against
``transformers.WhisperFeatureExtractor`` for the log-mel, and against the real tokenizer files
(the Qwen2 BPE of the Qwen2.5-Omni fixture with MiniCPM-o's own ``tokenizer_config.json``).

Tolerances: slice pixels, ``reshape_by_patch`` layouts and log-mel features are compared for
exact equality (both sides run the same float32 operations: PIL bicubic on uint8, ``/255``,
``(x - 0.5) / 0.5``; ``torch.stft`` of the 30-s zero-padded float32 buffer and the same float32
mel matrix), grids, sizes, counts, strings and token ids exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from minicpm_reference_processor import (
    MINICPM_HUB,
    QWEN_BPE_HUB,
    ReferenceImageProcessor,
    build_minicpm_tokenizer_folder,
    reference_audio_features,
    reference_audio_placeholder,
    reference_chat_prompt,
    reference_process,
)

from hooked_avllm.architectures.minicpm_o import preprocess as pp
from hooked_avllm.inputs.errors import InputError

# MiniCPM-o 2.6 ids, written out here from its tokenizer_config.json (ARCHITECTURES.md §4.1)
UNK, IM_START, IM_END, ENDOFTEXT = 128244, 151644, 151645, 151643
IMAGE, IMAGE_END, SLICE, SLICE_END, IMAGE_ID, IMAGE_ID_END = 151665, 151666, 151675, 151676, 151677, 151678
UNIT, AUDIO_START, AUDIO_END = 151679, 151685, 151687
SPK_BOS, SPK, SPK_EOS, TTS_BOS = 151688, 151689, 151690, 151691
NEWLINE = 198

CFG = pp.MiniCPMPreprocessorConfig()
REF = ReferenceImageProcessor()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = build_minicpm_tokenizer_folder(tmp_path_factory.mktemp("minicpm_tokenizer"))
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + 7919 * width + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# ---------------------------------------------------------------- config


def test_config_defaults_are_the_released_file():
    assert pp.MiniCPMPreprocessorConfig.from_pretrained(MINICPM_HUB) == pp.MiniCPMPreprocessorConfig()
    raw = json.loads((MINICPM_HUB / "preprocessor_config.json").read_text())
    cfg = pp.MiniCPMPreprocessorConfig.from_dict(raw)
    assert (cfg.max_slice_nums, cfg.scale_resolution, cfg.patch_size, cfg.image_feature_size) == (9, 448, 14, 64)
    assert cfg.use_image_id and cfg.slice_mode and cfg.norm_mean == (0.5,) * 3 and cfg.norm_std == (0.5,) * 3


def test_config_errors_name_the_value(tmp_path):
    with pytest.raises(InputError, match="max_slice_nums must be a positive integer; got 0"):
        pp.MiniCPMPreprocessorConfig(max_slice_nums=0)
    with pytest.raises(InputError, match="no preprocessor_config.json"):
        pp.MiniCPMPreprocessorConfig.from_pretrained(tmp_path)
    with pytest.raises(InputError, match="max_slice_nums must be a positive integer"):
        pp.slice_image(Image.new("RGB", (900, 900)), CFG, max_slice_nums=0)


# ---------------------------------------------------------------- images: worked examples (§2.1)


def _tgts(image: Image.Image, max_slice_nums: int | None = None) -> tuple:
    out = pp.preprocess_image(image, CFG, max_slice_nums)
    return out.grid, [tuple(t) for t in out.tgt_sizes.tolist()]


def test_worked_examples():
    assert _tgts(Image.new("RGB", (448, 448))) == (None, [(32, 32)])
    grid, sizes = _tgts(Image.new("RGB", (1344, 1344)))
    assert grid == (3, 3) and sizes == [(32, 32)] * 10
    assert pp.image_token_count(grid) == 640
    assert pp.image_placeholder(grid).count("<unk>") == 640
    wide = Image.new("RGB", (1280, 720))
    assert _tgts(wide, 9) == ((3, 2), [(24, 43)] + [(29, 35)] * 6)
    assert pp.slice_image(wide, CFG).source.size == (602, 336)
    assert pp.slice_image(wide, CFG).cells[0].size == (490, 406)
    assert _tgts(wide, 2) == ((2, 1), [(24, 43), (34, 30), (34, 30)])
    assert [c.size for c in pp.slice_image(wide, CFG, 2).cells] == [(420, 476)] * 2
    assert _tgts(wide, 1) == (None, [(24, 43)])


def test_small_images_are_upscaled():
    sliced = pp.slice_image(Image.new("RGB", (20, 10)), CFG)
    assert sliced.grid is None and sliced.source.size == (630, 322)  # ~448² pixels, not 20x10


# ---------------------------------------------------------------- images: against the reference


SIZES = [
    (1, 1), (5, 3), (13, 13), (14, 14), (20, 500), (500, 20), (1, 600), (2000, 1), (3000, 40), (40, 1500),
    (447, 451), (448, 449), (449, 449), (641, 359), (999, 333), (1023, 767), (333, 1000), (700, 700),
    (897, 449), (1280, 720), (720, 1280), (1920, 1080), (2560, 1440), (4000, 3000), (3001, 3999),
]
RANDOM_SIZES = [tuple(int(x) for x in s) for s in np.random.default_rng(5).integers(1, 2200, size=(12, 2))]


@pytest.mark.parametrize("size", SIZES + RANDOM_SIZES)
def test_slices_match_the_reference(size):
    image = noise_image(*size)
    for limit in ((9, 2, 1) if size[0] * size[1] < 1_500_000 else (9,)):
        ours = pp.preprocess_image(image, CFG, limit)
        ref_slices = REF.slices_chw(image, limit)
        assert ours.n_slices == len(ref_slices), (size, limit)
        assert ours.grid == (None if REF.get_sliced_grid(size, limit) is None else tuple(REF.get_sliced_grid(size, limit)))
        assert ours.size == size
        assert ours.tgt_sizes.tolist() == [[s.shape[1] // 14, s.shape[2] // 14] for s in ref_slices], (size, limit)
        for mine, ref in zip(ours.pixel_values, ref_slices):
            assert mine.dtype == torch.float32 and mine.shape == ref.shape
            assert np.array_equal(mine.numpy(), ref), (size, limit)  # exact
            assert -1.0 <= ref.min() and ref.max() <= 1.0
        if limit == 9:  # the released layout, through the reference's preprocess (unfold)
            ref_values, ref_sizes, ref_tgts = REF.preprocess([image], limit)
            assert ref_sizes[0] == size and ours.tgt_sizes.tolist() == ref_tgts.tolist()
            for mine, strip in zip(ours.pixel_values, ref_values):
                assert np.array_equal(pp.reshape_by_patch(mine, CFG.patch_size).numpy(), strip)
        for use_id, index in ((True, 0), (True, 3), (False, 0)):
            assert pp.image_placeholder(ours.grid, index, use_image_id=use_id) == REF.get_slice_image_placeholder(
                size, index, limit, use_id
            )


def test_grid_choice_against_the_reference_over_many_sizes():
    rng = np.random.default_rng(11)
    sizes = [tuple(int(x) for x in s) for s in rng.integers(1, 6000, size=(3000, 2))]
    sizes += [(w, h) for w in range(400, 2000, 97) for h in range(400, 2000, 89)]
    for size in sizes:
        for limit in (1, 2, 3, 4, 6, 9, 16):
            ref = REF.get_sliced_grid(size, limit)
            assert pp.slice_grid(size, limit) == (None if ref is None else tuple(ref)), (size, limit)
            if ref is not None:
                assert pp.refine_size(size, tuple(ref)) == REF.get_refine_size(size, ref)
        assert pp.best_resize(size, allow_upscale=True) == REF.find_best_resize(size, allow_upscale=True)
        assert pp.best_resize(size) == REF.find_best_resize(size)


def test_slice_mode_off_keeps_the_image():
    cfg = pp.MiniCPMPreprocessorConfig(slice_mode=False)
    ref = ReferenceImageProcessor({**json.loads((MINICPM_HUB / "preprocessor_config.json").read_text()), "slice_mode": False})
    image = noise_image(100, 45)
    ours = pp.preprocess_image(image, cfg)
    values, _, tgts = ref.preprocess([image])
    assert ours.n_slices == 1 and ours.pixel_values[0].shape == (3, 45, 100)
    assert ours.tgt_sizes.tolist() == tgts.tolist() == [[3, 7]]
    assert torch.equal(pp.reshape_by_patch(ours.pixel_values[0]), torch.from_numpy(values[0]))
    assert pp.image_placeholder(None, slice_mode=False) == ref.get_slice_image_placeholder((100, 45), 0)


def test_rgba_and_grey_images_are_converted_like_the_release():
    rgba = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA")
    grey = rgba.convert("L")
    for image in (rgba, grey):
        ours = pp.preprocess_image(image, CFG)
        ref = REF.slices_chw(image)
        assert torch.equal(ours.pixel_values[0], torch.from_numpy(ref[0]))


def test_patch_rows_layout():
    x = torch.randn(3, 5 * 14, 7 * 14)
    rows = pp.patch_rows(x)
    assert rows.shape == (35, 588)
    conv = torch.nn.Conv2d(3, 4, 14, 14, bias=False)
    expected = conv(x[None])[0].flatten(1).T  # [35, 4], positions row-major
    assert torch.allclose(rows @ conv.weight.reshape(4, -1).T, expected, atol=1e-5)
    strip = pp.reshape_by_patch(x)
    assert torch.equal(strip.reshape(3, 14, 35, 14).permute(2, 0, 1, 3).reshape(35, 588), rows)
    ref_strip = REF.reshape_by_patch(x.numpy())
    assert torch.equal(strip, torch.from_numpy(ref_strip))


def test_patch_rows_agree_with_the_vision_tower():
    navit = pytest.importorskip("hooked_avllm.towers.navit_siglip")
    for size in ((1280, 720), (448, 448), (20, 500)):
        for pixels in pp.preprocess_image(noise_image(*size), CFG).pixel_values:
            assert torch.equal(navit.patch_rows(pixels), pp.patch_rows(pixels))
            assert torch.equal(navit.patch_rows_from_strip(pp.reshape_by_patch(pixels)), pp.patch_rows(pixels))


# ---------------------------------------------------------------- audio


def test_placeholder_counts_follow_the_formulas():
    for n in list(range(0, 3300, 7)) + [15999, 16000, 16001, 16640, 479999, 480000, 480001, 1_000_000]:
        frames = math.ceil(n / 160)
        m = ((frames - 1) // 2 + 1 - 2) // 2 + 1
        assert pp.audio_frame_count(n) == frames
        assert pp.audio_embedding_count(n) == max(m, 0)
        for chunk in (True, False):
            text = pp.audio_placeholder(n, chunk)
            assert text == reference_audio_placeholder(n, chunk), (n, chunk)
            assert text.count("<unk>") == max(m, 0)
            assert pp.audio_token_count(n, chunk) == text.count("<unk>") + 2 * text.count("<|audio_start|>")
        if m > 0:
            assert pp.audio_chunk_sizes(n) == [25] * (m // 25) + ([m % 25] if m % 25 else [])
    assert pp.audio_token_count(16000) == 27
    assert pp.audio_embedding_count(16000 * 7) == 175


@pytest.mark.parametrize("n", [1, 100, 321, 8000, 12345, 16001, 480000, 480001, 1_000_003])
def test_mel_features_match_whisper_feature_extractor(n):
    wave = (np.random.default_rng(n).standard_normal(n) * 0.2).astype(np.float32)
    ours = pp.audio_features([wave])
    ref_feats, ref_lens, ref_phs = reference_audio_features([wave])
    pieces = math.ceil(n / 480000)
    assert ours.input_features.shape == ref_feats.shape == (pieces, 80, min(max(ref_lens), 3000))
    assert ours.feature_lens.tolist() == ref_lens.tolist()
    assert ours.feature_lens.tolist() == [min(math.ceil(k / 160), 3000) for k in [480000] * (pieces - 1) + [n - 480000 * (pieces - 1)]]
    diff = (ours.input_features - ref_feats).abs().max().item()
    assert diff == 0.0, f"max |ours - WhisperFeatureExtractor| = {diff}"
    assert pp.audio_placeholder(n) == ref_phs[0]


def test_merged_messages_and_pieces_match_the_reference():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(k).astype(np.float32) * 0.1 for k in (16000 * 20, 16000 * 15, 8000, 16000 * 3, 4321)]
    groups = [1, 1, 1, 3, 4]  # 35.5 s in one message (two pieces), then two single arrays
    ours = pp.audio_features(arrays, groups)
    feats, lens, phs = reference_audio_features(arrays, groups)
    assert ours.feature_lens.tolist() == lens.tolist() == [3000, 550, 300, 28]
    assert ours.piece_group.tolist() == [0, 0, 1, 2]
    assert torch.equal(ours.input_features, feats)
    assert [pp.audio_placeholder(len(a)) for a in arrays] == phs
    assert ours.array_token_counts.tolist() == [p.count("<unk>") for p in phs]
    assert int(ours.embedding_counts.sum()) == int(ours.array_token_counts.sum())  # whole seconds before the last: aligned


def test_misaligned_audio_is_refused():
    arrays = [np.zeros(16330, np.float32), np.zeros(16330, np.float32)]
    _, lens, phs = reference_audio_features(arrays, [0, 0])
    embeddings = sum(pp.audio_embedding_count(int(n) * 160) for n in lens)
    placeholders = sum(p.count("<unk>") for p in phs)
    assert (placeholders, embeddings) == (52, 51)  # the release would fill 52 slots from 51 embeddings
    with pytest.raises(InputError, match=r"would get 52 placeholder tokens but their concatenation gives 51"):
        pp.audio_features(arrays, [0, 0])
    pp.audio_features(arrays, [0, 1])  # separate messages: fine
    pp.check_audio_alignment([16000, 16000 * 2, 777], [0, 0, 0])  # whole seconds then a remainder: fine
    with pytest.raises(InputError, match="audio groups= has 1 entries for 2"):
        pp.audio_features(arrays, [0])
    with pytest.raises(InputError, match=r"shape \(2, 100\)"):
        pp.audio_features([np.zeros((2, 100), np.float32)])


# ---------------------------------------------------------------- video


def test_vision_video_frame_indices():
    assert pp.video_frame_indices(100, 25.0) == [0, 25, 50, 75]
    assert pp.video_frame_indices(100, 29.97) == [0, 30, 60, 90]
    assert pp.video_frame_indices(10, 2.5) == [0, 2, 4, 6, 8]  # Python's round(2.5) == 2
    assert pp.video_frame_indices(3, 0.2) == [0, 1, 2]
    picked = list(range(0, 24 * 300, 24))  # a 300-s clip at 24 fps: 300 candidates -> 64
    gap = 300 / 64
    assert pp.video_frame_indices(24 * 300, 24.0) == [picked[int(i * gap + gap / 2)] for i in range(64)]
    with pytest.raises(InputError, match="frame rate must be positive; got 0"):
        pp.video_frame_indices(10, 0)


def test_vision_video_file(tmp_path):
    from test_inputs_support import write_mp4

    path = write_mp4(tmp_path / "clip.mp4", seconds=3.0, fps=10, size=(48, 64), audio_rate=None)
    video = pp.load_video_frames(path)
    assert video.indices == [0, 10, 20] and video.times == [0.0, 1.0, 2.0] and video.frames.shape == (3, 48, 64, 3)
    assert [abs(int(f[..., 0].mean()) - 8 * i) <= 3 for f, i in zip(video.frames, video.indices)] == [True] * 3
    frames = [Image.fromarray(f) for f in video.frames]
    out = pp.prepare_chat([{"role": "user", "content": frames + ["Describe the video"]}], CFG,
                          chat_template=_template(), max_slice_nums=pp.VIDEO_MAX_SLICE_NUMS, use_image_id=False)
    assert "<image_id>" not in out.text and out.text.count("<image>") == 3
    assert "</image>\n<image>" in out.text and "</image>\nDescribe the video<|im_end|>" in out.text


def test_image_sources(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    from_file = pp.preprocess_image(tmp_path / "x.png", CFG)
    from_array = pp.preprocess_image(array, CFG)
    from_chw = pp.preprocess_image(torch.from_numpy(array).permute(2, 0, 1), CFG)
    assert torch.equal(from_file.pixel_values[0], from_array.pixel_values[0])
    assert torch.equal(from_file.pixel_values[0], from_chw.pixel_values[0])
    with pytest.raises(InputError):
        pp.preprocess_image(tmp_path / "missing.png", CFG)


def test_omni_units_and_frames_past_the_end():
    units = pp.omni_units(3.0, 10.0, 30, 48000)
    assert [u.frame_index for u in units] == [10, 20, 20]  # t = 3 s is past frame 29: moviepy repeats its last read
    assert [u.frame_in_range for u in units] == [True, True, False]
    assert [pp.omni_units(3.0, 10.0, 30, 48000, past_end="last_frame")[i].frame_index for i in range(3)] == [10, 20, 29]
    assert [(u.audio_start, u.audio_end) for u in units] == [(0, 16000), (16000, 32000), (32000, 48000)]
    assert [u.frame_index for u in pp.omni_units(0.4, 25.0, 10, 6400)] == [0]  # one unit: frame 0
    assert [u.frame_index for u in pp.omni_units(2.0, 29.97, 60, 32000)] == [29, 59]  # floor(29.97 * t + 1e-5)
    assert [u.frame_index for u in pp.omni_units(2.0, 29.97, 59, 32000)] == [29, 29]
    partial = pp.omni_units(2.5, 30.0, 75, 40000)
    assert [u.n_audio_samples for u in partial] == [16000, 16000, 8000]
    short_audio = pp.omni_units(3.0, 10.0, 30, 20000)
    assert [u.n_audio_samples for u in short_audio] == [16000, 4000, 0]


def _omni_messages(seconds: float, size=(640, 360)):
    n = int(round(seconds * 16000))
    wave = (np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32)
    units = pp.omni_units(seconds, 10.0, int(seconds * 10), n)
    frames = [noise_image(*size, seed=u.frame_index) for u in units]
    audios = [wave[u.audio_start : u.audio_end] for u in units]
    return [pp.omni_system_message(), {"role": "user", "content": pp.omni_content(frames, audios)}]


def test_omni_layout_against_the_reference(tokenizer):
    msgs = _omni_messages(2.5)
    ours = pp.prepare_chat(msgs, CFG, omni_input=True, use_tts_template=True, max_slice_nums=1, use_image_id=False)
    prompt, images, audios, parts = reference_chat_prompt(msgs, tokenizer, omni_input=True, use_tts_template=True)
    ref = reference_process(prompt, images, audios, parts, tokenizer, max_slice_nums=1, use_image_id=False)
    assert ours.text == ref["text"]
    ids = tokenizer.encode(ours.text)
    assert ids == ref["input_ids"].tolist()
    full_unit = [UNIT, IMAGE] + [UNK] * 64 + [IMAGE_END, AUDIO_START] + [UNK] * 25 + [AUDIO_END]
    half_unit = [UNIT, IMAGE] + [UNK] * 64 + [IMAGE_END, AUDIO_START] + [UNK] * 12 + [AUDIO_END]
    assert len(full_unit) == 94 == pp.omni_unit_token_count(16000) and len(half_unit) == pp.omni_unit_token_count(8000)
    user = tokenizer.encode("<|im_start|>user\n")
    system = tokenizer.encode(f"<|im_start|>user\n{pp.OMNI_SYSTEM_PROMPT['en']}<|im_end|>\n")
    tail = [IM_END, NEWLINE, IM_START] + tokenizer.encode("assistant\n") + [SPK_BOS, SPK, SPK_EOS, TTS_BOS]
    assert ids == system + user + full_unit * 2 + half_unit + tail
    assert tokenizer.encode(pp.omni_unit_placeholder(16000)) == full_unit
    # media: one 448²-ish slice per unit, the units' audio merged into one 2.5-s piece
    assert [im.n_slices for im in ours.images] == [1, 1, 1]
    assert torch.equal(torch.cat([im.tgt_sizes for im in ours.images]), torch.from_numpy(ref["tgt_sizes"]))
    for im, strip in zip(ours.images, ref["pixel_values"]):
        assert torch.equal(pp.reshape_by_patch(im.pixel_values[0]), torch.from_numpy(strip))
    assert ours.audio.feature_lens.tolist() == ref["audio_feature_lens"].tolist() == [250]
    assert torch.equal(ours.audio.input_features, ref["audio_features"])
    assert [int(b - a) for a, b in ref["audio_bounds"]] == [25, 25, 12]
    assert [int(b - a) for a, b in ref["image_bound"]] == [64, 64, 64]
    assert [int(b - a) for a, b in ref["spk_bounds"]] == [1]


def test_omni_video_file(tmp_path):
    from test_inputs_support import write_mp4

    path = write_mp4(tmp_path / "clip.mp4", seconds=3.0, fps=10, size=(48, 64), audio_rate=44100)
    clip = pp.load_omni_video(path)
    assert len(clip.units) == math.ceil(clip.duration) and clip.fps == 10.0
    expected = pp.omni_units(clip.duration, 10.0, 30, sum(a.shape[0] for a in clip.audios))
    assert clip.units == expected
    for unit, frame in zip(clip.units, clip.frames):
        assert abs(int(frame[..., 0].mean()) - 8 * unit.frame_index) <= 3  # frame i has red level 8*i
    assert [a.shape[0] for a in clip.audios[:2]] == [16000, 16000]
    assert all(float(a.abs().max()) <= 1.0 for a in clip.audios)
    silent = write_mp4(tmp_path / "silent.mp4", seconds=1.0, fps=10, audio_rate=None)
    with pytest.raises(InputError, match="no sound track"):
        pp.load_omni_video(silent)


# ---------------------------------------------------------------- chat templates


def _template() -> str:
    return pp.load_chat_template(MINICPM_HUB)


CHATS = [
    ([{"role": "user", "content": "Hello"}], {}),
    ([{"role": "user", "content": [noise_image(64, 48), "What is in the image?"]}], {}),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": [noise_image(900, 500), noise_image(30, 40), "Compare."]},
      {"role": "assistant", "content": "Two images."}, {"role": "user", "content": "More?"}], {}),
    ([{"role": "user", "content": [np.zeros(24000, np.float32), "Transcribe."]}], {}),
    ([{"role": "user", "content": ["Hello"]}], {"use_tts_template": True}),
    ([{"role": "system", "content": "Sys"}, {"role": "user", "content": [noise_image(500, 900), np.ones(16000, np.float32) * 0.1]}], {}),
    ([{"role": "user", "content": ["a", noise_image(448, 448), "b"]}], {"omni_input": True}),
]


@pytest.mark.parametrize("case", range(len(CHATS)))
def test_chat_rendering_matches_the_reference(tokenizer, case):
    msgs, kwargs = CHATS[case]
    rendered = pp.render_chat(msgs, chat_template=_template(), **kwargs)
    prompt, images, audios, parts = reference_chat_prompt(msgs, tokenizer, **kwargs)
    assert rendered.text == prompt
    assert rendered.audio_groups == parts and len(rendered.images) == len(images)
    assert rendered.tts_template == (bool(audios) or kwargs.get("use_tts_template", False))
    ours = pp.prepare_chat(msgs, CFG, chat_template=_template(), **kwargs)
    ref = reference_process(prompt, images, audios, parts, tokenizer)
    assert ours.text == ref["text"]
    assert tokenizer.encode(ours.text) == ref["input_ids"].tolist()
    strips = [pp.reshape_by_patch(p) for im in ours.images for p in im.pixel_values]
    assert len(strips) == len(ref["pixel_values"])
    assert all(torch.equal(a, torch.from_numpy(b)) for a, b in zip(strips, ref["pixel_values"]))
    assert all(int(b - a) == 64 for a, b in ref["image_bound"])
    assert len(ref["image_bound"]) == sum(im.n_slices for im in ours.images)
    if audios:
        assert torch.equal(ours.audio.input_features, ref["audio_features"])
        assert sum(int(b - a) for a, b in ref["audio_bounds"]) == int(ours.audio.array_token_counts.sum())
    else:
        assert ours.audio is None and len(ref["audio_bounds"]) == 0


def test_template_choice():
    template = _template()
    image = noise_image(64, 48)
    plain = pp.render_chat([{"role": "user", "content": [image, "What is in the image?"]}], chat_template=template).text
    assert plain == (
        f"<|im_start|>system\n{pp.QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\n(<image>./</image>)\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n"
    )
    own_system = pp.render_chat([{"role": "system", "content": "S"}, {"role": "user", "content": "u"}], chat_template=template).text
    assert own_system == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"
    spoken = pp.render_chat([{"role": "user", "content": [np.zeros(16000, np.float32)]}]).text
    assert spoken == "<|im_start|>user\n(<audio>./</audio>)<|im_end|>\n" + pp.TTS_GENERATION_PROMPT
    assert "system" not in spoken
    forced = pp.render_chat([{"role": "user", "content": "hi"}], use_tts_template=True).text
    assert forced.endswith("<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>") and QWEN_NOT_IN(forced)
    joined = pp.render_chat([{"role": "user", "content": ["a", image, "b"]}], chat_template=template, omni_input=True).text
    assert "user\na(<image>./</image>)b<|im_end|>" in joined
    with pytest.raises(InputError, match="needs chat_template="):
        pp.render_chat([{"role": "user", "content": "hi"}])
    with pytest.raises(InputError, match="role 'tool'"):
        pp.render_chat([{"role": "tool", "content": "x"}], chat_template=template)
    with pytest.raises(InputError, match="holds a dict"):
        pp.render_chat([{"role": "user", "content": [{"x": 1}]}], chat_template=template)
    with pytest.raises(InputError, match=r"array of shape \(4, 4, 3\)"):
        pp.render_chat([{"role": "user", "content": [np.zeros((4, 4, 3))]}])


def QWEN_NOT_IN(text: str) -> bool:
    return pp.QWEN_DEFAULT_SYSTEM not in text


def test_expand_placeholders_checks_counts():
    with pytest.raises(InputError, match="1 image and 0 audio tags but 0 image"):
        pp.expand_placeholders("x(<image>./</image>)", [], [])


# ---------------------------------------------------------------- tokenizer


def test_offline_tokenizer_ids(tokenizer):
    vocab = json.loads((QWEN_BPE_HUB / "vocab.json").read_text())
    assert vocab["<unk>"] == UNK  # an ordinary BPE token of the Qwen2 vocabulary (151,643 base tokens)
    assert len(vocab) == 151643 and len(tokenizer) == 151700
    for token, expected in (("<unk>", UNK), ("<image>", IMAGE), ("</image>", IMAGE_END), ("<slice>", SLICE),
                            ("<image_id>", IMAGE_ID), ("<|audio_start|>", AUDIO_START), ("<|audio_end|>", AUDIO_END),
                            ("<unit>", UNIT), ("<|spk_bos|>", SPK_BOS), ("<|tts_bos|>", TTS_BOS),
                            ("<|im_start|>", IM_START), ("<|im_end|>", IM_END), ("<|endoftext|>", ENDOFTEXT)):
        assert tokenizer.convert_tokens_to_ids(token) == expected, token
        assert tokenizer.encode(token) == [expected], token
    assert tokenizer.unk_token_id == UNK and tokenizer.pad_token_id == ENDOFTEXT and tokenizer.eos_token_id == IM_END
    assert tokenizer.encode("hello world") == tokenizer.encode("hello world", add_special_tokens=False)  # no BOS
    assert tokenizer.encode("a <unk>b") == tokenizer.encode("a ") + [UNK] + tokenizer.encode("b")


def test_placeholders_tokenize_to_the_expected_ids(tokenizer):
    image = pp.image_placeholder(None)
    assert tokenizer.encode(image) == [IMAGE_ID, tokenizer.convert_tokens_to_ids("0"), IMAGE_ID_END, IMAGE] + [UNK] * 64 + [IMAGE_END]
    sliced = pp.image_placeholder((2, 2), 12, use_image_id=True)
    digits = tokenizer.convert_tokens_to_ids(["1", "2"])
    row = ([SLICE] + [UNK] * 64 + [SLICE_END]) * 2
    assert tokenizer.encode(sliced) == [IMAGE_ID, *digits, IMAGE_ID_END, IMAGE] + [UNK] * 64 + [IMAGE_END] + row + [NEWLINE] + row
    assert tokenizer.encode(pp.audio_placeholder(16000 * 2 + 3200)) == (
        [AUDIO_START] + [UNK] * 25 + [AUDIO_END]
    ) * 2 + [AUDIO_START] + [UNK] * 5 + [AUDIO_END]


def test_unk_needs_the_added_token_entry():
    """Without MiniCPM-o's added-token entry for <unk>, the Qwen2 BPE's pre-tokenizer cuts the text
    "<unk>" into "<unk" (128243) and ">" (29), so a placeholder would never reach id 128244."""
    from test_inputs_support import omni_tokenizer

    plain = omni_tokenizer()  # the same Qwen2 BPE files, Qwen2.5-Omni's added tokens (no <unk>)
    assert plain.encode("<unk>", add_special_tokens=False) == [128243, 29]
    assert UNK not in plain.encode(pp.audio_placeholder(16000).replace("<|audio_start|>", "").replace("<|audio_end|>", ""))
