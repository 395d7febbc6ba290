"""Bad input gives a ValueError that says what to do, never a crash deep inside."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from test_inputs_support import OMNI, VL, omni_tokenizer, write_mp4

from hooked_avllm.architectures.qwen import ModelInputSpec, image_patches, load_image, load_video, prepare_inputs

from hooked_avllm.inputs import Audio, audio_features, load_audio


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not media")
    soundfile.write(folder / "tone.wav", np.zeros(1600), 16000)
    write_mp4(folder / "one_frame.mp4", seconds=0.1, fps=10, audio_rate=None)
    write_mp4(folder / "silent.mp4", seconds=2.0, fps=10, audio_rate=None)
    return folder


def raises(match: str):
    return pytest.raises(ValueError, match=match)


def test_empty_and_nan_audio():
    with raises("empty .0 samples.*at least 0.02 s"):
        load_audio(np.zeros(0, np.float32))
    with raises("NaN or infinite.*nan_to_num"):
        load_audio(np.array([0.0, np.nan, 0.1], np.float32))
    with raises("empty"):
        prepare_inputs(omni_tokenizer(), None, OMNI, prompt="Hi", audio=np.zeros(0, np.float32))
    with raises("shorter than 0.02 s"):
        prepare_inputs(omni_tokenizer(), None, OMNI, prompt="Hi", audio=np.zeros(100, np.float32))


def test_wrong_sampling_rate_where_one_is_asserted():
    with raises("need 16000 Hz.*load_audio.x, source_rate=44100"):
        audio_features([torch.zeros(44100)], sampling_rate=44100)
    with raises("at 44100 Hz.*load_audio"):
        audio_features([Audio(torch.zeros(44100), 44100)])
    with raises("positive whole number of Hz"):
        load_audio(np.zeros(100, np.float32), source_rate=44100.5)


def test_too_long_media():
    with raises("longer than the 300 s.*start=, end="):
        audio_features([torch.zeros(16000 * 301)])
    with raises("more than the model's 40.*lower video_fps"):
        prepare_inputs(
            omni_tokenizer(),
            None,
            ModelInputSpec(max_positions=40),
            prompt="Hi",
            images=np.zeros((56, 56, 3), np.uint8),
        )
    with raises("aspect ratio.*crop or pad"):
        load_image(np.zeros((2, 500, 3), np.uint8))


def test_one_frame_video(files):
    with raises("1 frame.*as an image .images=."):
        load_video(files / "one_frame.mp4")
    with raises("1 frame.*as an image"):
        load_video(np.zeros((1, 56, 56, 3), np.uint8))


@pytest.mark.parametrize(
    "load, name, match",
    [
        (load_video, "corrupt.mp4", "corrupt"),
        (load_audio, "corrupt.wav", "corrupt"),
        (load_image, "corrupt.png", "corrupt"),
        (load_video, "missing.mp4", "not found"),
        (load_audio, "missing.wav", "not found"),
        (load_image, "missing.png", "not found"),
        (load_audio, "notes.txt", "Unsupported audio format '.txt'"),
        (load_image, "notes.txt", "not an image"),
        (load_audio, "corrupt.png", "Unsupported audio format '.png'"),
        (load_video, "tone.wav", "no video track.*audio="),
        (load_video, "notes.txt", "not a media file"),
    ],
)
def test_bad_files(files, load, name, match):
    with raises(match):
        load(files / name)


def test_missing_file_is_also_a_file_not_found_error(files):
    with pytest.raises(FileNotFoundError):
        load_audio(files / "missing.wav")


def test_bad_arrays():
    with raises("float pixels must be in .0, 1."):
        load_image(np.full((28, 28, 3), 255.0, np.float32))
    with raises("expected .H, W, 3."):
        image_patches([np.zeros((28, 28, 5), np.uint8)])
    with raises("4-D"):
        load_video(np.zeros((56, 56, 3), np.uint8))
    with raises("at most 8 channels"):
        load_audio(np.zeros((16, 16000), np.float32))
    with raises("Unsupported image input of type dict"):
        load_image({"image": "x"})


def test_placeholders_must_match_media(files):
    tok = omni_tokenizer()
    image = np.zeros((56, 56, 3), np.uint8)
    with raises("2 image placeholder.s. but 1 image input.s. were given"):
        prepare_inputs(tok, None, OMNI, prompt="<|IMAGE|> vs <|IMAGE|>", images=image)
    with raises("1 audio placeholder.s. but 0 audio"):
        prepare_inputs(tok, None, OMNI, prompt="Listen: <|AUDIO|>")
    with raises("raw text.*1 video placeholder"):
        prepare_inputs(tok, None, OMNI, prompt="<|vision_bos|><|VIDEO|><|vision_eos|>", chat_template=False)
    with raises("3 prompts, images= must be a list of 3"):
        prepare_inputs(tok, None, OMNI, prompt=["a", "b", "c"], images=[image, image])
    with raises("no place for the audio"):
        prepare_inputs(tok, None, OMNI, prompt=[{"role": "user", "content": "hi"}], audio=np.zeros(16000, np.float32))


def test_video_audio_requirements(files):
    tok = omni_tokenizer()
    frames = np.zeros((4, 56, 56, 3), np.uint8)
    with raises("no audio track but use_audio_in_video=True.*use_audio_in_video=False"):
        prepare_inputs(tok, None, OMNI, prompt="Hi", video=frames)
    with raises("no audio track but use_audio_in_video=True"):
        prepare_inputs(tok, None, OMNI, prompt="Hi", video=files / "silent.mp4")
    with raises("takes no audio input"):
        prepare_inputs(tok, None, VL, prompt="Hi", audio=np.zeros(16000, np.float32))
