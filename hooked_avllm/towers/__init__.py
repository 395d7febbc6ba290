"""Encoder towers, one file per family, and the projectors that map them into the LLM."""

from hooked_avllm.towers.qwen_vision import PatchMerger, QwenVisionTower
from hooked_avllm.towers.whisper_audio import QwenOmniAudioTower

__all__ = ["PatchMerger", "QwenOmniAudioTower", "QwenVisionTower"]
