"""Qwen3-Omni's AuT audio encoder checkpoint names -> :class:`hooked_avllm.towers.aut_audio.AuTAudioTower`
and :class:`~hooked_avllm.towers.aut_audio.AuTOutputHead` parameters.

Names are relative to ``thinker.audio_tower.`` (transformers' ``Qwen3OmniMoeAudioEncoder``):
``conv2d{1,2,3}.*`` -> ``conv{1,2,3}.*``, ``conv_out.weight``, ``layers.N.self_attn.{q,k,v}_proj.*``
-> row blocks of the fused ``blocks.N.attn.qkv``, ``out_proj`` -> ``attn.out``,
``self_attn_layer_norm`` / ``final_layer_norm`` -> ``ln1`` / ``ln2`` (``w``, ``b``), ``fc1`` / ``fc2``
-> ``mlp.fc1`` / ``mlp.fc2``, ``ln_post`` in the tower; ``proj1`` / ``proj2`` go to the head.
Skipped on purpose (``[]``): ``positional_embedding.positional_embedding``, the sinusoid buffer
(not saved by the released checkpoint; the tower recomputes it).

Example:
    >>> from hooked_avllm.towers.aut_audio import AuTConfig
    >>> [(t.param, t.rows) for t in aut_targets("layers.3.self_attn.k_proj.bias", AuTConfig())]
    [('audio.blocks.3.attn.qkv.bias', (1280, 2560))]
    >>> [t.param for t in aut_targets("proj2.weight", AuTConfig())]
    ['audio_proj.proj2.weight']
"""

from __future__ import annotations

import re

from hooked_avllm.towers.aut_audio import AuTConfig
from weights_conversion.targets import Target

_TOWER = {
    "conv2d1.weight": "conv1.weight",
    "conv2d1.bias": "conv1.bias",
    "conv2d2.weight": "conv2.weight",
    "conv2d2.bias": "conv2.bias",
    "conv2d3.weight": "conv3.weight",
    "conv2d3.bias": "conv3.bias",
    "conv_out.weight": "conv_out.weight",
    "ln_post.weight": "ln_post.w",
    "ln_post.bias": "ln_post.b",
}
_HEAD = {name: name for name in ("proj1.weight", "proj1.bias", "proj2.weight", "proj2.bias")}
_LAYER = {
    "self_attn.out_proj.weight": "attn.out.weight",
    "self_attn.out_proj.bias": "attn.out.bias",
    "self_attn_layer_norm.weight": "ln1.w",
    "self_attn_layer_norm.bias": "ln1.b",
    "final_layer_norm.weight": "ln2.w",
    "final_layer_norm.bias": "ln2.b",
    "fc1.weight": "mlp.fc1.weight",
    "fc1.bias": "mlp.fc1.bias",
    "fc2.weight": "mlp.fc2.weight",
    "fc2.bias": "mlp.fc2.bias",
}
_SKIPPED = {"positional_embedding.positional_embedding"}


def aut_targets(
    name: str, cfg: AuTConfig, tower_prefix: str = "audio.", head_prefix: str = "audio_proj."
) -> list[Target] | None:
    """Where AuT tensor ``name`` (relative to ``thinker.audio_tower.``) goes: the tower's parameters
    under ``tower_prefix``, ``proj1`` / ``proj2`` under ``head_prefix``; ``[]`` for the positional
    buffer, ``None`` for a name that is not the encoder's (or a layer index >= ``cfg.n_layers``).

    Example:
        >>> cfg = AuTConfig(n_layers=2)
        >>> [t.param for t in aut_targets("layers.1.final_layer_norm.bias", cfg, tower_prefix="")]
        ['blocks.1.ln2.b']
        >>> aut_targets("positional_embedding.positional_embedding", cfg), aut_targets("layers.2.fc1.weight", cfg)
        ([], None)
    """
    if name in _TOWER:
        return [Target(tower_prefix + _TOWER[name])]
    if name in _HEAD:
        return [Target(head_prefix + _HEAD[name])]
    if name in _SKIPPED:
        return []
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if not m or int(m.group(1)) >= cfg.n_layers:
        return None
    block, leaf = f"{tower_prefix}blocks.{int(m.group(1))}", m.group(2)
    if leaf in _LAYER:
        return [Target(f"{block}.{_LAYER[leaf]}")]
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m:
        start = "qkv".index(m.group(1)) * cfg.d_model
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows=(start, start + cfg.d_model))]
    return None


__all__ = ["aut_targets"]
