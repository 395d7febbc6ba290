"""Tiny random Qwen3-Omni thinkers from transformers (the reference), and prompts built for them
by the released processor's rules, written here independently of our own code."""

from __future__ import annotations

import copy

import torch
from cases import text
from reference_models import Media, make_features, pad_rows, randomize_, vision_tokens

AUDIO, IMAGE, VIDEO, AUDIO_BOS, AUDIO_EOS, VISION_BOS, VISION_EOS = 200, 201, 202, 203, 204, 205, 206
TOKEN_IDS = dict(
    audio_token_id=AUDIO, image_token_id=IMAGE, video_token_id=VIDEO, audio_start_token_id=AUDIO_BOS,
    audio_end_token_id=AUDIO_EOS, vision_start_token_id=VISION_BOS, vision_end_token_id=VISION_EOS,
    position_id_per_seconds=13,
)
PATCH_DIM = 3 * 2 * 16 * 16

# Two thinker shapes: GQA 2 vs 3, top-2 of 8 renormalised vs top-3 of 6 raw with one dense layer,
# DeepStack taps (0, 2) into layers 0-1 vs (1,) into layer 0, attention windows of 2 vs 4 chunks.
VARIANTS = {
    "a": dict(
        audio_config=dict(num_mel_bins=128, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                          output_dim=64, downsample_hidden_size=8, n_window=50, n_window_infer=200),
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0, 2]),
        text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_experts=8,
                         num_experts_per_tok=2, norm_topk_prob=True, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3], "interleaved": True}),
    ),
    "b": dict(
        audio_config=dict(num_mel_bins=128, d_model=24, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=40,
                          output_dim=96, downsample_hidden_size=6, n_window=50, n_window_infer=400),
        vision_config=dict(depth=2, hidden_size=48, intermediate_size=40, num_heads=3, out_hidden_size=96, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=36,
                           deepstack_visual_indexes=[1]),
        text_config=dict(vocab_size=256, hidden_size=96, intermediate_size=80, moe_intermediate_size=24, num_experts=6,
                         num_experts_per_tok=3, norm_topk_prob=False, mlp_only_layers=[1], num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [3, 3, 2], "interleaved": True}),
    ),
}


def thinker_config(variant: str = "a"):
    from transformers import Qwen3OmniMoeThinkerConfig

    return Qwen3OmniMoeThinkerConfig(**copy.deepcopy(VARIANTS[variant]), **TOKEN_IDS)


def build_thinker(variant: str = "a", seed: int = 0, dtype: torch.dtype = torch.float32):
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen3OmniMoeThinkerForConditionalGeneration(thinker_config(variant)).eval()
    randomize_(model, seed)
    with torch.no_grad():  # the router and the per-head q/k norms: random too, but around their usual scale
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + len(name))))
    return model.to(dtype)


def audio_tokens(frames: int) -> int:
    """AuT tokens of a clip of ``frames`` mel frames: 13 per full 100-frame chunk, and the tail's
    after three stride-2 convolutions."""
    tail = frames % 100
    out = frames // 100 * 13
    if tail:
        for _ in range(3):
            tail = (tail - 1) // 2 + 1
        out += tail
    return out



