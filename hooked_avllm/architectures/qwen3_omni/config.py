"""Qwen3-Omni's config: the thinker's ``config.json`` (full model or thinker alone) parsed into
our dataclasses.

The LLM is Qwen3-MoE: :class:`MoETextConfig` adds the expert settings, the per-head q/k RMSNorm
and interleaved M-RoPE to :class:`~hooked_avllm.config.TextConfig`. The towers keep their own
configs (:class:`~hooked_avllm.towers.aut_audio.AuTConfig`,
:class:`~hooked_avllm.towers.qwen3_vision.Qwen3VisionConfig`). Talker and code2wav settings are
not read (only the thinker is built).

Example:
    >>> import json
    >>> cfg = config_from_hf(json.load(open("tests/fixtures/hub/Qwen__Qwen3-Omni-30B-A3B-Instruct/config.json")))
    >>> cfg.text.n_experts, cfg.text.top_k, cfg.text.mrope_section, cfg.vision.deepstack_visual_indexes
    (128, 8, (24, 20, 20), (8, 16, 24))
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from hooked_avllm.config import AVLLMConfig, TextConfig, TokenIds
from hooked_avllm.towers.aut_audio import AuTConfig
from hooked_avllm.towers.qwen3_vision import Qwen3VisionConfig

ARCHITECTURE = "qwen3_omni_moe_thinker"
IM_END, END_OF_TEXT = 151645, 151643


@dataclass
class MoETextConfig(TextConfig):
    """A Qwen3-MoE LLM: :class:`~hooked_avllm.config.TextConfig` with Qwen3-Omni's defaults:
    ``d_expert`` wide experts, ``top_k`` of ``n_experts`` per token (weights renormalised when
    ``norm_topk_prob``), RMSNorm on each query/key head (``qk_norm``), interleaved M-RoPE over
    ``mrope_section``, no q/k/v biases. Layers in ``mlp_only_layers`` (or off the
    ``decoder_sparse_step`` grid) use a dense ``d_mlp`` MLP instead."""

    d_expert: int = 768
    n_experts: int = 128
    top_k: int = 8
    norm_topk_prob: bool = True
    qk_norm: bool = True
    mrope_interleaved: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    qkv_bias: bool = False


def _rope(text: dict) -> tuple[float, tuple[int, ...], bool]:
    params = text.get("rope_parameters") or {}
    legacy = text.get("rope_scaling") or {}
    theta = params.get("rope_theta", text.get("rope_theta", 1e6))
    section = params.get("mrope_section") or legacy.get("mrope_section") or [24, 20, 20]
    interleaved = bool(params.get("interleaved", params.get("mrope_interleaved",
                                                            legacy.get("interleaved", legacy.get("mrope_interleaved", True)))))
    return float(theta), tuple(int(s) for s in section), interleaved


def text_config(text: dict, tie: bool) -> MoETextConfig:
    """The LLM section (``thinker_config.text_config``) in transformers' key names."""
    theta, section, interleaved = _rope(text)
    d_model, n_heads = text["hidden_size"], text["num_attention_heads"]
    if text.get("attention_bias"):
        raise ValueError("text_config.attention_bias=True: Qwen3-Omni's attention has no biases; this checkpoint is another model")
    if text.get("shared_expert_intermediate_size"):
        raise ValueError("text_config.shared_expert_intermediate_size > 0: a shared expert is not part of Qwen3-Omni")
    return MoETextConfig(
        vocab_size=text["vocab_size"], d_model=d_model, d_mlp=text.get("intermediate_size", 768),
        n_layers=text["num_hidden_layers"], n_heads=n_heads, n_kv_heads=text.get("num_key_value_heads", n_heads),
        d_head=text.get("head_dim") or d_model // n_heads, rope_theta=theta, mrope_section=section,
        rms_norm_eps=text.get("rms_norm_eps", 1e-6), act=text.get("hidden_act", "silu"), tie_word_embeddings=tie,
        max_position_embeddings=text.get("max_position_embeddings", 65536), qkv_bias=False,
        d_expert=text.get("moe_intermediate_size", 768), n_experts=text.get("num_experts", 128),
        top_k=text.get("num_experts_per_tok", 8), norm_topk_prob=bool(text.get("norm_topk_prob", True)),
        qk_norm=bool(text.get("use_qk_norm", True)), mrope_interleaved=interleaved,
        decoder_sparse_step=int(text.get("decoder_sparse_step", 1)),
        mlp_only_layers=tuple(int(x) for x in text.get("mlp_only_layers") or ()),
    )


