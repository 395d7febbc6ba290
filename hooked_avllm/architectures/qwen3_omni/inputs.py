"""Qwen3-Omni's input pipeline settings: its rules for the shared Qwen prompt builder and its
preprocessing defaults.

* Rules (:class:`~hooked_avllm.architectures.qwen.rules.InputRules`): AuT's audio token count (13 per 100
  mel frames plus the tail's), the token-by-token time merge of a video with its sound track,
  and the float position ids of :mod:`hooked_avllm.architectures.qwen3_omni.positions`.
* Preprocessing: the released ``preprocessor_config.json`` (Whisper log-mel, 128 bins, 300 s;
  16-pixel patches, merge 2, ``min_pixels`` 3136, ``max_pixels`` 12845056); video frames follow
  qwen-omni-utils at 32-pixel factors (128-768 tokens of 32x32 pixels per frame). A checkpoint
  folder's own ``preprocessor_config.json`` overrides these.

Example:
    >>> QWEN3_PREPROCESSOR.patch_size, QWEN3_PREPROCESSOR.resize_factor
    (16, 32)
    >>> QWEN3_RULES.audio_token_counts(torch.tensor([100, 250])).tolist()
    [13, 33]
"""

from __future__ import annotations

import torch  # noqa: F401  (doctest)

from hooked_avllm.architectures.qwen3_omni.positions import (
    layout_positions,
    time_ordered_runs,
)
from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.rules import InputRules
from hooked_avllm.towers.aut_audio import aut_token_counts

FACTOR = 32  # patch 16 x merge 2
QWEN3_PREPROCESSOR = PreprocessorConfig(
    patch_size=16, min_pixels=3136, max_pixels=12845056,
    video_min_pixels=128 * FACTOR * FACTOR, video_max_pixels=768 * FACTOR * FACTOR,
    video_total_pixels=int(128000 * FACTOR * FACTOR * 0.9),
)
QWEN3_RULES = InputRules(aut_token_counts, time_ordered_runs, layout_positions)

__all__ = ["QWEN3_PREPROCESSOR", "QWEN3_RULES"]
