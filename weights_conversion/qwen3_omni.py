"""Qwen3-Omni (``qwen3_omni_moe``, thinker + talker + code2wav; or ``qwen3_omni_moe_thinker``
saved alone): checkpoint names -> our parameters. Only the thinker is converted; ``talker.*`` and
``code2wav.*`` are skipped by name.

On-disk names (the released index, and what transformers 5.x writes):

* ``thinker.model.{embed_tokens,norm}.weight``, ``thinker.model.layers.N.self_attn.{q,k,v,o}_proj.weight``,
  ``.self_attn.{q,k}_norm.weight``, ``.{input,post_attention}_layernorm.weight``;
* the mixture of experts per expert: ``.mlp.experts.E.{gate,up,down}_proj.weight``, stacked here
  into ``blocks.N.mlp.gate_up [E, 2 * d_expert, d_model]`` / ``blocks.N.mlp.down [E, d_model, d_expert]``,
  and the router ``.mlp.gate.weight``; transformers' in-memory fused ``experts.gate_up_proj`` /
  ``experts.down_proj`` are read too (a live reference model's names);
* ``thinker.visual.*`` (:func:`weights_conversion.qwen3_vision.qwen3_vision_targets`),
  ``thinker.audio_tower.*`` (:func:`weights_conversion.aut_audio.aut_targets`),
  ``thinker.lm_head.weight``.

The same names without ``thinker.`` (a thinker saved alone) and transformers' in-memory
``model.language_model.*`` / ``model.visual.*`` / ``model.audio_tower.*`` are accepted.

Example:
    >>> from hooked_avllm.architectures.qwen3_omni.config import config_from_hf, tiny_config_json
    >>> cfg = config_from_hf(tiny_config_json())
    >>> tensor_targets("thinker.model.layers.1.mlp.experts.5.up_proj.weight", cfg)
    [Target(param='blocks.1.mlp.gate_up', rows=(32, 64), shape=None, index=5)]
    >>> tensor_targets("talker.model.layers.0.mlp.gate.weight", cfg)
    []
"""

from __future__ import annotations

import re

from hooked_avllm.architectures.qwen3_omni.config import config_from_hf
from hooked_avllm.config import AVLLMConfig
from weights_conversion.aut_audio import aut_targets
from weights_conversion.qwen3_vision import qwen3_vision_targets
from weights_conversion.qwen_common import llm_targets
from weights_conversion.targets import Target

SKIPPED_PREFIXES = ("talker.", "code2wav.")

__all__ = ["SKIPPED_PREFIXES", "config_from_hf", "implicit_zeros", "moe_llm_targets", "tensor_targets"]


def moe_llm_targets(rest: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Targets of a decoder tensor named relative to the LLM (``layers.3.mlp.experts.7.down_proj.weight``)."""
    t = cfg.text
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if m and int(m.group(1)) < t.n_layers:
        layer, leaf = int(m.group(1)), m.group(2)
        block = f"blocks.{layer}"
        m_norm = re.fullmatch(r"self_attn\.([qk])_norm\.weight", leaf)
        if m_norm:
            return [Target(f"{block}.attn.{m_norm.group(1)}_norm.w")] if t.qk_norm else None
        if t.is_moe_layer(layer):
            if leaf == "mlp.gate.weight":
                return [Target(f"{block}.mlp.gate.weight")]
            if leaf == "mlp.experts.gate_up_proj":
                return [Target(f"{block}.mlp.gate_up")]
            if leaf == "mlp.experts.down_proj":
                return [Target(f"{block}.mlp.down")]
            m_expert = re.fullmatch(r"mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight", leaf)
            if m_expert:
                expert, part = int(m_expert.group(1)), m_expert.group(2)
                if expert >= t.n_experts:
                    return None
                if part == "down":
                    return [Target(f"{block}.mlp.down", index=expert)]
                rows = (0, t.d_expert) if part == "gate" else (t.d_expert, 2 * t.d_expert)
                return [Target(f"{block}.mlp.gate_up", rows, index=expert)]
            if leaf.startswith("mlp."):
                return None  # dense MLP names in a routed layer: the config and checkpoint disagree
    return llm_targets(rest, cfg)


def tensor_targets(name: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Where checkpoint tensor ``name`` goes; ``[]`` for a known tensor we drop, ``None`` if unknown."""
    if name.startswith(SKIPPED_PREFIXES):
        return []
    rest = name.removeprefix("thinker.")
    if rest == "lm_head.weight":
        return [] if cfg.text.tie_word_embeddings else [Target("unembed.weight")]
    for prefix, kind in (
        ("model.language_model.", "llm"), ("model.visual.", "vision"), ("model.audio_tower.", "audio"),  # in memory
        ("model.", "llm"), ("visual.", "vision"), ("audio_tower.", "audio"),  # on disk
    ):
        if rest.startswith(prefix):
            part = rest[len(prefix):]
            if kind == "llm":
                return moe_llm_targets(part, cfg)
            if kind == "vision":
                return qwen3_vision_targets(part, cfg.vision) if cfg.vision is not None else None
            return aut_targets(part, cfg.audio) if cfg.audio is not None else None
    return None


def implicit_zeros(cfg: AVLLMConfig) -> list[Target]:
    return []
