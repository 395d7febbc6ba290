"""Checkpoint names -> our parameters for MiniCPM-V 2.6 / MiniCPM-o 2.6's navit SigLIP tower
(:class:`hooked_avllm.towers.navit_siglip.NavitSiglipTower`).

Names are relative to ``vpm.`` (the released names, which are also transformers'
``Idefics2VisionTransformer`` names):

* ``embeddings.patch_embedding.weight`` ``[d, c, p, p]`` -> ``patch_embed.weight`` reshaped to
  ``[d, c * p * p]`` (``Target.shape``), ``embeddings.patch_embedding.bias`` -> ``patch_embed.bias``;
* ``embeddings.position_embedding.weight`` -> ``pos_embed``;
* ``encoder.layers.N.self_attn.{q,k,v}_proj.*`` -> row blocks of ``blocks.N.attn.qkv``,
  ``self_attn.out_proj`` -> ``attn.out``, ``layer_norm1`` / ``layer_norm2`` -> ``ln1`` / ``ln2``
  (``w``, ``b``), ``mlp.fc1`` / ``mlp.fc2`` as is;
* ``post_layernorm`` -> ``ln_post``.

``embeddings.position_ids`` (a buffer some SigLIP checkpoints carry) is known and skipped (``[]``);
layers at or past ``cfg.n_layers`` and anything else (e.g. a pooling ``head.*``) are ``None``.

Example:
    >>> from hooked_avllm.towers.navit_siglip import NavitSiglipConfig
    >>> cfg = NavitSiglipConfig()
    >>> navit_siglip_targets("encoder.layers.3.self_attn.v_proj.bias", cfg)
    [Target(param='vision.blocks.3.attn.qkv.bias', rows=(2304, 3456), shape=None, index=None)]
    >>> navit_siglip_targets("embeddings.patch_embedding.weight", cfg)[0].shape
    (1152, 588)
    >>> navit_siglip_targets("encoder.layers.27.mlp.fc1.weight", cfg) is None  # 27 layers: 0..26
    True
"""

from __future__ import annotations

import re

from hooked_avllm.towers.navit_siglip import NavitSiglipConfig
from weights_conversion.targets import Target

_LAYER = {
    "self_attn.out_proj.weight": "attn.out.weight",
    "self_attn.out_proj.bias": "attn.out.bias",
    "layer_norm1.weight": "ln1.w",
    "layer_norm1.bias": "ln1.b",
    "layer_norm2.weight": "ln2.w",
    "layer_norm2.bias": "ln2.b",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}


def navit_siglip_targets(name: str, cfg: NavitSiglipConfig, prefix: str = "vision.") -> list[Target] | None:
    """Where navit SigLIP tensor ``name`` (relative to ``vpm.``) goes, under ``prefix``; ``[]`` for
    a known tensor we do not load, ``None`` for a name that is not the tower's.

    Example:
        >>> navit_siglip_targets("post_layernorm.weight", NavitSiglipConfig(), prefix="")
        [Target(param='ln_post.w', rows=None, shape=None, index=None)]
        >>> navit_siglip_targets("embeddings.position_ids", NavitSiglipConfig())
        []
    """
    if name == "embeddings.patch_embedding.weight":
        return [Target(f"{prefix}patch_embed.weight", shape=(cfg.d_model, cfg.patch_dim))]
    simple = {
        "embeddings.patch_embedding.bias": "patch_embed.bias",
        "embeddings.position_embedding.weight": "pos_embed",
        "post_layernorm.weight": "ln_post.w",
        "post_layernorm.bias": "ln_post.b",
    }
    if name in simple:
        return [Target(prefix + simple[name])]
    if name == "embeddings.position_ids":
        return []
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", name)
    if not m or int(m.group(1)) >= cfg.n_layers:
        return None
    block, leaf = f"{prefix}blocks.{int(m.group(1))}", m.group(2)
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m:
        d = cfg.d_model
        start = "qkv".index(m.group(1)) * d
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows=(start, start + d))]
    if leaf in _LAYER:
        return [Target(f"{block}.{_LAYER[leaf]}")]
    return None
