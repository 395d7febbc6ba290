"""Qwen2.5-Omni (``qwen2_5_omni``: thinker + talker + token2wav; ``qwen2_5_omni_thinker``: a thinker
saved alone): where each checkpoint prefix goes. Only the thinker is converted; ``talker.*`` and
``token2wav.*`` are skipped by name.

On-disk names: ``thinker.{model,visual,audio_tower,lm_head}.*`` (released checkpoints) or the same
without ``thinker.``; transformers 5.x's in-memory ``model.language_model.*`` / ``model.visual.*``
/ ``model.audio_tower.*`` are read too.

Example:
    >>> from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf
    >>> import json
    >>> cfg = config_from_hf(json.load(open("tests/fixtures/hub/Qwen__Qwen2.5-Omni-3B/config.json")))
    >>> [t.param for t in tensor_targets("thinker.audio_tower.proj.bias", cfg)], tensor_targets("talker.x", cfg)
    (['audio_proj.proj.bias'], [])
"""

from __future__ import annotations

from weights_conversion.prefix_table import Part, PrefixTable, unembedding_targets
from weights_conversion.qwen2_llm import llm_targets
from weights_conversion.qwen_vision import vision_targets
from weights_conversion.whisper_audio import audio_implicit_zeros, audio_targets

SKIPPED_PREFIXES = ("talker.", "token2wav.")
_THINKER = (
    ("lm_head.weight", unembedding_targets, "text"),
    ("model.language_model.", llm_targets, "text"),  # transformers 5.x module names (in memory)
    ("model.visual.", vision_targets, "vision"),
    ("model.audio_tower.", audio_targets, "audio"),
    ("model.", llm_targets, "text"),  # names on disk
    ("visual.", vision_targets, "vision"),
    ("audio_tower.", audio_targets, "audio"),
)
TABLE = PrefixTable(
    parts=tuple(Part(root + prefix, name_map, part) for root in ("thinker.", "") for prefix, name_map, part in _THINKER),
    skipped=SKIPPED_PREFIXES,
    zeros=lambda cfg: audio_implicit_zeros(cfg.audio) if cfg.audio is not None else [],
)
tensor_targets, implicit_zeros, extra_weight_files = TABLE.tensor_targets, TABLE.implicit_zeros, TABLE.extra_weight_files

__all__ = ["SKIPPED_PREFIXES", "TABLE", "extra_weight_files", "implicit_zeros", "tensor_targets"]
