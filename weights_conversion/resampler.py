"""Checkpoint names -> our parameters for MiniCPM-V 2.6 / MiniCPM-o 2.6's perceiver resampler
(:class:`hooked_avllm.towers.resampler.Resampler`).

Names are relative to ``resampler.``:

* ``query`` -> ``query``; ``kv_proj.weight`` -> ``kv_proj.weight`` (only when ``kv_dim != d_model``:
  the released module has no ``kv_proj`` parameter otherwise);
* ``attn.in_proj_weight`` / ``attn.in_proj_bias`` (``nn.MultiheadAttention``'s fused q, k, v rows)
  -> ``attn.qkv.weight`` / ``attn.qkv.bias`` (the same row order), ``attn.out_proj.*`` -> ``attn.out.*``;
* ``ln_q`` / ``ln_kv`` / ``ln_post`` ``.weight`` / ``.bias`` -> ``.w`` / ``.b``;
* ``proj`` ``[d, d]`` -> ``proj`` as is (ours is also a raw matrix used as ``x @ proj``: no transpose).

``pos_embed`` (the released sin-cos table, a non-persistent buffer that checkpoints normally lack)
is known and skipped (``[]``): ours is computed, not loaded. Anything else is ``None``.

Example:
    >>> from hooked_avllm.towers.resampler import ResamplerConfig
    >>> resampler_targets("attn.in_proj_weight", ResamplerConfig())
    [Target(param='vision_proj.attn.qkv.weight', rows=None, shape=None, index=None)]
    >>> resampler_targets("pos_embed", ResamplerConfig()), resampler_targets("attn.bias_k", ResamplerConfig())
    ([], None)
"""

from __future__ import annotations

from hooked_avllm.towers.resampler import ResamplerConfig
from weights_conversion.targets import Target

_NAMES = {
    "query": "query",
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.out.weight",
    "attn.out_proj.bias": "attn.out.bias",
    "proj": "proj",
    **{f"{norm}.{kind}": f"{norm}.{kind[0]}" for norm in ("ln_q", "ln_kv", "ln_post") for kind in ("weight", "bias")},
}


def resampler_targets(name: str, cfg: ResamplerConfig, prefix: str = "vision_proj.") -> list[Target] | None:
    """Where resampler tensor ``name`` (relative to ``resampler.``) goes, under ``prefix``; ``[]``
    for the ``pos_embed`` buffer, ``None`` for a name that is not the resampler's.

    Example:
        >>> resampler_targets("ln_kv.bias", ResamplerConfig(), prefix="")
        [Target(param='ln_kv.b', rows=None, shape=None, index=None)]
        >>> resampler_targets("kv_proj.weight", ResamplerConfig(d_model=1152, n_heads=9)) is None  # no kv_proj
        True
    """
    if name in _NAMES:
        return [Target(prefix + _NAMES[name])]
    if name == "kv_proj.weight" and cfg.kv_dim != cfg.d_model:
        return [Target(f"{prefix}kv_proj.weight")]
    if name == "pos_embed":
        return []
    return None
