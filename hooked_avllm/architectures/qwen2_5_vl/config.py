"""Qwen2.5-VL's ``config.json`` parsed into our dataclasses: the released configs keep the LLM
fields at the top level, transformers 5.x nests a ``text_config``; both parse.

Example:
    >>> import json
    >>> cfg = config_from_hf(json.load(open("tests/fixtures/hub/Qwen__Qwen2.5-VL-3B-Instruct/config.json")))
    >>> cfg.text.n_layers, cfg.text.tie_word_embeddings, cfg.position_id_per_second
    (36, True, 2.0)
"""

from __future__ import annotations

from hooked_avllm.architectures.qwen.config import text_config, token_ids, vision_config
from hooked_avllm.config import AVLLMConfig


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


__all__ = ["config_from_hf"]
