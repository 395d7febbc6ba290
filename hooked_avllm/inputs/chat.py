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

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.vocabulary import PROMPT_MEDIA_ORDER

MediaKind = Literal["image", "video", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = PROMPT_MEDIA_ORDER  # type: ignore[assignment]


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


def messages_media(
    messages: Sequence[dict[str, Any]], system_prompt: str | None | bool, default_system_prompt: str | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """Normalise user-given chat messages: media items become bare placeholders.

    Returns the messages to render and the media found, in order, as ``(kind, value or None)``.
    A system message is added (see :func:`conversation`) when the first message is not one.
    """
    clean: list[dict[str, Any]] = []
    media: list[tuple[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError(
                'Each chat message must be a dict with "role" and "content", e.g. {"role": "user", "content": "Hi"}.'
            )
        content = message["content"]
        if isinstance(content, str):
            clean.append({"role": message["role"], "content": content})
            continue
        items = []
        for item in content:
            kind = (
                item.get("type")
                if item.get("type") in MEDIA_KINDS
                else next((k for k in MEDIA_KINDS if k in item), None)
            )
            if kind is None:
                items.append({"type": "text", "text": item.get("text", "")})
            else:
                media.append((kind, item.get(kind)))
                items.append({"type": kind})
        clean.append({"role": message["role"], "content": items})
    if clean and clean[0]["role"] != "system":
        head = conversation([], system_prompt, default_system_prompt)[:-1]
        clean = head + clean
    return clean, media


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
