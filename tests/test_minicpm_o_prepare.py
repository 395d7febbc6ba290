"""``model.prepare`` on MiniCPM-o 2.6 against the released processor's reference
(``tests/minicpm_reference_processor.py``) with the real tokenizer (the Qwen2 BPE and MiniCPM-o's
released tokenizer config): the same ids, slices, patch grids and audio features for an image with
slices, audio, both, a video with its sound (omni units) and a vision-only video; the layout marks
what each placeholder is; a padded batch; MiniCPM-V (no audio) refuses audio."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.minicpm_o.config import config_from_hf
from hooked_avllm.architectures.minicpm_o.preprocess import (
    load_omni_video,
    omni_content,
    omni_system_message,
)
from hooked_avllm.inputs import InputError
from minicpm_reference import slice_image_from_rows
from minicpm_reference_processor import build_minicpm_tokenizer_folder, reference_chat_prompt, reference_process
from minicpm_reference_vision import reshape_by_patch

HUB = "openbmb__MiniCPM-o-2_6"
RNG = np.random.default_rng(0)


def picture(width: int, height: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 255, (height, width, 3), dtype=np.uint8))


def sound(seconds: float) -> np.ndarray:
    return (0.2 * RNG.standard_normal(int(seconds * 16000))).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory, hub_fixtures):
    """The real MiniCPM-o configuration on the meta device (prepare needs no weights) with the real tokenizer."""
    folder = build_minicpm_tokenizer_folder(tmp_path_factory.mktemp("tokenizer"))
    config = json.loads((hub_fixtures / HUB / "config.json").read_text())
    with torch.device("meta"):
        built = HookedAVLLM(config_from_hf(config))
    built.tokenizer = built.architecture.load_tokenizer(folder)
    return built


def prepare(model, **kwargs):
    return model.architecture.prepare(model, **kwargs)  # model.prepare would move the tensors to the meta device


def rows_to_strips(inputs) -> list[torch.Tensor]:
    out, at = [], 0
    for h, w in inputs.tgt_sizes.tolist():
        out.append(slice_image_from_rows(inputs.pixel_values[at : at + h * w], h, w))
        at += h * w
    return out


def assert_like_the_processor(inputs, reference, row: int = 0):
    real = inputs.attention_mask[row].bool()
    assert inputs.input_ids[row][real].tolist() == reference["input_ids"].tolist()
    strips = rows_to_strips(inputs)
    if len(reference["pixel_values"]):
        expected = [torch.as_tensor(np.asarray(p)) for p in reference["pixel_values"]]  # each slice [3, 14, L * 14]
        assert len(strips) == len(expected)
        for ours, theirs in zip(strips, expected):
            assert torch.equal(reshape_by_patch(ours, 14), theirs.float())
        assert inputs.tgt_sizes.tolist() == torch.as_tensor(reference["tgt_sizes"]).tolist()
    if len(reference["audio_feature_lens"]):
        assert inputs.feature_lens.tolist() == reference["audio_feature_lens"].tolist()
        frames = int(reference["audio_feature_lens"].max())
        assert torch.equal(inputs.input_features[:, :, :frames], reference["audio_features"][:, :, :frames])
    layout = inputs.layout
    image_rows = sum(int(e - s) for s, e in reference["image_bound"].tolist())
    audio_rows = sum(int(e - s) for s, e in reference["audio_bounds"].tolist())
    assert int((layout.image | layout.video)[row].sum()) == image_rows and int(layout.audio[row].sum()) == audio_rows


def test_an_image_with_slices(model):
    image = picture(1000, 600)
    inputs = prepare(model, prompt="What is in the image?", images=image)
    prompt, images, audios, parts = reference_chat_prompt([{"role": "user", "content": [image, "What is in the image?"]}],
                                                          model.tokenizer)
    reference = reference_process(prompt, images, audios, parts, model.tokenizer)
    assert_like_the_processor(inputs, reference)
    assert inputs.layout.image.any() and not inputs.layout.audio.any()
    assert inputs.layout.frame_group[inputs.layout.image].max() == len(inputs.tgt_sizes) - 1  # slices: 0 the source


def test_audio_and_an_image(model):
    image, clip = picture(300, 200), sound(2.3)
    inputs = prepare(model, prompt="Describe both.", images=image, audio=(clip, 16000))
    prompt, images, audios, parts = reference_chat_prompt([{"role": "user", "content": [image, clip, "Describe both."]}],
                                                          model.tokenizer)
    reference = reference_process(prompt, images, audios, parts, model.tokenizer)
    assert_like_the_processor(inputs, reference)
    assert torch.allclose(inputs.layout.audio_time[inputs.layout.audio], torch.arange(57) / 25)
    assert "<|spk_bos|>" in model.tokenizer.decode(inputs.input_ids[0])  # any audio: the TTS template


def video_file(path, seconds: float = 2.5, fps: int = 8, with_sound: bool = True):
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    if with_sound:
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
    for i in range(int(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 10) % 255, dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    if with_sound:
        samples = (0.3 * np.sin(np.arange(int(seconds * 16000)) / 7)).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="flt", layout="mono")
            chunk.sample_rate = 16000
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    container.close()
    return path


def test_a_video_with_its_sound_is_omni_units(model, tmp_path):
    path = video_file(tmp_path / "clip.mp4")
    inputs = prepare(model, prompt="Describe what you see and hear.", video=str(path))
    clip = load_omni_video(path)
    frames = [Image.fromarray(f) for f in clip.frames]
    messages = [omni_system_message(), {"role": "user", "content": omni_content(frames, [a.numpy() for a in clip.audios])
                                        + ["Describe what you see and hear."]}]
    prompt, images, audios, parts = reference_chat_prompt(messages, model.tokenizer, omni_input=True, use_tts_template=True)
    reference = reference_process(prompt, images, audios, parts, model.tokenizer, max_slice_nums=1, use_image_id=False)
    assert_like_the_processor(inputs, reference)
    layout = inputs.layout
    assert not layout.image.any() and int(layout.video.sum()) == 64 * len(clip.units)
    (video,), (track,) = layout.spans_of("video"), layout.spans_of("audio")
    assert track.in_video == video.index
    assert layout.frame_group[layout.video].unique().tolist() == list(range(len(clip.units)))
    assert inputs.video_slices.all()


def test_a_video_without_sound_is_frames(model, tmp_path):
    path = video_file(tmp_path / "silent.mp4", with_sound=False)
    with pytest.raises(InputError, match="use_audio_in_video=False"):  # the omni recipe needs a sound track: no silent fallback
        prepare(model, prompt="What happens?", video=str(path))
    inputs = prepare(model, prompt="What happens?", video=str(path), use_audio_in_video=False)
    layout = inputs.layout
    assert layout.video.any() and not layout.audio.any() and not layout.image.any()
    assert layout.video_time[layout.video].unique().tolist() == [0.0, 1.0, 2.0]  # about one frame a second


def test_a_left_padded_batch_lays_out_each_row_like_alone(model):
    image, clip = picture(500, 500), sound(1.0)
    rows = [dict(prompt="Caption it.", images=image), dict(prompt="What do you hear?", audio=(clip, 16000))]
    together = prepare(model, prompt=[r["prompt"] for r in rows], images=[image, None], audio=[None, (clip, 16000)])
    for r, row in enumerate(rows):
        alone = prepare(model, **row)
        real = together.attention_mask[r].bool()
        assert together.input_ids[r][real].tolist() == alone.input_ids[0].tolist()
        for name in ("image", "audio", "text"):
            assert torch.equal(getattr(together.layout, name)[r][real], getattr(alone.layout, name)[0])
    assert together.attention_mask[:, -1].all()


def test_minicpm_v_refuses_audio_and_errors_name_the_argument(model, hub_fixtures):
    config = json.loads((hub_fixtures / HUB / "config.json").read_text())
    config.update(model_type="minicpmv")
    config.pop("audio_config")
    with torch.device("meta"):
        vision_only = HookedAVLLM(config_from_hf(config))
    vision_only.tokenizer = model.tokenizer
    assert vision_only.audio is None and vision_only.cfg.tokens.audio is None
    with pytest.raises(InputError, match="no audio tower"):
        prepare(vision_only, prompt="What do you hear?", audio=(sound(1.0), 16000))
    with pytest.raises(InputError, match="images= must be a list of 2"):
        prepare(model, prompt=["a", "b"], images=picture(100, 100))
    with pytest.raises(ValueError, match="version"):
        config_from_hf({**config, "version": 2.5})
