"""What a prompt builder emits, run by run, so a layout can be built rather than parsed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from hooked_avllm.inputs.errors import InputError


@dataclass
class Segment:
    """One run of a prompt as a family's prompt builder emits it: text ids, or one media item (or
    a bracketed block of them) with each token's origin.

    A simple media segment is ``n_tokens`` placeholders of id ``token_id``, all of ``kind``. A
    block (``token_kinds`` given) lists every token: ``ids``, and per token its kind (``"text"``
    for bracket tokens, or a media kind): Qwen's ``<|vision_bos|>`` + placeholders +
    ``<|vision_eos|>``, or a video with its audio interleaved; the block's bounds become the items'
    ``MediaSpan.start``/``stop``. ``time`` (seconds; audio: from the clip start, video: of the
    token's frame group), ``frame_group``/``row``/``col`` (cells of the video's token grid) are per
    token, ``None`` where not meaningful (a block's are read at its media tokens only).
    ``in_video`` ties an audio item to the video it was taken from (a block sets it itself).

    Example:
        >>> Segment.text([1, 2, 3]).n_tokens
        3
        >>> Segment("video", ids=[9, 5, 5, 10], token_kinds=["text", "video", "video", "text"]).n_tokens
        4
    """

    kind: Literal["text", "image", "video", "audio"]
    ids: list[int] | None = None
    n_tokens: int = 0
    token_id: int | None = None
    time: Tensor | None = None
    frame_group: Tensor | None = None
    row: Tensor | None = None
    col: Tensor | None = None
    in_video: int | None = None
    token_kinds: list[str] | None = None

    def __post_init__(self) -> None:
        if self.kind == "text" or self.token_kinds is not None:
            self.n_tokens = len(self.ids or [])
        if self.token_kinds is not None and len(self.token_kinds) != self.n_tokens:
            raise InputError(f"a block segment needs one kind per token: {len(self.token_kinds)} kinds, {self.n_tokens} ids")

    @classmethod
    def text(cls, ids: list[int]) -> "Segment":
        return cls("text", ids=list(ids))

    def token_ids(self) -> list[int]:
        return list(self.ids) if self.kind == "text" or self.token_kinds is not None else [int(self.token_id)] * self.n_tokens

    def kinds(self) -> list[str]:
        """Each token's kind."""
        return list(self.token_kinds) if self.token_kinds is not None else [self.kind] * self.n_tokens
