"""Qwen3-Omni-30B-A3B (``qwen3_omni_moe``): AuT audio encoder, SigLIP2-style ViT with DeepStack
taps, Qwen3-MoE LLM (128 experts, top-8) with interleaved M-RoPE at 13 position ids per second."""

from hooked_avllm.architectures.qwen3_omni.family import Qwen3Omni

FAMILY = Qwen3Omni()

__all__ = ["FAMILY", "Qwen3Omni"]
