"""MiniCPM-o's chat text as the released ``chat()`` renders it: content lists to text, the Qwen2.5
template without audio and the TTS template with it, placeholders expanded, every image and
audio of a conversation prepared.

Example:
    >>> from hooked_avllm.architectures.minicpm_o.chat import expand_placeholders
    >>> expand_placeholders("a(<image>./</image>)b", ["<I>"], [])
    'a<I>b'
"""


from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image as PILImage
from torch import Tensor

from hooked_avllm.architectures.minicpm_o.audio import (
    MiniCPMAudioFeatures,
    _samples,
    audio_features,
    audio_placeholder,
)
from hooked_avllm.architectures.minicpm_o.constants import (
    AUDIO_TAG,
    IMAGE_TAG,
    TTS_CHAT_TEMPLATE,
)
from hooked_avllm.architectures.minicpm_o.image import (
    MiniCPMPreprocessorConfig,
    PreprocessedImage,
    image_placeholder,
    preprocess_image,
)
from hooked_avllm.inputs.audio import Audio
from hooked_avllm.inputs.errors import InputError, describe
from hooked_avllm.inputs.vision import Image as ImageInput

# ---------------------------------------------------------------- chat text


def _is_image(item: Any) -> bool:
    return isinstance(item, (PILImage.Image, ImageInput))


def _is_audio(item: Any) -> bool:
    return isinstance(item, (np.ndarray, Tensor, Audio))


def content_text(content: str | Sequence[Any], omni_input: bool = False) -> tuple[str, list[Any], list[Any]]:
    """One message's content as ``chat()`` writes it: text as is, an image (PIL image or
    :class:`~hooked_avllm.inputs.Image`) as ``(<image>./</image>)``, an audio array (numpy array,
    tensor or :class:`~hooked_avllm.inputs.Audio`) as ``(<audio>./</audio>)``, joined by ``"\\n"``
    (or by nothing with ``omni_input``). Returns (text, images, audios) in order.

    Example:
        >>> content_text(["Look:", PILImage.new("RGB", (4, 4)), "What is it?"])[0]
        'Look:\\n(<image>./</image>)\\nWhat is it?'
        >>> content_text(["<unit>", PILImage.new("RGB", (4, 4)), np.zeros(16000)], omni_input=True)[0]
        '<unit>(<image>./</image>)(<audio>./</audio>)'
    """
    if not isinstance(content, (str, list, tuple)):
        raise InputError(f"a message's content is {describe(content)}; MiniCPM-o's content is a string or a list of "
                         "strings, images (PIL images) and 16-kHz audio arrays")
    items = [content] if isinstance(content, str) else list(content)
    parts, images, audios = [], [], []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif _is_image(item):
            images.append(item)
            parts.append(IMAGE_TAG)
        elif _is_audio(item):
            if not isinstance(item, Audio) and item.ndim != 1:
                raise InputError(
                    f"a message's content holds an array of shape {tuple(item.shape)}; arrays are read as 16-kHz mono "
                    "audio [samples] (as the release reads them); pass an image as a PIL image, audio as a 1-D array"
                )
            audios.append(item)
            parts.append(AUDIO_TAG)
        else:
            raise InputError(
                f"a message's content holds a {type(item).__name__}; MiniCPM-o takes strings, images (PIL images) and "
                "16-kHz audio arrays (numpy arrays or tensors); convert it to one of those"
            )
    return ("" if omni_input else "\n").join(parts), images, audios


@dataclass
class RenderedChat:
    """A rendered conversation: its text with image/audio tags, the media in order, the message
    index of each audio array (the release merges the arrays of one message), the template used."""

    text: str
    images: list[Any]
    audios: list[Any]
    audio_groups: list[int]
    tts_template: bool


