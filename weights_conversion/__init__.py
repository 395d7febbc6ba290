"""Converters from Hugging Face checkpoints to HookedAVLLM weights: one module per family.

Each family module exposes two plain functions:

* ``config_from_hf(config_json: dict) -> AVLLMConfig``
* ``tensor_targets(name: str, cfg: AVLLMConfig) -> list[Target] | None`` — where a checkpoint
  tensor goes (``None``: not ours, e.g. the talker), plus ``implicit_zeros(cfg)`` for parameter
  slices the checkpoint leaves out (biases a projection does not have).
"""

from weights_conversion import qwen2_5_omni, qwen2_5_vl
from weights_conversion.targets import Target

# model_type in config.json -> converter module
CONVERTERS = {
    "qwen2_5_omni": qwen2_5_omni,
    "qwen2_5_omni_thinker": qwen2_5_omni,
    "qwen2_5_vl": qwen2_5_vl,
}

__all__ = ["CONVERTERS", "Target", "qwen2_5_omni", "qwen2_5_vl"]
