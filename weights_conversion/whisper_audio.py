"""Checkpoint names -> our parameters for Qwen2.5-Omni's Whisper-style audio tower and its
projection (``audio_tower.*``)."""

from __future__ import annotations

import re

from hooked_avllm.towers.whisper_audio import QwenAudioConfig
from weights_conversion.targets import Target


def audio_targets(rest: str, a: QwenAudioConfig) -> list[Target] | None:
    """Targets of an audio-tower tensor named relative to ``audio_tower.``: the encoder under
    ``audio.``, its output projection under ``audio_proj.``; the unused ``audio_bos_eos_token`` is
    skipped.

    Example:
        >>> cfg = QwenAudioConfig(n_mels=8, d_model=8, n_layers=1, n_heads=2, d_mlp=16, out_dim=8)
        >>> [t.param for t in audio_targets("layers.0.fc1.bias", cfg)], audio_targets("audio_bos_eos_token.weight", cfg)
        (['audio.blocks.0.mlp.fc1.bias'], [])
    """
    d = a.d_model
    top = {
        "conv1.weight": "audio.conv1.weight",
        "conv1.bias": "audio.conv1.bias",
        "conv2.weight": "audio.conv2.weight",
        "conv2.bias": "audio.conv2.bias",
        "ln_post.weight": "audio.ln_post.w",
        "ln_post.bias": "audio.ln_post.b",
        "proj.weight": "audio_proj.proj.weight",
        "proj.bias": "audio_proj.proj.bias",
    }
    if rest in top:
        return [Target(top[rest])]
    if rest == "audio_bos_eos_token.weight":
        return []  # in the checkpoint but never used by the reference's forward
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
    if not m or int(m.group(1)) >= a.n_layers:
        return None
    block, leaf = f"audio.blocks.{m.group(1)}", m.group(2)
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m:
        rows = {"q": (0, d), "k": (d, 2 * d), "v": (2 * d, 3 * d)}[m.group(1)]
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows)]
    names = {
        "self_attn.out_proj": "attn.out",
        "fc1": "mlp.fc1",
        "fc2": "mlp.fc2",
    }
    m = re.fullmatch(r"(self_attn\.out_proj|fc1|fc2|self_attn_layer_norm|final_layer_norm)\.(weight|bias)", leaf)
    if m:
        part, kind = m.groups()
        if part.endswith("layer_norm"):
            ln = "ln1" if part.startswith("self_attn") else "ln2"
            return [Target(f"{block}.{ln}.{'w' if kind == 'weight' else 'b'}")]
        return [Target(f"{block}.{names[part]}.{kind}")]
    return None


def audio_implicit_zeros(a: QwenAudioConfig) -> list[Target]:
    """The key projection has no bias in the checkpoint: its slice of the fused bias is 0."""
    d = a.d_model
    return [Target(f"audio.blocks.{i}.attn.qkv.bias", (d, 2 * d)) for i in range(a.n_layers)]


__all__ = ["audio_implicit_zeros", "audio_targets"]
