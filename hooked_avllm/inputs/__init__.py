"""Family-free inputs: media decoding and features, segments, the :class:`TokenLayout`, position
selection, prepared :class:`ModelInputs` (ids, mask, layout and the family's media), the input
contract a family declares (:class:`InputSpec`), chat rendering and batching.

How a family turns a prompt with media into inputs is its own (``model.prepare``; the Qwen
families' pipeline: :mod:`hooked_avllm.architectures.qwen`).

Example:
    >>> from hooked_avllm.inputs import load_audio, teacher_forced_inputs   # doctest: +SKIP
    >>> clip = load_audio("dog.wav")                                        # doctest: +SKIP
    >>> inputs = model.prepare(prompt="What do you hear?", audio=clip)     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from hooked_avllm.inputs.audio import Audio, AudioFeatures, WhisperFeatureConfig, audio_features, load_audio
from hooked_avllm.inputs.batching import concat_inputs, teacher_forced_inputs
from hooked_avllm.inputs.deprecated import MOVED
from hooked_avllm.inputs.errors import InputError, MediaFileNotFoundError
from hooked_avllm.inputs.layout import MediaSpan, TokenLayout, carried_layout
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.inputs.resample import resample
from hooked_avllm.inputs.segments import Segment
from hooked_avllm.inputs.select import position_mask, select_positions
from hooked_avllm.inputs.spec import InputSpec
from hooked_avllm.inputs.vision import Image, Video

def __getattr__(name: str) -> Any:
    if name not in MOVED:
        raise AttributeError(f"module 'hooked_avllm.inputs' has no attribute {name!r}")
    module = MOVED[name]
    hint = ("model.load_video(...) / model.load_image(...) load media with the model's own preprocessing"
            if name in ("load_video", "load_image", "PreprocessorConfig") else f"import it from {module}")
    warnings.warn(f"hooked_avllm.inputs.{name} moved to {module} (the old path goes in 0.3); {hint}",
                  DeprecationWarning, stacklevel=2)
    value = getattr(importlib.import_module(module), "audio_token_counts" if name == "audio_token_count" else name)
    return value


__all__ = [
    "Audio", "AudioFeatures", "Image", "InputError", "InputSpec", "MediaFileNotFoundError", "MediaSpan", "ModelInputs",
    "Segment", "TokenLayout", "Video", "WhisperFeatureConfig", "audio_features", "carried_layout", "concat_inputs",
    "load_audio", "position_mask", "resample", "select_positions", "teacher_forced_inputs",
]
