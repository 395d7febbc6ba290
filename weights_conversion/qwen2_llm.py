"""Checkpoint names -> our parameters for the Qwen2 / Qwen2.5 decoder (``model.*`` of Qwen2.5-VL,
``thinker.model.*`` of Qwen2.5-Omni, ``model.*`` of VideoLLaMA2, ``llm.model.*`` of MiniCPM-o)."""

from __future__ import annotations

import re

from hooked_avllm.config import TextConfig
from weights_conversion.targets import Target


def llm_targets(rest: str, text: TextConfig) -> list[Target] | None:
    """Targets of a decoder tensor named relative to the LLM (``layers.3.mlp.up_proj.weight``):
    q/k/v into the fused ``attn.qkv``, gate/up into the fused ``mlp.gate_up``.

    Example:
        >>> text = TextConfig(vocab_size=8, d_model=8, d_mlp=16, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4)
        >>> llm_targets("layers.0.self_attn.k_proj.bias", text)
        [Target(param='blocks.0.attn.qkv.bias', rows=(8, 12), shape=None, index=None)]
    """
    t = text
    q, kv = t.n_heads * t.d_head, t.n_kv_heads * t.d_head
    if rest == "embed_tokens.weight":
        return [Target("embed.weight")]
    if rest == "norm.weight":
        return [Target("ln_final.w")]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if not m or int(m.group(1)) >= t.n_layers:
        return None
    block, leaf = f"blocks.{m.group(1)}", m.group(2)
    fused = {"q_proj": (0, q), "k_proj": (q, q + kv), "v_proj": (q + kv, q + 2 * kv)}
    m = re.fullmatch(r"self_attn\.([qkv]_proj)\.(weight|bias)", leaf)
    if m:
        return [Target(f"{block}.attn.qkv.{m.group(2)}", fused[m.group(1)])]
    simple = {
        "self_attn.o_proj.weight": (f"{block}.attn.out.weight", None),
        "mlp.gate_proj.weight": (f"{block}.mlp.gate_up.weight", (0, t.d_mlp)),
        "mlp.up_proj.weight": (f"{block}.mlp.gate_up.weight", (t.d_mlp, 2 * t.d_mlp)),
        "mlp.down_proj.weight": (f"{block}.mlp.down.weight", None),
        "input_layernorm.weight": (f"{block}.ln1.w", None),
        "post_attention_layernorm.weight": (f"{block}.ln2.w", None),
    }
    if leaf in simple:
        param, rows = simple[leaf]
        return [Target(param, rows)]
    return None


__all__ = ["llm_targets"]
