"""The Qwen prompt pieces: the placeholder and bracket token strings of a checkpoint, the tokens of
a video with its sound track, and the im_start/im_end format for tokenizers without a template.

Example:
    >>> from hooked_avllm.architectures.qwen.spec import MediaTokens, ModelInputSpec
    >>> spec = ModelInputSpec(tokens=MediaTokens(image=201, video=202, audio=200, vision_start=205,
    ...                       vision_end=206, audio_start=203, audio_end=204))
    >>> audio_in_video_ids((2, 4, 4), 1.0, 10, spec)[:3]
    [203, 202, 202]
"""

from __future__ import annotations

from typing import Any

from hooked_avllm.architectures.qwen.spec import ModelInputSpec


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


def render_without_template(
    tokenizer: Any, spec: ModelInputSpec, messages: list[dict[str, Any]], add_generation_prompt: bool = True
) -> str:
    """The Qwen chat format (``<|im_start|>role\\n...<|im_end|>``) for tokenizers without a template."""
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


__all__ = ["audio_in_video_ids", "bracket_strings", "placeholder_strings", "render_without_template"]
