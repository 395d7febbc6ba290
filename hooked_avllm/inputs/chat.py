"""The chat rendering every family's prompt builder shares: user text with media placeholders,
chat messages, the chat template, token ids.

A user prompt is plain text in which the checkpoint's placeholder strings (bare or with their
bracket tokens) mark where media go; media of a kind that has no placeholder go before the text
(images, then videos, then audio: ``vocabulary.PROMPT_MEDIA_ORDER``). A prompt may also be a list
of chat messages in the Hugging Face format, whose content items ``{"type": "video"}`` etc. are
the placeholders. The conversation is rendered with the checkpoint's chat template (the family's
default system prompt unless another is given); the family's prompt builder then turns each
placeholder into its media block and builds the layout.

Example:
    >>> parts = split_placeholders("Describe <|VIDEO|> briefly.", {"video": "<|VIDEO|>"})
    >>> [(p.kind, p.text) for p in parts]
    [('text', 'Describe '), ('video', ''), ('text', ' briefly.')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from hooked_avllm.inputs.errors import InputError, describe
from hooked_avllm.vocabulary import PROMPT_MEDIA_ORDER

MediaKind = Literal["image", "video", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = PROMPT_MEDIA_ORDER  # type: ignore[assignment]
MEDIA_ARGUMENT = {"image": "images=", "video": "video=", "audio": "audio="}  # prepare()'s argument of each kind


@dataclass(frozen=True)
class PromptPart:
    """A piece of a user message: text, or the place of one media item."""

    kind: Literal["text", "image", "video", "audio"]
    text: str = ""


def split_placeholders(
    text: str, placeholders: dict[str, str], brackets: dict[str, tuple[str, str]] | None = None
) -> list[PromptPart]:
    """Split user text at media placeholders (bare, or wrapped in their bracket tokens)."""
    patterns = []
    for kind, token in placeholders.items():
        if brackets and kind in brackets:
            start, end = brackets[kind]
            patterns.append(f"(?P<{kind}_b>{re.escape(start + token + end)})")
        patterns.append(f"(?P<{kind}>{re.escape(token)})")
    if not patterns:
        return [PromptPart("text", text)] if text else []
    parts: list[PromptPart] = []
    position = 0
    for match in re.finditer("|".join(patterns), text):
        if match.start() > position:
            parts.append(PromptPart("text", text[position : match.start()]))
        kind = match.lastgroup.removesuffix("_b")
        parts.append(PromptPart(kind))  # type: ignore[arg-type]
        position = match.end()
    if position < len(text):
        parts.append(PromptPart("text", text[position:]))
    return parts


def place_media(parts: list[PromptPart], counts: dict[str, int], where: str = "the prompt") -> list[PromptPart]:
    """Check placeholder counts against the media given; put media without placeholders first.

    Raises if a kind has placeholders but not as many as media items of that kind.
    """
    present = {kind: sum(p.kind == kind for p in parts) for kind in MEDIA_KINDS}
    leading: list[PromptPart] = []
    for kind in MEDIA_KINDS:
        given = counts.get(kind, 0)
        if present[kind] == 0:
            leading += [PromptPart(kind)] * given
        elif present[kind] != given:
            raise InputError(
                f"{where} has {present[kind]} {kind} placeholder(s) but {given} {kind} input(s) were given. "
                f"Give one {kind} per placeholder, or remove the placeholders to put the media before the text."
            )
    return leading + parts


def conversation(
    parts: Sequence[PromptPart], system_prompt: str | None | bool, default_system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages (Hugging Face format) for one user turn, with the system prompt first.

    ``system_prompt=None`` uses the model's default (``default_system_prompt``; Qwen2.5-Omni's
    "You are Qwen, a virtual human ..."); ``False`` leaves the system message out (the template
    may add its own).
    """
    content = [{"type": "text", "text": p.text} if p.kind == "text" else {"type": p.kind} for p in parts]
    messages: list[dict[str, Any]] = []
    if system_prompt is None:
        system_prompt = default_system_prompt
    if system_prompt is not False and system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": str(system_prompt)}]})
    messages.append({"role": "user", "content": content})
    return messages


