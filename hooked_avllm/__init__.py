"""hooked_avllm: hooked, clean-room reimplementations of audio-visual LLMs for interpretability."""

from hooked_avllm.cache import AVActivationCache
from hooked_avllm.config import AudioConfig, AVLLMConfig, TextConfig, TokenIds, VisionConfig
from hooked_avllm.model import HookedAVLLM

__all__ = ["AVActivationCache", "AVLLMConfig", "AudioConfig", "HookedAVLLM", "TextConfig", "TokenIds", "VisionConfig"]
__version__ = "0.1.0"
