"""Checkpoint names -> our parameters for the Qwen3-Omni vision tower and its mergers.

Names are relative to ``thinker.visual.`` (Qwen3-Omni stores the encoder there):

* ``patch_embed.proj.{weight,bias}``: the Conv3d, reshaped into the linear map over flattened
  ``[channel, frame, row, col]`` patches;
* ``pos_embed.weight``: the learned square position table;
* ``blocks.N.{norm1,norm2,attn.qkv,attn.proj,mlp.linear_fc1,mlp.linear_fc2}.{weight,bias}``;
* ``merger.{ln_q,mlp.0,mlp.2}.{weight,bias}`` and ``merger_list.I.*`` (the DeepStack mergers).

Everything of the encoder is loaded; nothing is skipped.
"""

from __future__ import annotations

import re

from hooked_avllm.towers.qwen3_vision import Qwen3VisionConfig
from weights_conversion.targets import Target

_BLOCK_PARTS = {
    "norm1": "ln1", "norm2": "ln2", "attn.qkv": "attn.qkv", "attn.proj": "attn.out",
    "mlp.linear_fc1": "mlp.fc1", "mlp.linear_fc2": "mlp.fc2",
}
_MERGER_PARTS = {"ln_q": "ln", "mlp.0": "fc1", "mlp.2": "fc2"}


def _leaf(part: str, kind: str) -> str:
    """Our leaf name: LayerNorms store ``w`` / ``b``, Linears ``weight`` / ``bias``."""
    if part in ("ln1", "ln2", "ln"):
        return "w" if kind == "weight" else "b"
    return kind


def qwen3_vision_targets(
    name: str, cfg: Qwen3VisionConfig, tower_prefix: str = "vision.", proj_prefix: str = "vision_proj."
) -> list[Target] | None:
    """Where a Qwen3-Omni vision tensor goes (``name`` relative to ``thinker.visual.``); ``None`` for
    a name that is not part of the encoder (or a block / merger index past the config's).

    Example:
        >>> cfg = Qwen3VisionConfig()
        >>> [(t.param, t.shape) for t in qwen3_vision_targets("patch_embed.proj.weight", cfg)]
        [('vision.patch_embed.weight', (1152, 1536))]
        >>> [t.param for t in qwen3_vision_targets("merger_list.2.ln_q.bias", cfg)]
        ['vision_proj.deepstack.2.ln.b']
        >>> qwen3_vision_targets("blocks.27.norm1.weight", cfg), qwen3_vision_targets("merger_list.3.mlp.0.bias", cfg)
        (None, None)
    """
    if name == "patch_embed.proj.weight":
        return [Target(f"{tower_prefix}patch_embed.weight", shape=(cfg.d_model, cfg.patch_dim))]
    if name == "patch_embed.proj.bias":
        return [Target(f"{tower_prefix}patch_embed.bias")]
    if name == "pos_embed.weight":
        return [Target(f"{tower_prefix}pos_embed")]
    m = re.fullmatch(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.linear_fc1|mlp\.linear_fc2)\.(weight|bias)", name)
    if m:
        layer, part, kind = int(m.group(1)), _BLOCK_PARTS[m.group(2)], m.group(3)
        if layer >= cfg.depth:
            return None
        return [Target(f"{tower_prefix}blocks.{layer}.{part}.{_leaf(part, kind)}")]
    m = re.fullmatch(r"(merger|merger_list\.(\d+))\.(ln_q|mlp\.0|mlp\.2)\.(weight|bias)", name)
    if m:
        index, part, kind = m.group(2), _MERGER_PARTS[m.group(3)], m.group(4)
        if index is None:
            module = "merger"
        elif int(index) < len(cfg.deepstack_visual_indexes):
            module = f"deepstack.{int(index)}"
        else:
            return None
        return [Target(f"{proj_prefix}{module}.{part}.{_leaf(part, kind)}")]
    return None


__all__ = ["qwen3_vision_targets"]
