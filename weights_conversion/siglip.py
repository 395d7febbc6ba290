"""Checkpoint names -> our parameters for the SigLIP vision tower, VideoLLaMA2's STC connector and
its LLaVA-style MLP projectors.

Each function takes a tensor name relative to the part's root in the checkpoint and returns where
it lands: a list of :class:`Target` (``[]``: known and deliberately not loaded), or ``None`` for a
name that is not part of it.

* :func:`siglip_targets`: names relative to ``vision_model.`` (VideoLLaMA2.1 stores them under
  ``model.vision_tower.vision_tower.vision_model.``).
* :func:`stc_targets`: names relative to ``mm_projector.`` (timm ``RegStage`` names).
* :func:`mlp_projector_targets`: names relative to an ``nn.Sequential`` of Linear/GELU layers
  (``mm_projector_a.``).
"""

from __future__ import annotations

import re

from hooked_avllm.towers.siglip import SiglipConfig
from hooked_avllm.towers.stc_connector import STCConfig
from weights_conversion.targets import Target


def siglip_targets(name: str, cfg: SiglipConfig, prefix: str = "vision.") -> list[Target] | None:
    """Where a SigLIP vision tensor goes (``name`` relative to ``vision_model.``).

    Skipped (``[]``): layers at or beyond ``cfg.n_layers_run`` (past the selected hidden state),
    ``post_layernorm.*``, the attention-pooling ``head.*`` and the ``embeddings.position_ids``
    buffer some older checkpoints carry.

    Example:
        >>> cfg = SiglipConfig()
        >>> siglip_targets("encoder.layers.3.self_attn.k_proj.weight", cfg)
        [Target(param='vision.blocks.3.attn.qkv.weight', rows=(1152, 2304), shape=None, index=None)]
        >>> siglip_targets("encoder.layers.26.mlp.fc1.weight", cfg), siglip_targets("text_model.x", cfg)
        ([], None)
    """
    d = cfg.d_model
    simple = {
        "embeddings.patch_embedding.weight": "patch_embed.weight",
        "embeddings.patch_embedding.bias": "patch_embed.bias",
        "embeddings.position_embedding.weight": "pos_embed",
    }
    if name in simple:
        return [Target(prefix + simple[name])]
    if name == "embeddings.position_ids" or re.fullmatch(r"(post_layernorm|head)\..+", name):
        return []
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", name)
    if not m or int(m.group(1)) >= cfg.n_layers:
        return None
    layer, leaf = int(m.group(1)), m.group(2)
    block = f"{prefix}blocks.{layer}"
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m:
        rows = {"q": (0, d), "k": (d, 2 * d), "v": (2 * d, 3 * d)}[m.group(1)]
        target = [Target(f"{block}.attn.qkv.{m.group(2)}", rows)]
    else:
        m = re.fullmatch(r"(self_attn\.out_proj|layer_norm1|layer_norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)", leaf)
        if not m:
            return None
        part, kind = m.groups()
        if part.startswith("layer_norm"):
            target = [Target(f"{block}.ln{part[-1]}.{'w' if kind == 'weight' else 'b'}")]
        else:
            ours = {"self_attn.out_proj": "attn.out", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}[part]
            target = [Target(f"{block}.{ours}.{kind}")]
    return target if layer < cfg.n_layers_run else []


def mlp_projector_targets(name: str, depth: int, prefix: str) -> list[Target] | None:
    """Where a tensor of an ``nn.Sequential(Linear, GELU, Linear, ...)`` projector goes (``name``
    relative to the Sequential: its Linear layers are at indices 0, 2, 4, ...).

    Example:
        >>> mlp_projector_targets("2.bias", 2, "audio_proj.")
        [Target(param='audio_proj.linears.1.bias', rows=None, shape=None, index=None)]
        >>> mlp_projector_targets("4.weight", 2, "audio_proj.") is None
        True
    """
    m = re.fullmatch(r"(\d+)\.(weight|bias)", name)
    if not m or int(m.group(1)) % 2 or int(m.group(1)) // 2 >= depth:
        return None
    return [Target(f"{prefix}linears.{int(m.group(1)) // 2}.{m.group(2)}")]


def stc_targets(name: str, cfg: STCConfig, prefix: str = "vision_proj.") -> list[Target] | None:
    """Where a tensor of VideoLLaMA2's STC connector goes (``name`` relative to ``mm_projector.``).

    Accepted names, per stage ``s1``/``s2`` and block ``b1..b{depth}``:
    ``b{i}.conv{1,2,3}.conv.weight``, ``b{i}.conv{1,2,3}.bn.{weight,bias}``,
    ``b{i}.se.fc{1,2}.{weight,bias}``, and for the block that changes width (``s1.b1`` when
    ``d_in != d_model``) ``b{i}.downsample.conv.weight`` and ``b{i}.downsample.bn.{weight,bias}``;
    then ``sampler.0.{weight,bias}`` and ``readout.{0,2,...}.{weight,bias}``.

    Example:
        >>> cfg = STCConfig()
        >>> stc_targets("s1.b1.downsample.bn.weight", cfg)
        [Target(param='vision_proj.s1.blocks.0.shortcut_norm.w', rows=None, shape=None, index=None)]
        >>> stc_targets("s2.b1.downsample.conv.weight", cfg) is None  # s2 keeps the width: identity skip
        True
    """
    if name.startswith("readout."):
        return mlp_projector_targets(name[len("readout."):], cfg.mlp_depth, f"{prefix}readout.")
    m = re.fullmatch(r"sampler\.0\.(weight|bias)", name)
    if m:
        return [Target(f"{prefix}sampler.{m.group(1)}")]
    m = re.fullmatch(r"(s[12])\.b(\d+)\.(.+)", name)
    if not m or not 1 <= int(m.group(2)) <= cfg.depth:
        return None
    stage, index, leaf = m.group(1), int(m.group(2)) - 1, m.group(3)
    block = f"{prefix}{stage}.blocks.{index}"
    norm_leaf = {"weight": "w", "bias": "b"}
    m = re.fullmatch(r"conv([123])\.(conv\.weight|bn\.weight|bn\.bias)", leaf)
    if m:
        n, part = m.groups()
        if part == "conv.weight":
            return [Target(f"{block}.conv{n}.weight")]
        return [Target(f"{block}.norm{n}.{norm_leaf[part.split('.')[1]]}")]
    m = re.fullmatch(r"se\.(fc[12])\.(weight|bias)", leaf)
    if m:
        return [Target(f"{block}.se.{m.group(1)}.{m.group(2)}")]
    m = re.fullmatch(r"downsample\.(conv\.weight|bn\.weight|bn\.bias)", leaf)
    changes_width = stage == "s1" and index == 0 and cfg.d_in != cfg.d_model
    if m and changes_width:
        part = m.group(1)
        if part == "conv.weight":
            return [Target(f"{block}.shortcut_conv.weight")]
        return [Target(f"{block}.shortcut_norm.{norm_leaf[part.split('.')[1]]}")]
    return None
