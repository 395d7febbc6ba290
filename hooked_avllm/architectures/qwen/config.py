"""Config sections shared by the Qwen2.5 families (Qwen2.5-VL, Qwen2.5-Omni): the LLM, the ViT and
the layout's special token ids, from a ``config.json`` in the released or the transformers 5.x
spelling.

Example:
    >>> theta, section = rope_settings({"rope_theta": 1e6, "rope_scaling": {"mrope_section": [16, 24, 24]}})
    >>> theta, section
    (1000000.0, (16, 24, 24))
"""

from __future__ import annotations

from hooked_avllm.config import TextConfig, TokenIds
from hooked_avllm.towers.qwen_vision import QwenVisionConfig


def rope_settings(text: dict) -> tuple[float, tuple[int, ...]]:
    """(theta, mrope_section) from either the legacy ``rope_scaling`` + ``rope_theta`` spelling of
    the released configs or the ``rope_parameters`` that transformers 5.x writes."""
    params = text.get("rope_parameters") or {}
    legacy = text.get("rope_scaling") or {}
    theta = params.get("rope_theta", text.get("rope_theta", 1e6))
    section = params.get("mrope_section") or legacy.get("mrope_section") or [16, 24, 24]
    return float(theta), tuple(int(s) for s in section)


def text_config(text: dict, tie: bool) -> TextConfig:
    """The LLM section in transformers' key names (``tie``: the model-level tie flag)."""
    theta, section = rope_settings(text)
    d_model, n_heads = text["hidden_size"], text["num_attention_heads"]
    return TextConfig(
        vocab_size=text["vocab_size"],
        d_model=d_model,
        d_mlp=text["intermediate_size"],
        n_layers=text["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=text.get("num_key_value_heads", n_heads),
        d_head=text.get("head_dim") or d_model // n_heads,
        rope_theta=theta,
        mrope_section=section,
        rms_norm_eps=text.get("rms_norm_eps", 1e-6),
        act=text.get("hidden_act", "silu"),
        tie_word_embeddings=tie,
        max_position_embeddings=text.get("max_position_embeddings", 32768),
    )


def vision_config(v: dict) -> QwenVisionConfig:
    """The ViT section (``vision_config``) in transformers' key names."""
    rope = v.get("rope_parameters") or {}
    return QwenVisionConfig(
        depth=v["depth"],
        d_model=v.get("hidden_size") or v["embed_dim"],
        d_mlp=v["intermediate_size"],
        n_heads=v["num_heads"],
        out_dim=v["out_hidden_size"],
        patch_size=v.get("patch_size", 14),
        temporal_patch_size=v.get("temporal_patch_size", 2),
        spatial_merge_size=v.get("spatial_merge_size", 2),
        window_size=v.get("window_size", 112),
        fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", (7, 15, 23, 31))),
        in_channels=v.get("in_channels", v.get("in_chans", 3)),
        act=v.get("hidden_act", "silu"),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )


def token_id(d: dict, *names: str) -> int | None:
    for name in names:
        if d.get(name) is not None:
            return int(d[name])
    return None


def token_ids(d: dict, audio: bool) -> TokenIds:
    """The layout's special token ids from a Qwen config section (``*_token_id`` or the older
    ``*_token_index`` names); audio ids only when the model has an audio tower."""
    def get(name: str) -> int | None:
        return token_id(d, f"{name}_token_id", f"{name}_token_index")

    tokens = TokenIds(
        image=get("image"),
        video=get("video"),
        vision_start=get("vision_start"),
        vision_end=get("vision_end"),
        audio=get("audio") if audio else None,
        audio_start=get("audio_start") if audio else None,
        audio_end=get("audio_end") if audio else None,
        pad=get("pad"),
        eos=tuple(x for x in [get("eos")] if x is not None),
    )
    if tokens.vision_start is None:
        raise ValueError("config.json lacks vision_start_token_id; position ids cannot be computed without it")
    return tokens


__all__ = ["rope_settings", "text_config", "token_id", "token_ids", "vision_config"]
