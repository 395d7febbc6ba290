"""Encoder towers, one file per family, and the projectors that map them into the LLM."""

from hooked_avllm.towers.aut_audio import AuTAudioTower, AuTConfig, AuTOutputHead
from hooked_avllm.towers.qwen3_vision import Qwen3VisionConfig, Qwen3VisionProjector, Qwen3VisionTower
from hooked_avllm.towers.qwen_vision import PatchMerger, QwenVisionTower
from hooked_avllm.towers.whisper_audio import QwenOmniAudioTower

__all__ = [
    "AuTAudioTower", "AuTConfig", "AuTOutputHead", "PatchMerger", "Qwen3VisionConfig", "Qwen3VisionProjector",
    "Qwen3VisionTower", "QwenOmniAudioTower", "QwenVisionTower",
]
