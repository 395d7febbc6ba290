"""Qwen2.5-VL (``qwen2_5_vl``): the vision-language base of Qwen2.5-Omni.

On-disk names: ``visual.*``, ``model.*`` (``model.language_model.*`` / ``model.visual.*`` in
checkpoints written by transformers 5.x), ``lm_head.weight`` (absent when embeddings are tied).
The released configs keep the LLM fields at the top level; transformers 5.x nests a
``text_config``. Both parse.
"""

from __future__ import annotations

from hooked_avllm.config import AVLLMConfig
from weights_conversion.qwen_common import llm_targets, text_config, token_ids, vision_config, vision_targets
from weights_conversion.targets import Target


def config_from_hf(config_json: dict) -> AVLLMConfig:
    """Parse a Qwen2.5-VL ``config.json`` (legacy flat or 5.x nested layout)."""
    text = dict(config_json)
    text.update(config_json.get("text_config") or {})
    tie = bool(config_json.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    vision = config_json["vision_config"]
    tokens = token_ids(config_json, audio=False)
    return AVLLMConfig(
        architecture="qwen2_5_vl",
        text=text_config(text, tie),
        vision=vision_config(vision),
        audio=None,
        tokens=tokens,
        position_id_per_second=float(vision.get("tokens_per_second", 2)),
        source_model_type="qwen2_5_vl",
        torch_dtype=config_json.get("torch_dtype") or config_json.get("dtype"),
    )


def tensor_targets(name: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Where checkpoint tensor ``name`` goes (``None`` if unknown)."""
    if name == "lm_head.weight":
        return [] if cfg.text.tie_word_embeddings else [Target("unembed.weight")]
    for prefix, fn in (
        ("model.language_model.", llm_targets),
        ("model.visual.", vision_targets),
        ("visual.", vision_targets),
        ("model.", llm_targets),
    ):
        if name.startswith(prefix):
            return fn(name[len(prefix) :], cfg)
    return None


def implicit_zeros(cfg: AVLLMConfig) -> list[Target]:
    return []
