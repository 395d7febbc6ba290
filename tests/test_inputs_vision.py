"""Vision inputs: smart resize, frame sampling, patch order, against transformers' PIL image processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from transformers import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from hooked_avllm.architectures.qwen import PreprocessorConfig, image_patches, load_image, load_video, patchify, video_patches
from hooked_avllm.architectures.qwen.sizing import frame_indices, smart_nframes, smart_resize, video_max_pixels

CONFIG = PreprocessorConfig()


@pytest.fixture(scope="module")
def hf_processor():
    return Qwen2VLImageProcessorPil(min_pixels=CONFIG.min_pixels, max_pixels=CONFIG.max_pixels)


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


SIZES = [(56, 84), (480, 640), (333, 517), (10, 10), (1, 150), (28, 1000), (20, 3000), (3, 7), (900, 1600)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_image_patches_match_hf_pil_processor(size, hf_processor):
    image = _random_image(*size)
    pixel_values, grid = image_patches([image], CONFIG)
    resized = load_image(image, CONFIG).pixels.permute(1, 2, 0).numpy().astype(np.uint8)
    ref = hf_processor(images=[PILImage.fromarray(resized)], return_tensors="pt")  # the same resize: a no-op there
    assert grid.tolist() == ref["image_grid_thw"].tolist()
    assert pixel_values.shape == ref["pixel_values"].shape
    assert (pixel_values - ref["pixel_values"]).abs().max() < 1e-5
    if smart_resize(*size) == hf_smart_resize(*size, 28, CONFIG.min_pixels, CONFIG.max_pixels):
        raw = hf_processor(images=[PILImage.fromarray(image)], return_tensors="pt")  # its own Pillow resize
        assert (pixel_values - raw["pixel_values"]).abs().max() < 1e-5


def test_smart_resize_follows_qwen_omni_utils():
    assert smart_resize(480, 640) == (476, 644)
    assert smart_resize(10, 10) == (56, 56)  # below min_pixels: scaled up
    assert smart_resize(1, 150) == (28, 140)  # each side at least 28 before the budget check
    assert smart_resize(5000, 8000) == (2828, 4508)  # above max_pixels: scaled down, floored
    h, w = smart_resize(720, 1280, min_pixels=CONFIG.video_min_pixels, max_pixels=CONFIG.video_max_pixels)
    assert (h, w) == (560, 1008) and h * w <= CONFIG.video_max_pixels


def test_frame_counts_and_budgets_follow_qwen_omni_utils():
    assert smart_nframes(300, 30.0) == 20  # 10 s at 2 fps
    assert smart_nframes(99, 30.0) == 6  # 6.6 floored to an even count
    assert smart_nframes(10, 30.0) == 4  # short: at least min_frames
    assert smart_nframes(3, 30.0) == 2  # never more than the video has
    assert smart_nframes(36000, 30.0) == 768  # long: at most max_frames
    assert frame_indices(30, 6) == [0, 6, 12, 17, 23, 29]
    assert video_max_pixels(20, min_pixels=100352, max_pixels=602112, total_pixels=90316800) == 602112
    assert video_max_pixels(768, min_pixels=100352, max_pixels=602112, total_pixels=90316800) == 235200


def test_patch_rows_are_merge_blocks_channel_major():
    t_frames, height, width, p, m = 4, 56, 84, 14, 2
    frames = torch.randn(t_frames, 3, height, width)
    rows, grid = patchify(frames)
    assert grid == (2, 4, 6) and rows.shape == (2 * 4 * 6, 3 * 2 * 14 * 14)
    r = 0
    for g in range(2):
        for block_y in range(4 // m):
            for block_x in range(6 // m):
                for in_y in range(m):
                    for in_x in range(m):
                        y, x = (block_y * m + in_y) * p, (block_x * m + in_x) * p
                        patch = frames[2 * g : 2 * g + 2, :, y : y + p, x : x + p]  # [frame, channel, p, p]
                        assert torch.equal(rows[r], patch.permute(1, 0, 2, 3).reshape(-1))
                        r += 1


def test_image_inputs_of_every_type_agree(tmp_path):
    image = _random_image(45, 70, seed=3)
    PILImage.fromarray(image).save(tmp_path / "im.png")
    variants = [
        image,
        np.moveaxis(image, -1, 0),
        PILImage.fromarray(image),
        torch.from_numpy(image).permute(2, 0, 1),
        image.astype(np.float32) / 255.0,
        tmp_path / "im.png",
        str(tmp_path / "im.png"),
    ]
    first, grid = image_patches([variants[0]])
    for variant in variants[1:]:
        pixel_values, other = image_patches([variant])
        assert torch.equal(other, grid) and torch.equal(pixel_values, first)


def test_image_is_two_identical_frames():
    pixel_values, grid = image_patches([_random_image(56, 56)])
    per_frame = pixel_values.reshape(-1, 3, 2, 14 * 14)
    assert torch.equal(per_frame[:, :, 0], per_frame[:, :, 1]) and grid.tolist() == [[1, 4, 4]]


def test_video_arrays_sampled_like_files():
    frames = np.zeros((30, 64, 96, 3), np.uint8)
    frames[..., 0] = (8 * np.arange(30))[:, None, None]  # frame i has red level 8*i
    clip = load_video(frames, CONFIG, source_fps=10.0)
    assert clip.frames.shape[0] == 6 and clip.sample_fps == pytest.approx(2.0)
    assert clip.frames[:, 0, 10, 10].tolist() == [8.0 * i for i in (0, 6, 12, 17, 23, 29)]
    h, w = clip.frames.shape[-2:]
    assert h % 28 == 0 and w % 28 == 0 and h * w >= CONFIG.video_min_pixels
    pixel_values, grid, seconds = video_patches([clip], CONFIG)
    assert grid.tolist() == [[3, h // 14, w // 14]] and seconds.tolist() == [1.0]
    assert pixel_values.shape == (3 * (h // 14) * (w // 14), 1176)


def test_video_frames_given_as_sampled_lists():
    frames = [PILImage.fromarray(_random_image(60, 80, seed=i)) for i in range(5)]
    clip = load_video(frames, CONFIG, fps=4.0)
    assert clip.frames.shape[0] == 6  # odd count padded by repeating the last frame
    assert torch.equal(clip.frames[4], clip.frames[5])
    assert video_patches([clip], CONFIG)[2].tolist() == [0.5]  # temporal_patch_size / fps


def test_a_video_sized_for_other_settings_is_flagged():
    """A Video loaded with the default (Qwen) budgets and prepared for the toy checkpoint, whose
    preprocessing keeps 112x112 frames, warns; loaded with the checkpoint's settings it does not."""
    import warnings

    from hooked_avllm.architectures.qwen import PreprocessorConfig
    from hooked_avllm.architectures.qwen.vision import check_video_size
    from hooked_avllm.toy import OMNI_PATH

    frames = np.zeros((4, 112, 112, 3), np.uint8)
    toy = PreprocessorConfig.from_pretrained(OMNI_PATH)
    with pytest.warns(UserWarning, match="loaded with other settings"):
        check_video_size(load_video(frames), toy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_video_size(load_video(frames, toy), toy)