def thinker_section(config_json: dict) -> dict:
    return config_json["thinker_config"] if "thinker_config" in config_json else config_json


def config_from_hf(config_json: dict) -> AVLLMConfig:
    """Parse a Qwen3-Omni ``config.json`` (``qwen3_omni_moe`` with its ``thinker_config``, or a
    ``qwen3_omni_moe_thinker`` saved alone)."""
    th = thinker_section(config_json)
    for section in ("text_config", "audio_config", "vision_config"):
        if section not in th:
            raise ValueError(f"config.json has no thinker {section}; it is not a Qwen3-Omni checkpoint")
    text = th["text_config"]

    def token(name: str) -> int | None:
        value = th.get(f"{name}_token_id", th.get(f"{name}_token_index"))
        return int(value) if value is not None else None

    tokens = TokenIds(
        image=token("image"), video=token("video"), vision_start=token("vision_start"), vision_end=token("vision_end"),
        audio=token("audio"), audio_start=token("audio_start"), audio_end=token("audio_end"),
        pad=token("pad") if token("pad") is not None else END_OF_TEXT, eos=(IM_END, END_OF_TEXT),
    )
    missing = [f.name for f in fields(tokens) if f.name not in ("pad", "eos") and getattr(tokens, f.name) is None]
    if missing:
        raise ValueError(f"config.json's thinker_config lacks the token ids {missing}; positions need every one")
    tie = bool(th.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    return AVLLMConfig(
        architecture=ARCHITECTURE,
        text=text_config(text, tie),
        vision=Qwen3VisionConfig.from_hf(th["vision_config"]),
        audio=AuTConfig.from_hf(th["audio_config"]),
        tokens=tokens,
        position_id_per_second=float(th.get("position_id_per_seconds", 13)),
        seconds_per_chunk=float(th.get("seconds_per_chunk", 2)),
        source_model_type=config_json.get("model_type", ""),
        torch_dtype=config_json.get("torch_dtype") or config_json.get("dtype") or th.get("dtype"),
    )


def config_from_dict(d: dict) -> AVLLMConfig:
    """The inverse of ``AVLLMConfig.to_dict`` for this family."""
    text = dict(d["text"])
    for key in ("mrope_section", "mlp_only_layers"):
        if text.get(key) is not None:
            text[key] = tuple(text[key])
    tokens = dict(d["tokens"])
    tokens["eos"] = tuple(tokens.get("eos") or ())
    return AVLLMConfig(
        architecture=d["architecture"], text=MoETextConfig(**text),
        vision=Qwen3VisionConfig.from_dict(d["vision"]) if d.get("vision") else None,
        audio=AuTConfig.from_dict(d["audio"]) if d.get("audio") else None,
        tokens=TokenIds(**tokens),
        **{k: d[k] for k in ("position_id_per_second", "seconds_per_chunk", "source_model_type", "torch_dtype", "extra") if k in d},
    )


def tiny_config_json(n_layers: int = 2, vocab_size: int = 152064) -> dict:
    """A tiny random Qwen3-Omni thinker ``config.json`` in transformers' names (tests, the docs).

    The token ids are the released ones, so the vocabulary must cover them."""
    return {
        "model_type": "qwen3_omni_moe_thinker", "architectures": ["Qwen3OmniMoeThinkerForConditionalGeneration"],
        "audio_token_id": 151675, "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "audio_start_token_id": 151669, "audio_end_token_id": 151670,
        "position_id_per_seconds": 13, "seconds_per_chunk": 2,
        "text_config": {
            "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
            "num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": n_layers, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6, "norm_topk_prob": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3], "interleaved": True},
        },
        "audio_config": {
            "num_mel_bins": 128, "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 4,
            "encoder_ffn_dim": 64, "output_dim": 64, "downsample_hidden_size": 8, "n_window": 50,
            "n_window_infer": 200, "max_source_positions": 1500,
        },
        "vision_config": {
            "depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": 64,
            "patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3,
            "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 2],
        },
    }


__all__ = ["ARCHITECTURE", "MoETextConfig", "config_from_dict", "config_from_hf", "text_config", "tiny_config_json"]
