"""The input pipeline the Qwen families share (Qwen2.5-VL, Qwen2.5-Omni, Qwen3-Omni): their input
contract and token ids (:mod:`.spec`), config sections (:mod:`.config`), image/video loading and
patching (:mod:`.vision`, :mod:`.sizing`, :mod:`.preprocessor_config`), media blocks and the
audio-in-video interleaving (:mod:`.media_blocks`, :mod:`.interleave`, :mod:`.rules`), M-RoPE /
TMRoPE positions (:mod:`.positions`), the prompt builder (:mod:`.prepare`) and the layout parser
for bare ids (:mod:`.parse`). Not a family itself: it has no ``FAMILY``.

Example:
    >>> from hooked_avllm.architectures.qwen import PreprocessorConfig
    >>> PreprocessorConfig().resize_factor
    28
"""

from hooked_avllm.architectures.qwen.parse import layout_from_ids
from hooked_avllm.architectures.qwen.prepare import prepare_inputs
from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.spec import OMNI_SYSTEM_PROMPT, VL_SYSTEM_PROMPT, MediaTokens, ModelInputSpec
from hooked_avllm.architectures.qwen.vision import image_patches, load_image, load_video, patchify, video_patches

__all__ = [
    "MediaTokens", "ModelInputSpec", "OMNI_SYSTEM_PROMPT", "PreprocessorConfig", "VL_SYSTEM_PROMPT", "image_patches",
    "layout_from_ids", "load_image", "load_video", "patchify", "prepare_inputs", "video_patches",
]
