"""Qwen2.5-Omni thinker (``qwen2_5_omni``, ``qwen2_5_omni_thinker``): the Qwen2.5-VL vision half plus
a Whisper-style audio encoder run in 2-second chunks; TMRoPE positions at 25 ids per second, and
with ``use_audio_in_video`` the video's audio track interleaved with its frames in 2-second chunks."""

from hooked_avllm.architectures.qwen2_5_omni.family import AudioProjector, Qwen25Omni

FAMILY = Qwen25Omni()

__all__ = ["FAMILY", "AudioProjector", "Qwen25Omni"]
