"""Prompt layouts for the parity tests: every input kind, odd lengths, padded batches."""

from __future__ import annotations

import torch

from reference_models import (
    AUDIO, AUDIO_BOS, AUDIO_EOS, IMAGE, VIDEO, VISION_BOS, VISION_EOS, Media,
    audio_in_video_tokens, audio_tokens, make_features, pad_rows, vision_tokens,
)

PATCH_DIM = 3 * 2 * 14 * 14


def text(n: int, generator) -> list[int]:
    return torch.randint(0, 199, (n,), generator=generator).tolist()


def pixels(grids: list[tuple[int, int, int]], generator) -> torch.Tensor:
    return torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=generator)


def build_case(name: str, seed: int = 0, padding_side: str = "left"):
    """(input kwargs for both models, attention_mask) for a named layout."""
    g = torch.Generator().manual_seed(seed)
    media = Media()
    use_audio_in_video = False
    if name == "text":
        rows = [text(11, g)]
    elif name == "image":
        grid = (1, 6, 10)
        rows = [text(3, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid) + [VISION_EOS] + text(5, g)]
        media.pixel_values, media.image_grid_thw = pixels([grid], g), torch.tensor([grid])
    elif name == "video":
        grid = (3, 4, 6)
        rows = [text(4, g) + [VISION_BOS] + [VIDEO] * vision_tokens(grid) + [VISION_EOS] + text(3, g)]
        media.pixel_values_videos, media.video_grid_thw = pixels([grid], g), torch.tensor([grid])
        media.video_second_per_grid = torch.tensor([1.0])
    elif name == "audio":
        frames = 337  # 3.37 s: not a multiple of the 2-s chunk
        rows = [text(2, g) + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames) + [AUDIO_EOS] + text(4, g)]
        media.input_features, media.feature_attention_mask = make_features([frames], 400, g)
    elif name == "audio_in_video":
        grid, second_per_grid, frames = (5, 4, 4), 1.0, 461  # 5 frame groups over 3 chunks, 4.61 s audio
        body = audio_in_video_tokens(grid, second_per_grid, audio_tokens(frames))
        rows = [text(3, g) + [VISION_BOS, AUDIO_BOS] + body + [AUDIO_EOS, VISION_EOS] + text(4, g)]
        media.pixel_values_videos, media.video_grid_thw = pixels([grid], g), torch.tensor([grid])
        media.video_second_per_grid = torch.tensor([second_per_grid])
        media.input_features, media.feature_attention_mask = make_features([frames], 500, g)
        use_audio_in_video = True
    elif name == "image_audio_text":
        grid, frames = (1, 4, 8), 211
        rows = [text(2, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid) + [VISION_EOS] + text(3, g)
                + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames) + [AUDIO_EOS] + text(5, g)]
        media.pixel_values, media.image_grid_thw = pixels([grid], g), torch.tensor([grid])
        media.input_features, media.feature_attention_mask = make_features([frames], 300, g)
    elif name == "padded_batch":
        # row 0: image + audio (longer); row 1: audio + text (shorter), padded on padding_side
        grid, frames0, frames1 = (1, 4, 4), 150, 263
        row0 = text(2, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid) + [VISION_EOS] + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames0) + [AUDIO_EOS] + text(3, g)
        row1 = text(1, g) + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames1) + [AUDIO_EOS] + text(2, g)
        rows = [row0, row1]
        media.pixel_values, media.image_grid_thw = pixels([grid], g), torch.tensor([grid])
        media.input_features, media.feature_attention_mask = make_features([frames0, frames1], 300, g)
    elif name == "vl_padded_batch":
        grid_i, grid_v = (1, 4, 6), (2, 4, 4)
        row0 = text(2, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid_i) + [VISION_EOS] + text(3, g)
        row1 = text(1, g) + [VISION_BOS] + [VIDEO] * vision_tokens(grid_v) + [VISION_EOS] + text(7, g)
        rows = [row0, row1]
        media.pixel_values, media.image_grid_thw = pixels([grid_i], g), torch.tensor([grid_i])
        media.pixel_values_videos, media.video_grid_thw = pixels([grid_v], g), torch.tensor([grid_v])
        media.video_second_per_grid = torch.tensor([1.0])
    else:
        raise KeyError(name)
    input_ids, attention_mask = pad_rows(rows, padding_side)
    kwargs = {k: v for k, v in vars(media).items() if v is not None}
    kwargs.update(input_ids=input_ids, attention_mask=attention_mask)
    if use_audio_in_video:
        kwargs["use_audio_in_video"] = True
    return kwargs


OMNI_CASES = ["text", "image", "video", "audio", "audio_in_video", "image_audio_text", "padded_batch"]
