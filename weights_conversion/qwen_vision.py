"""Checkpoint names -> our parameters for the Qwen2.5-VL / Qwen2.5-Omni ViT and its patch merger
(``visual.*``; Qwen2.5-VL fuses q/k/v in ``attn.qkv``, Qwen2.5-Omni keeps ``attn.q/k/v``)."""

from __future__ import annotations

import re

from hooked_avllm.towers.qwen_vision import QwenVisionConfig
from weights_conversion.targets import Target


def vision_targets(rest: str, v: QwenVisionConfig) -> list[Target] | None:
    """Targets of a ViT tensor named relative to ``visual.`` (separate q/k/v or fused qkv), the
    blocks under ``vision.`` and the patch merger under ``vision_proj.``.

    Example:
        >>> cfg = QwenVisionConfig(depth=1, d_model=8, d_mlp=16, n_heads=2, out_dim=8)
        >>> [t.param for t in vision_targets("merger.mlp.0.bias", cfg)]
        ['vision_proj.fc1.bias']
    """
    d = v.d_model
    if rest == "patch_embed.proj.weight":
        return [Target("vision.patch_embed.weight", shape=(d, v.patch_dim))]
    merger = {
        "merger.ln_q.weight": "vision_proj.ln_q.w",
        "merger.mlp.0.weight": "vision_proj.fc1.weight",
        "merger.mlp.0.bias": "vision_proj.fc1.bias",
        "merger.mlp.2.weight": "vision_proj.fc2.weight",
        "merger.mlp.2.bias": "vision_proj.fc2.bias",
    }
    if rest in merger:
        return [Target(merger[rest])]
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
    if not m or int(m.group(1)) >= v.depth:
        return None
    block, leaf = f"vision.blocks.{m.group(1)}", m.group(2)
    m = re.fullmatch(r"attn\.(q|k|v|qkv)\.(weight|bias)", leaf)
    if m:
        rows = {"q": (0, d), "k": (d, 2 * d), "v": (2 * d, 3 * d), "qkv": None}[m.group(1)]
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows)]
    m = re.fullmatch(r"(attn\.proj|mlp\.gate_proj|mlp\.up_proj|mlp\.down_proj|norm1|norm2)\.(weight|bias)", leaf)
    if m:
        part, kind = m.groups()
        if part.startswith("norm"):
            return [Target(f"{block}.ln{part[-1]}.w")] if kind == "weight" else None
        if part == "attn.proj":
            return [Target(f"{block}.attn.out.{kind}")]
        if part == "mlp.down_proj":
            return [Target(f"{block}.mlp.down.{kind}")]
        rows = (0, v.d_mlp) if part == "mlp.gate_proj" else (v.d_mlp, 2 * v.d_mlp)
        return [Target(f"{block}.mlp.gate_up.{kind}", rows)]
    return None


__all__ = ["vision_targets"]
