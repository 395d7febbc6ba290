"""Prompt text to token ids: chat template, media placeholders, placeholder expansion.

A user prompt is plain text in which ``<|IMAGE|>``, ``<|VIDEO|>`` and ``<|AUDIO|>`` (the
checkpoint's placeholder tokens, bare or with their bracket tokens) mark where media go; media of a
kind that has no placeholder go before the text (images, then videos, then audio). A prompt may
also be a list of chat messages in the Hugging Face format, whose content items
``{"type": "video"}`` etc. are the placeholders. The conversation is rendered with the
checkpoint's chat template (the Qwen2.5-Omni default system prompt unless another is given), then
each placeholder token becomes its media block (:mod:`.media_blocks`: the right number of tokens;
audio-in-video: the interleaved chunks of :mod:`.interleave` inside ``<|audio_bos|> ...
<|audio_eos|>``), from which the layout is built.

Example:
    >>> parts = split_placeholders("Describe <|VIDEO|> briefly.", {"video": "<|VIDEO|>"})
    >>> [(p.kind, p.text) for p in parts]
    [('text', 'Describe '), ('video', ''), ('text', ' briefly.')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.model_spec import ModelInputSpec

MediaKind = Literal["image", "video", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "video", "audio")


@dataclass(frozen=True)
class PromptPart:
    """A piece of a user message: text, or the place of one media item."""

    kind: Literal["text", "image", "video", "audio"]
    text: str = ""


def placeholder_strings(tokenizer: Any, spec: ModelInputSpec) -> dict[str, str]:
    """The placeholder token text of each media kind (e.g. ``{"image": "<|IMAGE|>", ...}``)."""
    ids = spec.tokens.placeholders
    return dict(zip(ids, tokenizer.convert_ids_to_tokens(list(ids.values()))))


def bracket_strings(tokenizer: Any, spec: ModelInputSpec) -> dict[str, tuple[str, str]]:
    """The opening and closing bracket token text around each media kind's placeholders."""
    t = spec.tokens
    vision = tuple(tokenizer.convert_ids_to_tokens([t.vision_start, t.vision_end]))
    brackets = {"image": vision, "video": vision}
    if t.audio is not None:
        brackets["audio"] = tuple(tokenizer.convert_ids_to_tokens([t.audio_start, t.audio_end]))
    return brackets


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
    parts: Sequence[PromptPart], system_prompt: str | None | bool, spec: ModelInputSpec
) -> list[dict[str, Any]]:
    """Chat messages (Hugging Face format) for one user turn, with the system prompt first.

    ``system_prompt=None`` uses the model's default (Qwen2.5-Omni's "You are Qwen, a virtual
    human ..."); ``False`` leaves the system message out (the template may add its own).
    """
    content = [{"type": "text", "text": p.text} if p.kind == "text" else {"type": p.kind} for p in parts]
    messages: list[dict[str, Any]] = []
    if system_prompt is None:
        system_prompt = spec.default_system_prompt
    if system_prompt is not False and system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": str(system_prompt)}]})
    messages.append({"role": "user", "content": content})
    return messages


def messages_media(
    messages: Sequence[dict[str, Any]], system_prompt: str | None | bool, spec: ModelInputSpec
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
        head = conversation([], system_prompt, spec)[:-1]
        clean = head + clean
    return clean, media


def render(
    tokenizer: Any, messages: list[dict[str, Any]], spec: ModelInputSpec, add_generation_prompt: bool = True
) -> str:
    """Render messages with the tokenizer's chat template (or the Qwen format if it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    placeholders = placeholder_strings(tokenizer, spec)
    brackets = bracket_strings(tokenizer, spec)
    text = ""
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "".join(
                item.get("text", "")
                if item["type"] == "text"
                else brackets[item["type"]][0] + placeholders[item["type"]] + brackets[item["type"]][1]
                for item in content
            )
        text += f"<|im_start|>{message['role']}\n{content}<|im_end|>\n"
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def tokenize(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text (no extra special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def audio_in_video_ids(
    grid_thw: tuple[int, int, int], second_per_grid: float, n_audio: int, spec: ModelInputSpec
) -> list[int]:
    """Tokens that replace the ``<|VIDEO|>`` placeholder of a video with its audio track."""
    t = spec.tokens
    runs = spec.rules.audio_in_video_runs(grid_thw, second_per_grid, n_audio, spec)
    ids = [t.audio_start]
    for kind, count in runs:
        ids += [t.video if kind == "video" else t.audio] * count
    return ids + [t.audio_end]
