"""VideoLLaMA2.1-AV (``videollama2_qwen2``): checkpoint names -> our parameters.

On-disk names (the released code's modules; no tensor index of the release could be found, see
``docs/adding_an_architecture.md``):

* ``model.embed_tokens.weight``, ``model.layers.N.*``, ``model.norm.weight``, ``lm_head.weight``:
  the Qwen2 LLM (Qwen2.5's names: :func:`weights_conversion.qwen_common.llm_targets`);
* ``model.vision_tower.vision_tower.vision_model.*``: SigLIP (layers past the selected hidden
  state, ``post_layernorm`` and ``head`` are skipped); without ``vision_model.`` as transformers
  5.x writes it;
* ``model.mm_projector.*``: the STC connector (timm ``RegStage`` names);
* ``model.audio_tower.*``: BEATs, in the shards or in the separate ``audio_tower.bin`` state dict
  the config's ``mm_audio_tower`` names (read with ``torch.load(weights_only=True)``);
* ``model.mm_projector_a.{0,2}.*``: the audio projector.

Skipped: ``rotary_emb.inv_freq`` buffers some checkpoints carry (recomputed).

Example:
    >>> from hooked_avllm.architectures.videollama2.config import tiny_config
    >>> tensor_targets("model.mm_projector_a.2.bias", tiny_config())
    [Target(param='audio_proj.linears.1.bias', rows=None, shape=None)]
"""

from __future__ import annotations

import re
from pathlib import Path

from hooked_avllm.architectures.videollama2.config import config_from_hf
from hooked_avllm.config import AVLLMConfig
from weights_conversion.beats import beats_targets
from weights_conversion.qwen_common import llm_targets
from weights_conversion.siglip import mlp_projector_targets, siglip_targets, stc_targets
from weights_conversion.targets import Target

SIGLIP = "model.vision_tower.vision_tower.vision_model."
SIGLIP_5X = "model.vision_tower.vision_tower."  # transformers 5.x writes SigLIP's names without vision_model.

__all__ = ["config_from_hf", "extra_weight_files", "implicit_zeros", "tensor_targets"]


def tensor_targets(name: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Where checkpoint tensor ``name`` goes (``[]``: skipped on purpose, ``None``: unknown)."""
    if name == "lm_head.weight":
        return [] if cfg.text.tie_word_embeddings else [Target("unembed.weight")]
    if re.fullmatch(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", name):
        return []
    for prefix in (SIGLIP, SIGLIP_5X):
        if name.startswith(prefix):
            return siglip_targets(name[len(prefix):], cfg.vision.siglip, prefix="vision.") if cfg.vision else None
    if name.startswith("model.mm_projector_a."):
        rest = name[len("model.mm_projector_a."):]
        return mlp_projector_targets(rest, cfg.audio.projector_depth, "audio_proj.") if cfg.audio else None
    if name.startswith("model.mm_projector."):
        return stc_targets(name[len("model.mm_projector."):], cfg.vision.stc, prefix="vision_proj.") if cfg.vision else None
    if name.startswith("model.audio_tower."):
        return beats_targets(name[len("model.audio_tower."):], cfg.audio.beats, prefix="audio.") if cfg.audio else None
    if name.startswith("model."):
        return llm_targets(name[len("model."):], cfg)
    return None


def implicit_zeros(cfg: AVLLMConfig) -> list[Target]:
    return []


def extra_weight_files(config_json: dict) -> list[str]:
    """Pickled state dicts beside the shards that hold weights too: the ``audio_tower.bin`` that
    ``mm_audio_tower`` names (its file name; a path from the training machine keeps its last part)."""
    tower = config_json.get("mm_audio_tower")
    if isinstance(tower, str) and tower.endswith(".bin"):
        return [Path(tower).name]
    return []
