"""The toy model organism: a small Qwen2.5-Omni thinker and its Qwen2.5-VL base, trained on
synthetic audio-visual scenes, shipped with the library.

The toy answers congruent clips correctly, but on counterfactual clips (an object with another
object's sound) its "What do you hear?" answers follow the picture far more often than chance,
while the true sound stays decodable from the audio positions. See ``checkpoints/omni/README.md``
for the measured numbers and ``python -m hooked_avllm.toy.train`` to retrain.

Example:
    >>> from hooked_avllm.toy import ToyScenes, load_toy
    >>> model = load_toy("omni")                                              # doctest: +SKIP
    >>> clip = ToyScenes(seed=1).clip("counterfactual", 0)                    # doctest: +SKIP
    >>> inputs = model.prepare(prompt="What do you hear?", **clip.media())    # doctest: +SKIP
    >>> logits, cache = model.run_with_cache(inputs)                          # doctest: +SKIP
"""

from pathlib import Path

from hooked_avllm.toy.configs import toy_config
from hooked_avllm.toy.data import (
    OBJECTS,
    QUESTIONS,
    Clip,
    K,
    ToyScenes,
    answer,
    parse_answer,
)
import torch

from hooked_avllm.model import HookedAVLLM

CHECKPOINTS = Path(__file__).parent / "checkpoints"
OMNI_PATH = CHECKPOINTS / "omni"
VL_PATH = CHECKPOINTS / "vl"


def load_toy(kind: str = "omni", dtype=None, device: str = "cpu"):
    """The shipped toy audio-visual model (``"omni"``) or its vision-language base (``"vl"``)."""
    if kind not in ("omni", "vl"):
        raise ValueError(f"kind must be 'omni' or 'vl', got {kind!r}")
    return HookedAVLLM.from_pretrained(CHECKPOINTS / kind, dtype=dtype or torch.float32, device=device)


__all__ = [
    "CHECKPOINTS",
    "OBJECTS",
    "OMNI_PATH",
    "QUESTIONS",
    "VL_PATH",
    "Clip",
    "K",
    "ToyScenes",
    "answer",
    "load_toy",
    "parse_answer",
    "toy_config",
]
