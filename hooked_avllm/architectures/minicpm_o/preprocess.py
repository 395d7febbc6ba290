"""MiniCPM-o 2.6's media preprocessing and prompt text, as its released processor and ``chat()`` make them
(the family's preprocessing API, gathered from :mod:`.image`, :mod:`.audio`, :mod:`.video`, :mod:`.chat`).

Pure functions (no tokenizer, no model); each step is the released one:

* Images (``MiniCPMVImageProcessor``): RGB, then slicing. An image of at most 448² pixels has no
  grid; its one slice is the image resized (PIL bicubic on uint8, small images *upscaled*) to
  about 448² pixels with both sides multiples of 14. A larger image gets a grid ``[cols, rows]``
  of at most ``max_slice_nums`` cells chosen by aspect ratio: the slices are a downscaled source
  image then the cells of the image resized to ``cell × grid``, row-major. Pixels are ``/255``
  then ``(x - 0.5) / 0.5`` in float32, channels first. ``tgt_size`` = (H/14, W/14).
* Image placeholder: ``[<image_id>k</image_id>]<image>`` + ``<unk>``×64 + ``</image>``, then for
  a grid its rows of ``<slice><unk>×64</slice>`` joined by ``"\\n"``.
* Audio (``WhisperFeatureExtractor`` with 80 bins, as the processor calls it): the arrays of one
  message are concatenated, cut into pieces of at most 30 s, each piece zero-padded to 30 s, its
  log-mel computed on the padded buffer (so the max-8 clamp sees the whole buffer), then cut to
  ``ceil(samples / 160)`` frames; pieces are right-padded with 0.0 into one batch.
  Placeholders are counted per original array: ``m = ((n - 1) // 2 + 1 - 2) // 2 + 1`` tokens
  for ``n`` frames (25 per second), in groups of at most 25 between ``<|audio_start|>`` and
  ``<|audio_end|>`` (``chunk_input``).
* Video: the vision-only recipe (about one frame a second, at most 64, ``max_slice_nums=2``,
  no image ids) and the audio-visual "omni" recipe (one unit per started second: ``<unit>``,
  the frame at ``t = i + 1`` s as one 448²-ish slice, and that second of sound).
* Chat text: without audio the tokenizer's Qwen2.5 template (its default system prompt
  inserted); with audio (or ``use_tts_template``) the TTS template, which has no default
  system prompt and ends with ``<|im_start|>assistant\\n<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>``.

Example:
    >>> from PIL import Image
    >>> cfg = MiniCPMPreprocessorConfig()
    >>> sliced = slice_image(Image.new("RGB", (1280, 720)), cfg)
    >>> sliced.grid, sliced.source.size, sliced.cells[0].size
    ((3, 2), (602, 336), (490, 406))
    >>> audio_embedding_count(16000), audio_placeholder(16000).count("<unk>")
    (25, 25)
"""

from hooked_avllm.architectures.minicpm_o.audio import (  # noqa: F401 (re-exported)
    MiniCPMAudioFeatures,
    audio_chunk_sizes,
    audio_embedding_count,
    audio_features,
    audio_frame_count,
    audio_placeholder,
    audio_token_count,
    check_audio_alignment,
    merge_audio_groups,
    split_audio_pieces,
    whisper_log_mel,
)
from hooked_avllm.architectures.minicpm_o.chat import (  # noqa: F401 (re-exported)
    MiniCPMChatInputs,
    RenderedChat,
    content_text,
    expand_placeholders,
    prepare_chat,
    render_chat,
)
from hooked_avllm.architectures.minicpm_o.constants import (  # noqa: F401 (re-exported)
    AUDIO_CHUNK_SECONDS,
    AUDIO_POOL_STEP,
    AUDIO_TAG,
    AudioArray,
    HOP_LENGTH,
    IMAGE_TAG,
    ImageLike,
    N_FFT,
    N_MELS,
    OMNI_MAX_SLICE_NUMS,
    OMNI_SYSTEM_PROMPT,
    PIECE_FRAMES,
    PIECE_SAMPLES,
    PIECE_SECONDS,
    QWEN_DEFAULT_SYSTEM,
    SAMPLING_RATE,
    TTS_CHAT_TEMPLATE,
    TTS_GENERATION_PROMPT,
    UNIT_TOKEN,
    VIDEO_MAX_FRAMES,
    VIDEO_MAX_SLICE_NUMS,
)
from hooked_avllm.architectures.minicpm_o.image import (  # noqa: F401 (re-exported)
    MiniCPMPreprocessorConfig,
    PreprocessedImage,
    SlicedImage,
    as_rgb_image,
    best_resize,
    ensure_divide,
    image_placeholder,
    image_token_count,
    load_chat_template,
    normalize_slice,
    patch_rows,
    preprocess_image,
    refine_size,
    reshape_by_patch,
    slice_grid,
    slice_image,
    tgt_size,
)
from hooked_avllm.architectures.minicpm_o.video import (  # noqa: F401 (re-exported)
    OmniUnit,
    OmniVideo,
    SampledVideo,
    load_omni_video,
    load_video_frames,
    omni_content,
    omni_system_message,
    omni_unit_placeholder,
    omni_unit_token_count,
    omni_units,
    omni_video_from,
    pcm16,
    video_frame_indices,
)

__all__ = [
    "AUDIO_TAG",
    "IMAGE_TAG",
    "MiniCPMAudioFeatures",
    "MiniCPMChatInputs",
    "MiniCPMPreprocessorConfig",
    "OMNI_SYSTEM_PROMPT",
    "OmniUnit",
    "OmniVideo",
    "PreprocessedImage",
    "QWEN_DEFAULT_SYSTEM",
    "RenderedChat",
    "SampledVideo",
    "SlicedImage",
    "TTS_CHAT_TEMPLATE",
    "TTS_GENERATION_PROMPT",
    "as_rgb_image",
    "audio_chunk_sizes",
    "audio_embedding_count",
    "audio_features",
    "audio_frame_count",
    "audio_placeholder",
    "audio_token_count",
    "best_resize",
    "check_audio_alignment",
    "content_text",
    "ensure_divide",
    "expand_placeholders",
    "image_placeholder",
    "image_token_count",
    "load_chat_template",
    "load_omni_video",
    "load_video_frames",
    "merge_audio_groups",
    "normalize_slice",
    "omni_content",
    "omni_system_message",
    "omni_unit_placeholder",
    "omni_unit_token_count",
    "omni_units",
    "patch_rows",
    "pcm16",
    "prepare_chat",
    "preprocess_image",
    "refine_size",
    "render_chat",
    "reshape_by_patch",
    "slice_grid",
    "slice_image",
    "split_audio_pieces",
    "tgt_size",
    "video_frame_indices",
    "whisper_log_mel",
]
