"""Checkpoint names -> our parameters for the Qwen3-MoE decoder (Qwen3-Omni's thinker LLM)."""

from __future__ import annotations

import re

from hooked_avllm.config import TextConfig
from weights_conversion.qwen2_llm import llm_targets
from weights_conversion.targets import Target


def moe_llm_targets(rest: str, text: TextConfig) -> list[Target] | None:
    """Targets of a decoder tensor named relative to the LLM (``layers.3.mlp.experts.7.down_proj.weight``):
    per-expert tensors stacked into ``mlp.gate_up`` / ``mlp.down`` (also the fused in-memory names),
    the router, per-head q/k norms; dense names fall through to :func:`llm_targets`.

    Example:
        >>> text = TextConfig(vocab_size=8, d_model=8, d_mlp=16, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4,
        ...                   n_experts=4, d_expert=6, top_k=2, qkv_bias=False, qk_norm=True)
        >>> moe_llm_targets("layers.0.mlp.experts.3.up_proj.weight", text)
        [Target(param='blocks.0.mlp.gate_up', rows=(6, 12), shape=None, index=3)]
    """
    t = text
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
    return llm_targets(rest, text)


__all__ = ["moe_llm_targets"]