def _jinja_render(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)
    except TemplateError as err:
        raise InputError(f"the chat template failed on these messages: {err}") from err


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    *,
    chat_template: str | None = None,
    use_tts_template: bool = False,
    omni_input: bool = False,
    add_generation_prompt: bool = True,
) -> RenderedChat:
    """Messages ``{"role", "content": str | list}`` -> the prompt text ``chat()`` renders.

    Any audio in the messages, or ``use_tts_template``, selects the TTS template (no default
    system turn; the generation prompt ends with the four speech tokens); otherwise
    ``chat_template`` (the tokenizer's Qwen2.5 template, :func:`load_chat_template`) renders
    them, adding its default system prompt unless the first message is a system message.

    Example:
        >>> render_chat([{"role": "user", "content": ["hi", np.zeros(16000)]}]).text
        '<|im_start|>user\\nhi\\n(<audio>./</audio>)<|im_end|>\\n<|im_start|>assistant\\n<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>'
    """
    if not messages:
        raise InputError("render_chat got no messages; pass [{'role': 'user', 'content': ...}]")
    rendered, images, audios, groups = [], [], [], []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"chat message {i} is {describe(message)}; each message is a dict with 'role' and 'content'")
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            raise InputError(f"chat message {i} {dict(message)!r:.80} has no {' or '.join(repr(k) for k in missing)}; each "
                             "message needs both, e.g. {'role': 'user', 'content': 'Hi'}")
        role = message["role"]
        if role not in ("system", "user", "assistant"):
            raise InputError(f"message {i} has role {role!r}; MiniCPM-o's chat takes 'system', 'user' and 'assistant'")
        if i == 0 and role == "assistant":
            raise InputError("the first message is an assistant message; start with a 'user' (or 'system') message")
        text, msg_images, msg_audios = content_text(message["content"], omni_input)
        images += msg_images
        audios += msg_audios
        groups += [i] * len(msg_audios)
        rendered.append({"role": role, "content": text})
    tts = use_tts_template or bool(audios)
    if tts:
        text = _jinja_render(TTS_CHAT_TEMPLATE, rendered, add_generation_prompt)
    else:
        if chat_template is None:
            raise InputError(
                "render_chat needs chat_template= (the tokenizer's Qwen2.5 template: tokenizer.chat_template or "
                "load_chat_template(checkpoint_folder)) for messages without audio"
            )
        text = _jinja_render(chat_template, rendered, add_generation_prompt)
    return RenderedChat(text, images, audios, groups, tts)


def expand_placeholders(text: str, image_placeholders: Sequence[str], audio_placeholders: Sequence[str]) -> str:
    """Replace the image and audio tags of ``text``, in order, by their placeholders.

    Example:
        >>> expand_placeholders("a(<image>./</image>)b(<audio>./</audio>)", ["<I>"], ["<A>"])
        'a<I>b<A>'
    """
    pattern = re.compile(f"({re.escape(IMAGE_TAG)}|{re.escape(AUDIO_TAG)})")
    chunks = pattern.split(text)
    n_images, n_audios = chunks.count(IMAGE_TAG), chunks.count(AUDIO_TAG)
    if n_images != len(image_placeholders) or n_audios != len(audio_placeholders):
        raise InputError(
            f"the text holds {n_images} image and {n_audios} audio tags but {len(image_placeholders)} image and "
            f"{len(audio_placeholders)} audio placeholders were given; give one per tag (do not write "
            f"{IMAGE_TAG!r} or {AUDIO_TAG!r} in the text yourself)"
        )
    images, audios = iter(image_placeholders), iter(audio_placeholders)
    return "".join(next(images) if c == IMAGE_TAG else next(audios) if c == AUDIO_TAG else c for c in chunks)


@dataclass
class MiniCPMChatInputs:
    """Everything ``chat()``'s processor call makes from a conversation, before tokenization:
    the final text (placeholders expanded), each image's slices, the audio features."""

    text: str
    images: list[PreprocessedImage]
    audio: MiniCPMAudioFeatures | None
    image_placeholders: list[str]
    audio_placeholders: list[str]
    tts_template: bool


def prepare_chat(
    messages: Sequence[Mapping[str, Any]],
    config: MiniCPMPreprocessorConfig | None = None,
    *,
    chat_template: str | None = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
    chunk_input: bool = True,
    omni_input: bool = False,
    use_tts_template: bool = False,
    add_generation_prompt: bool = True,
) -> MiniCPMChatInputs:
    """A conversation -> text and media inputs, as ``chat()`` with these arguments makes them
    (``use_image_id=None`` keeps the config's; image ``k`` of the conversation gets id ``k``).

    Example:
        >>> out = prepare_chat([{"role": "user", "content": [np.zeros(16000), "Transcribe."]}])
        >>> out.text.count("<unk>"), out.audio.feature_lens.tolist()
        (25, [100])
    """
    config = config or MiniCPMPreprocessorConfig()
    chat = render_chat(messages, chat_template=chat_template, use_tts_template=use_tts_template,
                       omni_input=omni_input, add_generation_prompt=add_generation_prompt)
    ids = config.use_image_id if use_image_id is None else bool(use_image_id)
    images = [preprocess_image(image, config, max_slice_nums) for image in chat.images]
    image_phs = [
        image_placeholder(im.grid, k, use_image_id=ids, n_queries=config.image_feature_size, slice_mode=config.slice_mode)
        for k, im in enumerate(images)
    ]
    audio = None
    audio_phs: list[str] = []
    if chat.audios:
        audio = audio_features(chat.audios, chat.audio_groups)
        audio_phs = [audio_placeholder(_samples(a).shape[0], chunk_input) for a in chat.audios]
    text = expand_placeholders(chat.text, image_phs, audio_phs)
    return MiniCPMChatInputs(text, images, audio, image_phs, audio_phs, chat.tts_template)


__all__ = ["MiniCPMChatInputs", "RenderedChat", "content_text", "expand_placeholders", "prepare_chat", "render_chat"]
