"""Media and prompts to model inputs: audio features, vision patches, prompt ids, token layout.

Example:
    >>> from hooked_avllm.inputs import prepare_inputs, PreprocessorConfig        # doctest: +SKIP
    >>> inputs = prepare_inputs(tokenizer, PreprocessorConfig(), None,          # doctest: +SKIP
    ...                         prompt="Describe what you see and hear.", video="clip.mp4")
"""

import importlib

# Imported on first use, so that loading a model never needs Pillow or PyAV.
_LAZY = {
    'Audio': 'hooked_avllm.inputs.audio',
    'AudioFeatures': 'hooked_avllm.inputs.audio',
    'audio_features': 'hooked_avllm.inputs.audio',
    'audio_token_count': 'hooked_avllm.inputs.audio',
    'load_audio': 'hooked_avllm.inputs.audio',
    'InputError': 'hooked_avllm.inputs.errors',
    'MediaFileNotFoundError': 'hooked_avllm.inputs.errors',
    'MediaSpan': 'hooked_avllm.inputs.layout',
    'TokenLayout': 'hooked_avllm.inputs.layout',
    'OMNI_SYSTEM_PROMPT': 'hooked_avllm.inputs.model_spec',
    'MediaTokens': 'hooked_avllm.inputs.model_spec',
    'ModelInputSpec': 'hooked_avllm.inputs.model_spec',
    'PreprocessorConfig': 'hooked_avllm.inputs.preprocessor_config',
    'ModelInputs': 'hooked_avllm.inputs.processor',
    'prepare_inputs': 'hooked_avllm.inputs.processor',
    'resample': 'hooked_avllm.inputs.resample',
    'Image': 'hooked_avllm.inputs.vision',
    'Video': 'hooked_avllm.inputs.vision',
    'image_patches': 'hooked_avllm.inputs.vision',
    'load_image': 'hooked_avllm.inputs.vision',
    'load_video': 'hooked_avllm.inputs.vision',
    'patchify': 'hooked_avllm.inputs.vision',
    'video_patches': 'hooked_avllm.inputs.vision',
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hooked_avllm.inputs' has no attribute {name!r}")


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
    "image_patches",
    "load_audio",
    "load_image",
    "load_video",
    "patchify",
    "prepare_inputs",
    "resample",
    "video_patches",
]
