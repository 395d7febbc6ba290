"""The released processor's and recipes' fixed values (audio rate, pieces, tags, templates, video settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.inputs.audio import Audio
from hooked_avllm.inputs.vision import Image as ImageInput

SAMPLING_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
PIECE_SECONDS = 30  # WhisperFeatureExtractor's chunk_length: every piece is padded to (and at most) 30 s
PIECE_SAMPLES = PIECE_SECONDS * SAMPLING_RATE  # 480,000
PIECE_FRAMES = PIECE_SAMPLES // HOP_LENGTH  # 3,000
AUDIO_POOL_STEP = 2  # config.audio_pool_step
AUDIO_CHUNK_SECONDS = 1.0  # chat()'s chunk length for chunk_input placeholders

IMAGE_TAG = "(<image>./</image>)"  # what chat() writes for an image in a message
AUDIO_TAG = "(<audio>./</audio>)"  # ... and for an audio array
UNIT_TOKEN = "<unit>"
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
OMNI_SYSTEM_PROMPT = {
    "en": "You are a helpful assistant. You can accept video, audio and text input and output voice and text. ",
    "zh": "你是一个AI助手。你能接受视频，音频和文本输入并输出语音和文本。",
}
TTS_GENERATION_PROMPT = "<|im_start|>assistant\n<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>"
# The TTS chat template's behaviour (each message as <|im_start|>{role}\n{content}<|im_end|>\n, no
# default system turn, the four speech tokens after the generation prompt), written here as jinja.
TTS_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>' -}}"
    "{%- endif -%}"
)

VIDEO_MAX_FRAMES = 64  # the README's MAX_NUM_FRAMES for video chat
VIDEO_MAX_SLICE_NUMS = 2  # the README's video settings: max_slice_nums=2, use_image_id=False
OMNI_MAX_SLICE_NUMS = 1  # omni chat: max_slice_nums=1, use_image_id=False

ImageLike = Union[str, Path, PILImage.Image, np.ndarray, Tensor, ImageInput]
AudioArray = Union[np.ndarray, Tensor, Audio]


__all__ = ["AUDIO_CHUNK_SECONDS", "AUDIO_POOL_STEP", "AUDIO_TAG", "AudioArray", "HOP_LENGTH", "IMAGE_TAG", "ImageLike", "N_FFT", "N_MELS", "OMNI_MAX_SLICE_NUMS", "OMNI_SYSTEM_PROMPT", "PIECE_FRAMES", "PIECE_SAMPLES", "PIECE_SECONDS", "QWEN_DEFAULT_SYSTEM", "SAMPLING_RATE", "TTS_CHAT_TEMPLATE", "TTS_GENERATION_PROMPT", "UNIT_TOKEN", "VIDEO_MAX_FRAMES", "VIDEO_MAX_SLICE_NUMS"]