def audio_in_video_body(grid, second_per_grid: float, n_audio: int, rate: int = 13) -> list[int]:
    """Video and audio tokens merged one at a time: a video token first when its frame group's
    ``g * second_per_grid * rate`` is not after the audio token's index."""
    t, h, w = grid
    video_t = [g * second_per_grid * rate for g in range(t) for _ in range(h * w // 4)]
    body, v, a = [], 0, 0
    while v < len(video_t) and a < n_audio:
        if video_t[v] <= a:
            body.append(VIDEO)
            v += 1
        else:
            body.append(AUDIO)
            a += 1
    return body + [VIDEO] * (len(video_t) - v) + [AUDIO] * (n_audio - a)



def pixels(grids, generator) -> torch.Tensor:
    return torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=generator)


CASES = ["text", "image", "video", "audio", "audio_in_video", "image_video_audio", "padded_batch"]


def build_case(name: str, seed: int = 0, padding_side: str = "left") -> dict:
    """Input keyword arguments (for both models) of a named prompt layout."""
    g = torch.Generator().manual_seed(seed)
    media = Media()
    use_audio_in_video = False
    if name == "text":
        rows = [text(11, g)]
    elif name == "image":
        grid = (1, 6, 10)
        rows = [text(3, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid) + [VISION_EOS] + text(5, g)]
        media.pixel_values, media.image_grid_thw = pixels([grid], g), torch.tensor([grid])
    elif name == "video":  # 0.5 s per frame group: temporal ids 0, 6.5, 13 (fractional)
        grid = (3, 4, 6)
        rows = [text(4, g) + [VISION_BOS] + [VIDEO] * vision_tokens(grid) + [VISION_EOS] + text(3, g)]
        media.pixel_values_videos, media.video_grid_thw = pixels([grid], g), torch.tensor([grid])
        media.video_second_per_grid = torch.tensor([0.5])
    elif name == "audio":
        frames = 337  # 3.37 s: a partial last chunk
        rows = [text(2, g) + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames) + [AUDIO_EOS] + text(4, g)]
        media.input_features, media.feature_attention_mask = make_features([frames], 400, g)
    elif name == "audio_in_video":
        grid, second_per_grid, frames = (4, 4, 4), 1.0, 461
        body = audio_in_video_body(grid, second_per_grid, audio_tokens(frames))
        rows = [text(3, g) + [VISION_BOS, AUDIO_BOS] + body + [AUDIO_EOS, VISION_EOS] + text(4, g)]
        media.pixel_values_videos, media.video_grid_thw = pixels([grid], g), torch.tensor([grid])
        media.video_second_per_grid = torch.tensor([second_per_grid])
        media.input_features, media.feature_attention_mask = make_features([frames], 500, g)
        use_audio_in_video = True
    elif name == "image_video_audio":  # both visual kinds: DeepStack rows at image and video positions
        grid_i, grid_v, frames = (1, 4, 8), (2, 4, 4), 211
        rows = [text(2, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid_i) + [VISION_EOS] + text(3, g)
                + [VISION_BOS] + [VIDEO] * vision_tokens(grid_v) + [VISION_EOS]
                + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames) + [AUDIO_EOS] + text(5, g)]
        media.pixel_values, media.image_grid_thw = pixels([grid_i], g), torch.tensor([grid_i])
        media.pixel_values_videos, media.video_grid_thw = pixels([grid_v], g), torch.tensor([grid_v])
        media.video_second_per_grid = torch.tensor([1.0])
        media.input_features, media.feature_attention_mask = make_features([frames], 300, g)
    elif name == "padded_batch":  # row 0: image + audio (longer); row 1: video + text (shorter)
        grid_i, grid_v, frames = (1, 4, 4), (2, 4, 6), 150
        row0 = (text(2, g) + [VISION_BOS] + [IMAGE] * vision_tokens(grid_i) + [VISION_EOS]
                + [AUDIO_BOS] + [AUDIO] * audio_tokens(frames) + [AUDIO_EOS] + text(3, g))
        row1 = text(1, g) + [VISION_BOS] + [VIDEO] * vision_tokens(grid_v) + [VISION_EOS] + text(2, g)
        rows = [row0, row1]
        media.pixel_values, media.image_grid_thw = pixels([grid_i], g), torch.tensor([grid_i])
        media.pixel_values_videos, media.video_grid_thw = pixels([grid_v], g), torch.tensor([grid_v])
        media.video_second_per_grid = torch.tensor([2.0])
        media.input_features, media.feature_attention_mask = make_features([frames], 300, g)
    else:
        raise KeyError(name)
    input_ids, attention_mask = pad_rows(rows, padding_side)
    kwargs = {k: v for k, v in vars(media).items() if v is not None}
    kwargs.update(input_ids=input_ids, attention_mask=attention_mask)
    if use_audio_in_video:
        kwargs["use_audio_in_video"] = True
    return kwargs
