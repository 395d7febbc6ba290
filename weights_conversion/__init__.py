"""Converters from Hugging Face checkpoints to HookedAVLLM weights: one module per family.

Each family module exposes two plain functions:

* ``config_from_hf(config_json: dict) -> AVLLMConfig``
* ``tensor_targets(name: str, cfg: AVLLMConfig) -> list[Target] | None`` — where a checkpoint
  tensor goes (``None``: not ours, e.g. the talker), plus ``implicit_zeros(cfg)`` for parameter
  slices the checkpoint leaves out (biases a projection does not have); optionally
  ``extra_weight_files(config_json)``, pickled state dicts beside the shards that hold weights
  too (read with ``torch.load(weights_only=True)``).

Tower-level mappings shared by families live beside them: ``beats.py`` (BEATs, also its official
``.pt`` checkpoints), ``siglip.py`` (SigLIP, the STC connector, MLP projectors), ``aut_audio.py`` (Qwen3-Omni's AuT),
``qwen3_vision.py`` (Qwen3-Omni's ViT and DeepStack mergers), ``qwen_common.py``.
"""

from weights_conversion import qwen2_5_omni, qwen2_5_vl, qwen3_omni, videollama2
from weights_conversion.targets import Target

# model_type in config.json -> converter module
CONVERTERS = {
    "qwen2_5_omni": qwen2_5_omni,
    "qwen2_5_omni_thinker": qwen2_5_omni,
    "qwen2_5_vl": qwen2_5_vl,
    "videollama2_qwen2": videollama2,
    "qwen3_omni_moe": qwen3_omni,
    "qwen3_omni_moe_thinker": qwen3_omni,
}

__all__ = ["CONVERTERS", "Target", "qwen2_5_omni", "qwen2_5_vl", "qwen3_omni", "videollama2"]
