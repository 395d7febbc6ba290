"""Deprecated names of ``hooked_avllm.inputs`` (removed in 0.3): what moved where when the Qwen
families' input pipeline left the family-free inputs (``hooked_avllm.inputs.<name>`` still
resolves, with a ``DeprecationWarning``).

Example:
    >>> MOVED["prepare_inputs"]
    'hooked_avllm.architectures.qwen.prepare'
"""

MOVED = {
    "PreprocessorConfig": "hooked_avllm.architectures.qwen.preprocessor_config",
    "load_image": "hooked_avllm.architectures.qwen.vision",
    "load_video": "hooked_avllm.architectures.qwen.vision",
    "image_patches": "hooked_avllm.architectures.qwen.vision",
    "video_patches": "hooked_avllm.architectures.qwen.vision",
    "patchify": "hooked_avllm.architectures.qwen.vision",
    "prepare_inputs": "hooked_avllm.architectures.qwen.prepare",
    "ModelInputSpec": "hooked_avllm.architectures.qwen.spec",
    "MediaTokens": "hooked_avllm.architectures.qwen.spec",
    "OMNI_SYSTEM_PROMPT": "hooked_avllm.architectures.qwen.spec",
    "audio_token_count": "hooked_avllm.towers.whisper_audio",
}
