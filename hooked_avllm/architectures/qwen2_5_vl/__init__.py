"""Qwen2.5-VL (``qwen2_5_vl``): the Qwen ViT with window attention, the 2×2 patch merger, a Qwen2.5
LLM with 3-row M-RoPE; images and videos enter at expanded placeholder runs inside
``<|vision_start|>`` … ``<|vision_end|>``."""

from hooked_avllm.architectures.qwen2_5_vl.family import Qwen25VL, QwenVisionInputs

FAMILY = Qwen25VL()

__all__ = ["FAMILY", "Qwen25VL", "QwenVisionInputs"]
