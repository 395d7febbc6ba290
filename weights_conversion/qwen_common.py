"""Pieces shared by the Qwen2.5-Omni and Qwen2.5-VL converters: the LLM and the ViT."""

from __future__ import annotations

import re

from hooked_avllm.config import AVLLMConfig, TextConfig, TokenIds, VisionConfig
from weights_conversion.targets import Target


def rope_settings(text: dict) -> tuple[float, tuple[int, ...]]:
    """(theta, mrope_section) from either the legacy ``rope_scaling`` + ``rope_theta`` spelling of
    the released configs or the ``rope_parameters`` that transformers 5.x writes."""
    params = text.get("rope_parameters") or {}
    legacy = text.get("rope_scaling") or {}
    theta = params.get("rope_theta", text.get("rope_theta", 1e6))
    section = params.get("mrope_section") or legacy.get("mrope_section") or [16, 24, 24]
    return float(theta), tuple(int(s) for s in section)


def text_config(text: dict, tie: bool) -> TextConfig:
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


def vision_config(v: dict) -> VisionConfig:
    rope = v.get("rope_parameters") or {}
    return VisionConfig(
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


def llm_targets(rest: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Targets of a decoder tensor named relative to the LLM (``layers.3.mlp.up_proj.weight``)."""
    t = cfg.text
    q, kv = t.n_heads * t.d_head, t.n_kv_heads * t.d_head
    if rest == "embed_tokens.weight":
        return [Target("embed.weight")]
    if rest == "norm.weight":
        return [Target("ln_final.w")]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if not m or int(m.group(1)) >= t.n_layers:
        return None
    block, leaf = f"blocks.{m.group(1)}", m.group(2)
    fused = {"q_proj": (0, q), "k_proj": (q, q + kv), "v_proj": (q + kv, q + 2 * kv)}
    m = re.fullmatch(r"self_attn\.([qkv]_proj)\.(weight|bias)", leaf)
    if m:
        return [Target(f"{block}.attn.qkv.{m.group(2)}", fused[m.group(1)])]
    simple = {
        "self_attn.o_proj.weight": (f"{block}.attn.out.weight", None),
        "mlp.gate_proj.weight": (f"{block}.mlp.gate_up.weight", (0, t.d_mlp)),
        "mlp.up_proj.weight": (f"{block}.mlp.gate_up.weight", (t.d_mlp, 2 * t.d_mlp)),
        "mlp.down_proj.weight": (f"{block}.mlp.down.weight", None),
        "input_layernorm.weight": (f"{block}.ln1.w", None),
        "post_attention_layernorm.weight": (f"{block}.ln2.w", None),
    }
    if leaf in simple:
        param, rows = simple[leaf]
        return [Target(param, rows)]
    return None


def vision_targets(rest: str, cfg: AVLLMConfig) -> list[Target] | None:
    """Targets of a ViT tensor named relative to ``visual.`` (separate q/k/v or fused qkv)."""
    v = cfg.vision
    d = v.d_model
    if rest == "patch_embed.proj.weight":
        return [Target("vision.patch_embed.weight", shape=(d, v.patch_dim))]
    merger = {
        "merger.ln_q.weight": "vision_proj.ln_q.w",
        "merger.mlp.0.weight": "vision_proj.fc1.weight",
        "merger.mlp.0.bias": "vision_proj.fc1.bias",
        "merger.mlp.2.weight": "vision_proj.fc2.weight",
        "merger.mlp.2.bias": "vision_proj.fc2.bias",
    }
    if rest in merger:
        return [Target(merger[rest])]
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
    if not m or int(m.group(1)) >= v.depth:
        return None
    block, leaf = f"vision.blocks.{m.group(1)}", m.group(2)
    m = re.fullmatch(r"attn\.(q|k|v|qkv)\.(weight|bias)", leaf)
    if m:
        rows = {"q": (0, d), "k": (d, 2 * d), "v": (2 * d, 3 * d), "qkv": None}[m.group(1)]
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows)]
    m = re.fullmatch(r"(attn\.proj|mlp\.gate_proj|mlp\.up_proj|mlp\.down_proj|norm1|norm2)\.(weight|bias)", leaf)
    if m:
        part, kind = m.groups()
        if part.startswith("norm"):
            return [Target(f"{block}.ln{part[-1]}.w")] if kind == "weight" else None
        if part == "attn.proj":
            return [Target(f"{block}.attn.out.{kind}")]
        if part == "mlp.down_proj":
            return [Target(f"{block}.mlp.down.{kind}")]
        rows = (0, v.d_mlp) if part == "mlp.gate_proj" else (v.d_mlp, 2 * v.d_mlp)
        return [Target(f"{block}.mlp.gate_up.{kind}", rows)]
    return None
