"""Tiny random Hugging Face reference models (the thing we test against) and inputs built for
them by the layout rules of ARCHITECTURES.md, written here independently of our own code."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

AUDIO, IMAGE, VIDEO, AUDIO_BOS, AUDIO_EOS, VISION_BOS, VISION_EOS = 200, 201, 202, 203, 204, 205, 206
TOKEN_IDS = dict(
    audio_token_index=AUDIO, image_token_index=IMAGE, video_token_index=VIDEO, audio_start_token_id=AUDIO_BOS,
    audio_end_token_id=AUDIO_EOS, vision_start_token_id=VISION_BOS, vision_end_token_id=VISION_EOS,
)

# Two thinker shapes: GQA ratio 2 vs 3, window of 4 vs 2 merge blocks, different full-attention layers.
OMNI_VARIANTS = {
    "a": dict(
        audio_config=dict(encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32, output_dim=64),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, fullatt_block_indexes=[1, 3]),
        text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
    ),
    "b": dict(
        audio_config=dict(encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=48, d_model=16, output_dim=96, n_window=50),
        vision_config=dict(depth=3, hidden_size=48, intermediate_size=40, num_heads=3, out_hidden_size=96, window_size=56, fullatt_block_indexes=[0]),
        text_config=dict(vocab_size=256, hidden_size=96, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
                         num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
    ),
}


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (biases and norm weights too), so no term can hide behind a zero or a one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and "norm" in name or name.endswith("ln_q.weight") or name.endswith("ln_post.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def omni_thinker_config(variant: str = "a"):
    from transformers import Qwen2_5OmniThinkerConfig

    return Qwen2_5OmniThinkerConfig(**copy.deepcopy(OMNI_VARIANTS[variant]), **TOKEN_IDS)


def build_omni_thinker(variant: str = "a", seed: int = 0):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(omni_thinker_config(variant)).eval()
    randomize_(model, seed)
    return model


def build_omni_full(seed: int = 0):
    """The full Qwen2.5-Omni (thinker + talker + token2wav), saved as the released checkpoints are."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    talker = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, embedding_size=64, head_dim=16,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}, **TOKEN_IDS)
    token2wav = dict(
        dit_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ff_mult=1, emb_dim=16, head_dim=16, repeats=2,
                        num_embeds=64, mel_dim=16, enc_dim=16, enc_emb_dim=16, enc_channels=[16, 16, 16, 16, 48],
                        enc_kernel_sizes=[5, 3, 3, 3, 1], enc_dilations=[1, 2, 3, 4, 1], enc_attention_channels=8,
                        enc_res2net_scale=2, enc_se_channels=8),
        bigvgan_config=dict(mel_dim=16, upsample_initial_channel=32, resblock_kernel_sizes=[3],
                            resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4]),
    )
    thinker = dict(copy.deepcopy(OMNI_VARIANTS["a"]), **TOKEN_IDS)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav)).eval()
    randomize_(model, seed)
    return model


def build_vl(tie: bool, seed: int = 0):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=tie),
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[2], tokens_per_second=2),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_BOS, vision_end_token_id=VISION_EOS,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    randomize_(model, seed)
    if tie:
        model.tie_weights()
    return model


# ---------------------------------------------------------------- inputs, by the documented layout rules

@dataclass
class Media:
    """Raw tensors of the media of one batch, in prompt order."""

    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    video_second_per_grid: torch.Tensor | None = None
    input_features: torch.Tensor | None = None
    feature_attention_mask: torch.Tensor | None = None


def audio_tokens(mel_frames: int) -> int:
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def vision_tokens(grid) -> int:
    t, h, w = grid
    return t * h * w // 4


def audio_in_video_tokens(grid, second_per_grid: float, n_audio: int, rate: int = 25, chunk_seconds: int = 2) -> list[int]:
    """Video tokens of each 2-s chunk, then that chunk's audio tokens (t-offset in [50j, 50j+50))."""
    t, h, w = grid
    per_frame = h * w // 4
    per_chunk = rate * chunk_seconds
    frame_offsets = [int(g * second_per_grid * rate) for g in range(t)]
    n_chunks = max(max(frame_offsets) // per_chunk + 1, (n_audio - 1) // per_chunk + 1)
    ids = []
    for j in range(n_chunks):
        ids += [VIDEO] * per_frame * sum(1 for o in frame_offsets if j * per_chunk <= o < (j + 1) * per_chunk)
        ids += [AUDIO] * len(range(j * per_chunk, min((j + 1) * per_chunk, n_audio)))
    return ids


def make_features(frames: list[int], padded_to: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.randn(len(frames), 128, padded_to, generator=generator)
    mask = torch.zeros(len(frames), padded_to, dtype=torch.long)
    for i, n in enumerate(frames):
        mask[i, :n] = 1
        feats[i, :, n:] = 0
    return feats, mask


def pad_rows(rows: list[list[int]], side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(longest - len(r), longest) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask
