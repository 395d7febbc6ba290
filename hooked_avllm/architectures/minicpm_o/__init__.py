"""MiniCPM-o 2.6 (``minicpmo``) and MiniCPM-V 2.6 (``minicpmv``): a navit SigLIP whose slices the
perceiver resampler turns into 64 rows each, a Whisper-medium encoder with 1-s block-causal
attention and a pooled MLP projector (25 rows a second), a Qwen2 LLM with 1D rotary; images
sliced, audio in groups of 25, a video with its sound as one ``<unit>`` a second."""

from hooked_avllm.architectures.minicpm_o.family import MiniCPMInputSpec, MiniCPMO

FAMILY = MiniCPMO()

__all__ = ["FAMILY", "MiniCPMInputSpec", "MiniCPMO"]
