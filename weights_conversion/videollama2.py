"""VideoLLaMA2.1-AV (``videollama2_qwen2``): where each checkpoint prefix goes.

On-disk names (the released code's modules; no tensor index of the release could be found, see
``docs/adding_an_architecture.md``):

* ``model.embed_tokens.weight``, ``model.layers.N.*``, ``model.norm.weight``, ``lm_head.weight``:
  the Qwen2 LLM (Qwen2.5's names: :func:`weights_conversion.qwen2_llm.llm_targets`);
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
    [Target(param='audio_proj.linears.1.bias', rows=None, shape=None, index=None)]
"""

from __future__ import annotations

from pathlib import Path

from weights_conversion.beats import beats_targets
from weights_conversion.prefix_table import Part, PrefixTable, unembedding_targets
from weights_conversion.qwen2_llm import llm_targets
from weights_conversion.siglip import mlp_projector_targets, siglip_targets, stc_targets

SIGLIP = "model.vision_tower.vision_tower.vision_model."
SIGLIP_5X = "model.vision_tower.vision_tower."  # transformers 5.x writes SigLIP's names without vision_model.


def extra_files(config_json: dict) -> list[str]:
    """State dicts beside the shards that hold weights too: the ``audio_tower.bin`` (or ``.pt``,
    ``.safetensors``) that ``mm_audio_tower`` names, by its file name only (a path from the
    training machine keeps its last part, so nothing outside the checkpoint folder is read)."""
    tower = config_json.get("mm_audio_tower")
    if isinstance(tower, str) and tower.endswith((".bin", ".pt", ".safetensors")):
        return [Path(tower).name]
    return []


TABLE = PrefixTable(
    parts=(
        Part("lm_head.weight", unembedding_targets, "text"),
        Part(SIGLIP, lambda rest, v: siglip_targets(rest, v.siglip, prefix="vision."), "vision"),
        Part(SIGLIP_5X, lambda rest, v: siglip_targets(rest, v.siglip, prefix="vision."), "vision"),
        Part("model.mm_projector_a.", lambda rest, a: mlp_projector_targets(rest, a.projector_depth, "audio_proj."), "audio"),
        Part("model.mm_projector.", lambda rest, v: stc_targets(rest, v.stc, prefix="vision_proj."), "vision"),
        Part("model.audio_tower.", lambda rest, a: beats_targets(rest, a.beats, prefix="audio."), "audio"),
        Part("model.", llm_targets, "text"),
    ),
    ignored=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
    extra_files=extra_files,
)
tensor_targets, implicit_zeros, extra_weight_files = TABLE.tensor_targets, TABLE.implicit_zeros, TABLE.extra_weight_files

__all__ = ["TABLE", "extra_weight_files", "implicit_zeros", "tensor_targets"]
