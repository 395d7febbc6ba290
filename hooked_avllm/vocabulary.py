"""The one kind vocabulary: what a sequence position can be, its integer code, the groups of kinds
analysis tools accept, the order media go in when a prompt has no placeholder for them, and the
model attributes that hold the towers.

Every other module imports these names from here; nothing else defines a list of kinds.

Example:
    >>> KIND_CODE["audio"], KINDS[GENERATED]
    (1, 'generated')
    >>> kind_codes("media")
    (1, 2, 3)
"""

from __future__ import annotations

from typing import Sequence

MEDIA_KINDS: tuple[str, ...] = ("audio", "video", "image")  # what a media position can hold; a layout has a mask each
KINDS: tuple[str, ...] = ("text", *MEDIA_KINDS, "generated", "padding")  # every position is exactly one of these
TEXT, AUDIO, VIDEO, IMAGE, GENERATED, PADDING = range(len(KINDS))
KIND_CODE: dict[str, int] = {name: code for code, name in enumerate(KINDS)}

# names that stand for several kinds wherever kinds are chosen (knockout rules, position selection)
KIND_GROUPS: dict[str, tuple[str, ...]] = {
    "media": MEDIA_KINDS,
    "any": tuple(k for k in KINDS if k != "padding"),
}

# media without a placeholder in a prompt go before its text in this order
PROMPT_MEDIA_ORDER: tuple[str, ...] = ("image", "video", "audio")

# model attributes that hold the encoders and their projectors into the LLM; hook names start with these
TOWER_SLOTS: tuple[str, ...] = ("vision", "vision_proj", "audio", "audio_proj")
ENCODER_PREFIXES: tuple[str, ...] = tuple(f"{slot}." for slot in TOWER_SLOTS)


def kind_codes(kinds: str | Sequence[str], *, allow_padding: bool = False) -> tuple[int, ...]:
    """The sorted codes of kind names and groups (``"media"``, ``"any"``).

    Raises ``ValueError`` naming the unknown kind and the accepted ones.

    Example:
        >>> kind_codes(["generated", "video"])
        (2, 4)
    """
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    codes: set[int] = set()
    for name in names:
        if name in KIND_GROUPS:
            codes.update(KIND_CODE[k] for k in KIND_GROUPS[name])
        elif name in KIND_CODE and (allow_padding or name != "padding"):
            codes.add(KIND_CODE[name])
        else:
            accepted = [k for k in KINDS if allow_padding or k != "padding"] + list(KIND_GROUPS)
            raise ValueError(f"unknown kind {name!r}; use one of {', '.join(accepted)}")
    return tuple(sorted(codes))


__all__ = [
    "AUDIO", "ENCODER_PREFIXES", "GENERATED", "IMAGE", "KINDS", "KIND_CODE", "KIND_GROUPS", "MEDIA_KINDS", "PADDING",
    "PROMPT_MEDIA_ORDER", "TEXT", "TOWER_SLOTS", "VIDEO", "kind_codes",
]
