"""The VideoLLaMA2.1-AV family object."""

from __future__ import annotations

from hooked_avllm.architectures.base import Architecture


class VideoLLaMA2(Architecture):
    name = "videollama2"
    model_types = ("videollama2_qwen2",)
    hub_ids = ("DAMO-NLP-SG/VideoLLaMA2.1-7B-AV",)
    description = "VideoLLaMA2.1-AV: SigLIP + STC connector, BEATs + MLP projector, Qwen2 LLM with 1D rotary"
