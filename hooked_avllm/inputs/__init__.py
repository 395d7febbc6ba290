"""Media and prompts to model inputs: audio features, vision patches, prompt ids, token layout.

Example:
    >>> from hooked_avllm.inputs import prepare_inputs, PreprocessorConfig        # doctest: +SKIP
    >>> inputs = prepare_inputs(tokenizer, PreprocessorConfig(), None,          # doctest: +SKIP
    ...                         prompt="Describe what you see and hear.", video="clip.mp4")
"""

from hooked_avllm.inputs.audio import Audio, AudioFeatures, audio_features, audio_token_count, load_audio
from hooked_avllm.inputs.errors import InputError, MediaFileNotFoundError
from hooked_avllm.inputs.layout import MediaSpan, TokenLayout, carried_layout
from hooked_avllm.inputs.model_spec import OMNI_SYSTEM_PROMPT, MediaTokens, ModelInputSpec
from hooked_avllm.inputs.preprocessor_config import PreprocessorConfig
from hooked_avllm.inputs.processor import ModelInputs, prepare_inputs
from hooked_avllm.inputs.batching import concat_inputs, teacher_forced_inputs
from hooked_avllm.inputs.resample import resample
from hooked_avllm.inputs.vision import Image, Video, image_patches, load_image, load_video, patchify, video_patches

__all__ = [
    "Audio",
    "AudioFeatures",
    "Image",
    "InputError",
    "MediaFileNotFoundError",
    "MediaSpan",
    "MediaTokens",
    "ModelInputSpec",
    "ModelInputs",
    "OMNI_SYSTEM_PROMPT",
    "PreprocessorConfig",
    "TokenLayout",
    "Video",
    "audio_features",
    "audio_token_count",
    "carried_layout",
    "concat_inputs",
    "image_patches",
    "load_audio",
    "load_image",
    "load_video",
    "patchify",
    "prepare_inputs",
    "resample",
    "teacher_forced_inputs",
    "video_patches",
]
