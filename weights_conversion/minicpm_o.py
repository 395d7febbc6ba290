"""MiniCPM-o 2.6 (``minicpmo``) and MiniCPM-V 2.6 (``minicpmv``): where each checkpoint prefix goes.

On-disk names (the released modules; no tensor index of the release could be found, see
``tests/fixtures/hub/SOURCES.md``): ``llm.model.*`` and ``llm.lm_head.weight`` (the Qwen2 LLM,
:func:`weights_conversion.qwen2_llm.llm_targets`), ``vpm.*`` (the navit SigLIP,
:func:`weights_conversion.navit_siglip.navit_siglip_targets`), ``resampler.*``
(:func:`weights_conversion.resampler.resampler_targets`), ``apm.*`` (the Whisper encoder,
:func:`weights_conversion.whisper_encoder.whisper_encoder_targets`; its key projections have no
bias) and ``audio_projection_layer.*``. The TTS head (``tts.*``: ChatTTS and its DVAE) is not part of
the thinker and is skipped by name; ``audio_avg_pooler`` has no tensors.

Example:
    >>> from hooked_avllm.architectures.minicpm_o.config import config_from_hf, tiny_config_json
    >>> cfg = config_from_hf(tiny_config_json())
    >>> [t.param for t in tensor_targets("resampler.attn.out_proj.bias", cfg)], tensor_targets("tts.emb_text.weight", cfg)
    (['vision_proj.attn.out.bias'], [])
"""

from __future__ import annotations

from weights_conversion.navit_siglip import navit_siglip_targets
from weights_conversion.prefix_table import Part, PrefixTable, unembedding_targets
from weights_conversion.qwen2_llm import llm_targets
from weights_conversion.resampler import resampler_targets
from weights_conversion.whisper_encoder import (
    pooled_projector_targets,
    whisper_encoder_implicit_zeros,
    whisper_encoder_targets,
)

SKIPPED_PREFIXES = ("tts.",)

TABLE = PrefixTable(
    parts=(
        Part("llm.lm_head.weight", unembedding_targets, "text"),
        Part("llm.model.", llm_targets, "text"),
        Part("vpm.", lambda rest, v: navit_siglip_targets(rest, v.navit, prefix="vision."), "vision"),
        Part("resampler.", lambda rest, v: resampler_targets(rest, v.resampler, prefix="vision_proj."), "vision"),
        Part("apm.", lambda rest, a: whisper_encoder_targets(rest, a, prefix="audio."), "audio"),
        Part("audio_projection_layer.", lambda rest, a: pooled_projector_targets(rest, prefix="audio_proj."), "audio"),
    ),
    skipped=SKIPPED_PREFIXES,
    ignored=(r"llm\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
    zeros=lambda cfg: whisper_encoder_implicit_zeros(cfg.audio, prefix="audio.") if cfg.audio is not None else [],
)
tensor_targets, implicit_zeros, extra_weight_files = TABLE.tensor_targets, TABLE.implicit_zeros, TABLE.extra_weight_files

__all__ = ["SKIPPED_PREFIXES", "TABLE", "extra_weight_files", "implicit_zeros", "tensor_targets"]
