"""The toy models' architecture: the Qwen2.5-Omni thinker / Qwen2.5-VL, scaled down.

Example:
    >>> cfg = toy_config("omni")
    >>> cfg.architecture, cfg.n_layers, cfg.text.vocab_size
    ('qwen2_5_omni_thinker', 6, 256)
"""

from __future__ import annotations

from typing import Literal

from hooked_avllm.config import AVLLMConfig, TextConfig, TokenIds
from hooked_avllm.towers.qwen_vision import QwenVisionConfig
from hooked_avllm.towers.whisper_audio import QwenAudioConfig
from hooked_avllm.toy.tokenizer import EOS_ID, PAD_ID, SPECIAL_IDS, VOCAB_SIZE


def toy_config(kind: Literal["omni", "vl"] = "omni") -> AVLLMConfig:
    """The toy audio-visual model (``"omni"``) or its vision-language base (``"vl"``).

    Same LLM and vision tower in both; ``"omni"`` adds the audio tower and projector. As in the
    real pair, video positions advance 25 ids per second in the Omni thinker (TMRoPE) and 2 per
    second in Qwen2.5-VL (``tokens_per_second``).
    """
    d_model = 96
    text = TextConfig(
        vocab_size=VOCAB_SIZE, d_model=d_model, d_mlp=256, n_layers=6, n_heads=4, n_kv_heads=2, d_head=24,
        mrope_section=(4, 4, 4), rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
    )
    vision = QwenVisionConfig(
        depth=4, d_model=64, d_mlp=128, n_heads=4, out_dim=d_model, fullatt_block_indexes=(1, 3),
    )
    audio = QwenAudioConfig(n_mels=128, d_model=64, n_layers=3, n_heads=4, d_mlp=128, out_dim=d_model)
    ids = SPECIAL_IDS
    omni = kind == "omni"
    tokens = TokenIds(
        image=ids["image"], video=ids["video"], vision_start=ids["vision_start"], vision_end=ids["vision_end"],
        audio=ids["audio"] if omni else None, audio_start=ids["audio_start"] if omni else None,
        audio_end=ids["audio_end"] if omni else None, pad=PAD_ID, eos=(EOS_ID,),
    )
    return AVLLMConfig(
        architecture="qwen2_5_omni_thinker" if omni else "qwen2_5_vl",
        text=text,
        vision=vision,
        audio=audio if omni else None,
        tokens=tokens,
        position_id_per_second=25.0 if omni else 2.0,
        source_model_type="qwen2_5_omni_thinker" if omni else "qwen2_5_vl",
    )