def check_message(message: Any, index: int, media_items: bool = True) -> None:
    """One chat message in the Hugging Face format, or an :class:`InputError` naming what is wrong:
    a dict with a string ``"role"`` and a ``"content"`` that is a string or a list of items (dicts
    ``{"type": "text", "text": ...}`` or, with ``media_items``, ``{"type": "image" | "video" |
    "audio"[, kind: value]}``).

    Example:
        >>> check_message({"role": "user", "content": [{"type": "txt", "text": "hi"}]}, 0)
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: chat message 0's content item 0 has type 'txt'; use 'text', 'image', 'video' or 'audio' (e.g. {'type': 'text', 'text': 'Hi'})
    """
    example = '{"role": "user", "content": "Hi"}'
    if not isinstance(message, dict):
        raise InputError(f"chat message {index} is {describe(message)}; each message must be a dict like {example}.")
    missing = [key for key in ("role", "content") if key not in message]
    if missing:
        raise InputError(f"chat message {index} {message!r:.80} has no {' or '.join(repr(k) for k in missing)}; "
                         f"each message needs both, e.g. {example}.")
    if not isinstance(message["role"], str) or not message["role"]:
        raise InputError(f"chat message {index} has role {message['role']!r}; a role is a string such as 'user', "
                         "'assistant' or 'system'.")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, (list, tuple)):
        raise InputError(f"chat message {index}'s content is {describe(content)}; content is a string or a list of "
                         "items such as {'type': 'text', 'text': 'Hi'}.")
    kinds = ("text", *MEDIA_KINDS) if media_items else ("text",)
    for k, item in enumerate(content):
        where = f"chat message {index}'s content item {k}"
        if not isinstance(item, dict):
            raise InputError(f"{where} is {describe(item)}; content items are dicts such as {{'type': 'text', 'text': "
                             "'Hi'}" + (" or {'type': 'image'}" if media_items else "") + ".")
        kind = item.get("type") or next((k for k in MEDIA_KINDS if k in item), None)
        if kind in MEDIA_KINDS and not media_items:
            raise InputError(f"{where} has type {kind!r}, but this model's chat content holds text only: pass the "
                             f"{kind} as prepare({MEDIA_ARGUMENT[kind]}...) and the words as {{'type': 'text', 'text': 'Hi'}}")
        if kind not in kinds:
            raise InputError(f"{where} has type {kind!r}; use {', '.join(repr(k) for k in kinds[:-1])} or "
                             f"{kinds[-1]!r} (e.g. {{'type': 'text', 'text': 'Hi'}})")
        if kind == "text" and not isinstance(item.get("text"), str):
            raise InputError(f"{where} is a text item whose 'text' is {describe(item.get('text'))}; give it a string.")


def messages_media(
    messages: Sequence[dict[str, Any]], system_prompt: str | None | bool, default_system_prompt: str | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """Normalise user-given chat messages: media items become bare placeholders.

    Returns the messages to render and the media found, in order, as ``(kind, value or None)``.
    A system message is added (see :func:`conversation`) when the first message is not one.
    Malformed messages raise (:func:`check_message`).
    """
    clean: list[dict[str, Any]] = []
    media: list[tuple[str, Any]] = []
    for index, message in enumerate(messages):
        check_message(message, index)
        content = message["content"]
        if isinstance(content, str):
            clean.append({"role": message["role"], "content": content})
            continue
        items = []
        for item in content:
            kind = item.get("type") or next(k for k in MEDIA_KINDS if k in item)
            if kind == "text":
                items.append({"type": "text", "text": item["text"]})
            else:
                media.append((kind, item.get(kind)))
                items.append({"type": kind})
        clean.append({"role": message["role"], "content": items})
    if clean and clean[0]["role"] != "system":
        head = conversation([], system_prompt, default_system_prompt)[:-1]
        clean = head + clean
    return clean, media


def check_options(**options: Any) -> None:
    """The prompt options every family's ``prepare`` shares, checked once where they come in: an
    :class:`InputError` naming the option and its value. Options not given here are not checked.

    Example:
        >>> check_options(padding_side="middle")
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: padding_side='middle': pick 'left' (the default, what generate needs) or 'right'
    """
    flags = ("chat_template", "add_generation_prompt", "chunk_input")
    for name, value in options.items():
        if name == "padding_side" and value not in ("left", "right"):
            raise InputError(f"padding_side={value!r}: pick 'left' (the default, what generate needs) or 'right'")
        if name in flags and not isinstance(value, bool):
            raise InputError(f"{name}={value!r}: pass True or False")
        if name in ("use_audio_in_video", "use_image_id") and value is not None and not isinstance(value, bool):
            raise InputError(f"{name}={value!r}: pass True, False or None (the model's default)")
        if name == "system_prompt" and value is not None and not isinstance(value, (str, bool)):
            raise InputError(f"system_prompt={describe(value)}: pass a string, None (the model's default) or False (none)")
        if name == "system_prompt" and value is True:
            raise InputError("system_prompt=True: pass a string, None (the model's default) or False (none)")
        if name == "video_fps" and value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
        ):
            raise InputError(f"video_fps={value!r}: a frame rate must be a positive number of frames per second (e.g. 2.0)")


def render(
    tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
    fallback: Callable[[list[dict[str, Any]], bool], str] | None = None,
) -> str:
    """Render messages with the tokenizer's chat template; a tokenizer without one uses the
    family's ``fallback`` renderer (messages, add_generation_prompt) -> text, or raises."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    if fallback is None:
        raise InputError("the tokenizer has no chat template; pass chat_template=False with rendered text, "
                         "or load a checkpoint whose tokenizer has one")
    return fallback(messages, add_generation_prompt)


def tokenize(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text (no extra special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
