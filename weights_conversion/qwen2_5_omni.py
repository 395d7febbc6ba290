"""Qwen2.5-Omni: the full model (``qwen2_5_omni``, thinker + talker + token2wav) or a thinker
saved alone (``qwen2_5_omni_thinker``). Only the thinker is converted; talker and token2wav
tensors are skipped.

On-disk names: ``thinker.{model,visual,audio_tower,lm_head}.*`` (released checkpoints) or the
same without ``thinker.`` (a thinker saved alone by transformers 5.x).
"""

from __future__ import annotations

import re

from hooked_avllm.config import AudioConfig, AVLLMConfig
from weights_conversion.qwen_common import llm_targets, text_config, token_ids, vision_config, vision_targets
from weights_conversion.targets import Target

SKIPPED_PREFIXES = ("talker.", "token2wav.")


def thinker_section(config_json: dict) -> dict:
    return config_json["thinker_config"] if "thinker_config" in config_json else config_json


def config_from_hf(config_json: dict) -> AVLLMConfig:
    """Parse a Qwen2.5-Omni ``config.json`` (full model or bare thinker).

    Example:
        >>> import json
        >>> cfg = config_from_hf(json.load(open("../shared/fixtures/hub/Qwen__Qwen2.5-Omni-3B/config.json")))  # doctest: +SKIP
        >>> cfg.text.n_layers, cfg.text.d_model  # doctest: +SKIP
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
        audio=AudioConfig(
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


def audio_targets(rest: str, cfg: AVLLMConfig) -> list[Target] | None:
    a = cfg.audio
    d = a.d_model
    top = {
        "conv1.weight": "audio.conv1.weight",
        "conv1.bias": "audio.conv1.bias",
        "conv2.weight": "audio.conv2.weight",
        "conv2.bias": "audio.conv2.bias",
        "ln_post.weight": "audio.ln_post.w",
        "ln_post.bias": "audio.ln_post.b",
        "proj.weight": "audio_proj.proj.weight",
        "proj.bias": "audio_proj.proj.bias",
    }
    if rest in top:
        return [Target(top[rest])]
    if rest == "audio_bos_eos_token.weight":
        return []  # in the checkpoint but never used by the reference's forward
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if not m or int(m.group(1)) >= a.n_layers:
        return None
    block, leaf = f"audio.blocks.{m.group(1)}", m.group(2)
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m:
        rows = {"q": (0, d), "k": (d, 2 * d), "v": (2 * d, 3 * d)}[m.group(1)]
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows)]
    names = {
        "self_attn.out_proj": "attn.out",
        "fc1": "mlp.fc1",
        "fc2": "mlp.fc2",
    }
    m = re.fullmatch(r"(self_attn\.out_proj|fc1|fc2|self_attn_layer_norm|final_layer_norm)\.(weight|bias)", leaf)
    if m:
        part, kind = m.groups()
        if part.endswith("layer_norm"):
            ln = "ln1" if part.startswith("self_attn") else "ln2"
            return [Target(f"{block}.{ln}.{'w' if kind == 'weight' else 'b'}")]
        return [Target(f"{block}.{names[part]}.{kind}")]
    return None


def tensor_targets(name: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Where checkpoint tensor ``name`` goes; ``[]`` for a known tensor we drop, ``None`` if unknown."""
    if name.startswith(SKIPPED_PREFIXES):
        return []
    rest = name[len("thinker.") :] if name.startswith("thinker.") else name
    if rest == "lm_head.weight":
        return [Target("unembed.weight")]
    for prefix, fn in (
        ("model.language_model.", llm_targets),  # transformers 5.x module names (in memory)
        ("model.visual.", vision_targets),
        ("model.audio_tower.", audio_targets),
        ("model.", llm_targets),  # names on disk
        ("visual.", vision_targets),
        ("audio_tower.", audio_targets),
    ):
        if rest.startswith(prefix):
            return fn(rest[len(prefix) :], cfg)
    return None


def implicit_zeros(cfg: AVLLMConfig) -> list[Target]:
    """The audio key projection has no bias in the checkpoint: its slice of the fused bias is 0."""
    d = cfg.audio.d_model
    return [Target(f"audio.blocks.{i}.attn.qkv.bias", (d, 2 * d)) for i in range(cfg.audio.n_layers)]
