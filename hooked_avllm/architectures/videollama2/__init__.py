"""VideoLLaMA2.1-AV (``videollama2_qwen2``): SigLIP frames -> STC connector, BEATs audio -> MLP
projector, a Qwen2 LLM with 1D rotary; video tokens then audio tokens at the one media placeholder."""

from hooked_avllm.architectures.videollama2.family import VideoLLaMA2

FAMILY = VideoLLaMA2()

__all__ = ["FAMILY", "VideoLLaMA2"]
