"""Qwen3-Omni (``qwen3_omni_moe``: thinker + talker + code2wav; ``qwen3_omni_moe_thinker``: a
thinker saved alone): where each checkpoint prefix goes. Only the thinker is converted;
``talker.*`` and ``code2wav.*`` are skipped by name.

On-disk names (the released index, and what transformers 5.x writes): ``thinker.model.*`` (the
Qwen3-MoE decoder, :func:`weights_conversion.qwen_moe_llm.moe_llm_targets`; experts stored one
by one are stacked), ``thinker.visual.*`` (:func:`weights_conversion.qwen3_vision.qwen3_vision_targets`),
``thinker.audio_tower.*`` (:func:`weights_conversion.aut_audio.aut_targets`), ``thinker.lm_head.weight``;
the same without ``thinker.``, and transformers' in-memory ``model.language_model.*`` /
``model.visual.*`` / ``model.audio_tower.*``.

Example:
    >>> from hooked_avllm.architectures.qwen3_omni.config import config_from_hf, tiny_config_json
    >>> cfg = config_from_hf(tiny_config_json())
    >>> tensor_targets("thinker.model.layers.1.mlp.experts.5.up_proj.weight", cfg)
    [Target(param='blocks.1.mlp.gate_up', rows=(32, 64), shape=None, index=5)]
    >>> tensor_targets("talker.model.layers.0.mlp.gate.weight", cfg)
    []
"""

from __future__ import annotations

from weights_conversion.aut_audio import aut_targets
from weights_conversion.prefix_table import Part, PrefixTable, unembedding_targets
from weights_conversion.qwen3_vision import qwen3_vision_targets
from weights_conversion.qwen_moe_llm import moe_llm_targets

SKIPPED_PREFIXES = ("talker.", "code2wav.")
_THINKER = (
    ("lm_head.weight", unembedding_targets, "text"),
    ("model.language_model.", moe_llm_targets, "text"),  # in memory
    ("model.visual.", qwen3_vision_targets, "vision"),
    ("model.audio_tower.", aut_targets, "audio"),
    ("model.", moe_llm_targets, "text"),  # on disk
    ("visual.", qwen3_vision_targets, "vision"),
    ("audio_tower.", aut_targets, "audio"),
)
TABLE = PrefixTable(
    parts=tuple(Part(root + prefix, name_map, part) for root in ("thinker.", "") for prefix, name_map, part in _THINKER),
    skipped=SKIPPED_PREFIXES,
)
tensor_targets, implicit_zeros, extra_weight_files = TABLE.tensor_targets, TABLE.implicit_zeros, TABLE.extra_weight_files

__all__ = ["SKIPPED_PREFIXES", "TABLE", "extra_weight_files", "implicit_zeros", "tensor_targets"]
