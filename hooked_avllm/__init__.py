"""hooked_avllm: hooked, clean-room reimplementations of audio-visual LLMs for interpretability.

The public face. Names are imported on first use, so ``import hooked_avllm.inputs`` (or any other
subpackage) does not build the model.

Example:
    >>> import hooked_avllm
    >>> hooked_avllm.AVLLMConfig.tiny().n_layers
    2
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "HookedAVLLM": "hooked_avllm.model",
    "AVActivationCache": "hooked_avllm.cache",
    "AVLLMConfig": "hooked_avllm.config",
    "TextConfig": "hooked_avllm.config",
    "TokenIds": "hooked_avllm.config",
    "ModelInputs": "hooked_avllm.inputs.model_inputs",
    "TokenLayout": "hooked_avllm.inputs.layout",
}
_MOVED = {  # old name -> (module, new name); removed in 0.3
    "VisionConfig": ("hooked_avllm.towers.qwen_vision", "QwenVisionConfig"),
    "AudioConfig": ("hooked_avllm.towers.whisper_audio", "QwenAudioConfig"),
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for readers and type checkers; at run time names load on first use
    from hooked_avllm.cache import AVActivationCache
    from hooked_avllm.config import AVLLMConfig, TextConfig, TokenIds
    from hooked_avllm.inputs.layout import TokenLayout
    from hooked_avllm.inputs.model_inputs import ModelInputs
    from hooked_avllm.model import HookedAVLLM


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        module, new = _MOVED[name]
        warnings.warn(f"hooked_avllm.{name} is now {module}.{new}; the old name goes in 0.3", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), new)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hooked_avllm' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_EXPORTS[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
