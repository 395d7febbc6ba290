"""Whisper encoder checkpoint names (MiniCPM-o 2.6's ``apm.*``) -> parameters of
:class:`hooked_avllm.towers.whisper_encoder.WhisperEncoderTower`, and MiniCPM-o's
``audio_projection_layer.*`` -> :class:`~hooked_avllm.towers.whisper_encoder.PooledAudioProjector`.

Encoder names are relative to ``apm.`` (transformers' ``WhisperEncoder`` names): ``conv{1,2}.*`` as is,
``embed_positions.weight`` -> ``embed_positions`` (the learned table, a parameter),
``layers.N.self_attn.{q,k,v}_proj.*`` -> row blocks of the fused ``blocks.N.attn.qkv``
(``k_proj`` has no bias: :func:`whisper_encoder_implicit_zeros` zeroes its slice),
``out_proj`` -> ``attn.out``, ``self_attn_layer_norm`` / ``final_layer_norm`` -> ``ln1`` / ``ln2``
(``w``, ``b``), ``fc1`` / ``fc2`` -> ``mlp.fc1`` / ``mlp.fc2``, ``layer_norm`` -> ``layer_norm``.
Projector names are relative to ``audio_projection_layer.``: ``linear1`` / ``linear2`` as is.
``audio_avg_pooler`` has no parameters.

Example:
    >>> from hooked_avllm.towers.whisper_encoder import WhisperEncoderConfig
    >>> cfg = WhisperEncoderConfig()
    >>> [(t.param, t.rows) for t in whisper_encoder_targets("layers.3.self_attn.v_proj.bias", cfg)]
    [('audio.blocks.3.attn.qkv.bias', (2048, 3072))]
    >>> [t.param for t in pooled_projector_targets("linear2.weight")]
    ['audio_proj.linear2.weight']
"""

from __future__ import annotations

import re

from hooked_avllm.towers.whisper_encoder import WhisperEncoderConfig
from weights_conversion.targets import Target

_TOWER = {
    "conv1.weight": "conv1.weight",
    "conv1.bias": "conv1.bias",
    "conv2.weight": "conv2.weight",
    "conv2.bias": "conv2.bias",
    "embed_positions.weight": "embed_positions",
    "layer_norm.weight": "layer_norm.w",
    "layer_norm.bias": "layer_norm.b",
}
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
_PROJECTOR = {name: name for name in ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")}


def whisper_encoder_targets(name: str, cfg: WhisperEncoderConfig, prefix: str = "audio.") -> list[Target] | None:
    """Where Whisper encoder tensor ``name`` (relative to ``apm.``) goes, under ``prefix``; ``None`` for a
    name that is not the encoder's (a layer index >= ``cfg.n_layers``, or a ``k_proj.bias``, which
    Whisper does not have).

    Example:
        >>> cfg = WhisperEncoderConfig(n_layers=2)
        >>> [(t.param, t.rows) for t in whisper_encoder_targets("layers.1.self_attn.k_proj.weight", cfg, prefix="")]
        [('blocks.1.attn.qkv.weight', (1024, 2048))]
        >>> [t.param for t in whisper_encoder_targets("embed_positions.weight", cfg)]
        ['audio.embed_positions']
        >>> whisper_encoder_targets("layers.2.fc1.weight", cfg) is None  # no layer 2
        True
        >>> whisper_encoder_targets("layers.0.self_attn.k_proj.bias", cfg) is None  # Whisper keys have no bias
        True
    """
    if name in _TOWER:
        return [Target(prefix + _TOWER[name])]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if not m or int(m.group(1)) >= cfg.n_layers:
        return None
    block, leaf = f"{prefix}blocks.{int(m.group(1))}", m.group(2)
    if leaf in _LAYER:
        return [Target(f"{block}.{_LAYER[leaf]}")]
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m and (m.group(1), m.group(2)) != ("k", "bias"):
        start = "qkv".index(m.group(1)) * cfg.d_model
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows=(start, start + cfg.d_model))]
    return None


def whisper_encoder_implicit_zeros(cfg: WhisperEncoderConfig, prefix: str = "audio.") -> list[Target]:
    """The key projection has no bias in the checkpoint: its slice of every fused qkv bias is 0.

    Example:
        >>> [(t.param, t.rows) for t in whisper_encoder_implicit_zeros(WhisperEncoderConfig(n_layers=2))]
        [('audio.blocks.0.attn.qkv.bias', (1024, 2048)), ('audio.blocks.1.attn.qkv.bias', (1024, 2048))]
    """
    d = cfg.d_model
    return [Target(f"{prefix}blocks.{i}.attn.qkv.bias", rows=(d, 2 * d)) for i in range(cfg.n_layers)]


def pooled_projector_targets(name: str, prefix: str = "audio_proj.") -> list[Target] | None:
    """Where projector tensor ``name`` (relative to ``audio_projection_layer.``) goes; ``None`` if unknown.

    Example:
        >>> [t.param for t in pooled_projector_targets("linear1.bias", prefix="")]
        ['linear1.bias']
        >>> pooled_projector_targets("relu.weight") is None
        True
    """
    if name in _PROJECTOR:
        return [Target(prefix + _PROJECTOR[name])]
    return None


__all__ = ["pooled_projector_targets", "whisper_encoder_implicit_zeros", "whisper_encoder_targets"]
