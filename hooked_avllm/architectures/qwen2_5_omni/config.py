"""Qwen2.5-Omni's ``config.json`` (the full model, ``qwen2_5_omni``, or a thinker saved alone,
``qwen2_5_omni_thinker``) parsed into our dataclasses; only the thinker is read."""

from __future__ import annotations

from hooked_avllm.architectures.qwen.config import text_config, token_ids, vision_config
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.towers.whisper_audio import QwenAudioConfig


def thinker_section(config_json: dict) -> dict:
    """The thinker's section of a full Qwen2.5-Omni config (or the config of a thinker saved alone)."""
    return config_json["thinker_config"] if "thinker_config" in config_json else config_json


def config_from_hf(config_json: dict) -> AVLLMConfig:
    """Parse a Qwen2.5-Omni ``config.json`` (full model or bare thinker).

    Example:
        >>> import json
        >>> cfg = config_from_hf(json.load(open("tests/fixtures/hub/Qwen__Qwen2.5-Omni-3B/config.json")))
        >>> cfg.text.n_layers, cfg.text.d_model
        (36, 2048)
    """
    th = thinker_section(config_json)
    text, audio = th["text_config"], th["audio_config"]
    # The thinker-level flag governs (the reference leaves lm_head untied when only text_config says True).
    tie = bool(th.get("tie_word_embeddings", False))
    tokens = token_ids(th, audio=True)
    return AVLLMConfig(
        architecture="qwen2_5_omni_thinker",
        text=text_config(text, tie),
        vision=vision_config(th["vision_config"]),
        audio=QwenAudioConfig(
            n_mels=audio.get("num_mel_bins", 128),
            d_model=audio["d_model"],
            n_layers=audio["encoder_layers"],
            n_heads=audio["encoder_attention_heads"],
            d_mlp=audio["encoder_ffn_dim"],
            out_dim=audio["output_dim"],
            n_window=audio.get("n_window", 100),
            max_source_positions=audio.get("max_source_positions", 1500),
            act=audio.get("activation_function", "gelu"),
        ),
        tokens=tokens,
        position_id_per_second=float(th.get("position_id_per_seconds", 25)),
        seconds_per_chunk=float(th.get("seconds_per_chunk", 2)),
        source_model_type=config_json.get("model_type", ""),
        torch_dtype=config_json.get("torch_dtype") or config_json.get("dtype"),
    )


__all__ = ["config_from_hf", "thinker_section"]
