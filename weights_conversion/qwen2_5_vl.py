"""Qwen2.5-VL (``qwen2_5_vl``): where each checkpoint prefix goes.

On-disk names: ``visual.*``, ``model.*`` and ``lm_head.weight`` (absent when embeddings are tied);
checkpoints written by transformers 5.x use ``model.language_model.*`` / ``model.visual.*``.

Example:
    >>> from hooked_avllm.architectures.qwen2_5_vl.config import config_from_hf
    >>> import json
    >>> cfg = config_from_hf(json.load(open("tests/fixtures/hub/Qwen__Qwen2.5-VL-3B-Instruct/config.json")))
    >>> [t.param for t in tensor_targets("visual.merger.mlp.2.bias", cfg)]
    ['vision_proj.fc2.bias']
"""

from __future__ import annotations

from weights_conversion.prefix_table import Part, PrefixTable, unembedding_targets
from weights_conversion.qwen2_llm import llm_targets
from weights_conversion.qwen_vision import vision_targets

TABLE = PrefixTable(parts=(
    Part("lm_head.weight", unembedding_targets, "text"),
    Part("model.language_model.", llm_targets, "text"),  # transformers 5.x
    Part("model.visual.", vision_targets, "vision"),
    Part("visual.", vision_targets, "vision"),
    Part("model.", llm_targets, "text"),
))
tensor_targets, implicit_zeros, extra_weight_files = TABLE.tensor_targets, TABLE.implicit_zeros, TABLE.extra_weight_files

__all__ = ["TABLE", "extra_weight_files", "implicit_zeros", "tensor_targets"]
