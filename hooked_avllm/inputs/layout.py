"""TokenLayout: what every sequence position is, and where each media token came from.

Built once, by :meth:`TokenLayout.from_segments`, from the segments a family's prompt builder
emits (text runs and media blocks whose every token's kind and origin the builder knows); a
family that reads bare token ids (a Hugging Face processor's output) finds the same segments in
the ids and builds the layout the same way. A layout holds boolean masks ``[batch, seq]`` for
text, audio, video, image, generated and padding positions (every position is in exactly one),
the origin of each media token (audio time, video frame group / row / column in its token grid),
the span of every media item, and the position ids the family's position rule gives (1D by
default; 3-row M-RoPE / TMRoPE for the Qwen families). Nothing in a layout is specific to a family.

Example:
    >>> audio = Segment("audio", n_tokens=2, token_id=9, time=torch.tensor([0.0, 0.04]))
    >>> layout = TokenLayout.from_segments([[Segment.text([1]), audio, Segment.text([2])]], pad_id=0)
    >>> layout.audio.tolist(), layout.audio_time[layout.audio].tolist(), layout.position_ids.tolist()
    ([[False, True, True, False]], [0.0, 0.03999999910593033], [[[0, 1, 2, 3]]])
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.components.upload import upload
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.segments import Segment
from hooked_avllm.vocabulary import KIND_CODE, KINDS, MEDIA_KINDS

PositionRule = Callable[["TokenLayout"], "tuple[Tensor, Tensor]"]  # prompt layout -> (position ids [rows, b, s], deltas [b, 1])


def rope_deltas(position_ids: Tensor, attention_mask: Tensor) -> Int[Tensor, "batch 1"]:
    """Per row: the largest position id of a real token + 1 - the number of real tokens (what the
    Qwen references call the rope delta; a generated token at real index ``n`` gets ``n + delta``).

    Example:
        >>> rope_deltas(torch.tensor([[[0, 1, 5, 6]]]), torch.tensor([[1, 1, 1, 1]])).tolist()
        [[3]]
    """
    real = attention_mask.bool().to(position_ids.device)
    top = position_ids.masked_fill(~real[None], 0).amax(dim=(0, 2))
    return (top + 1 - real.sum(-1))[:, None]


def one_d_positions(layout: "TokenLayout") -> tuple[Tensor, Tensor]:
    """The default position rule: one row counting each row's real tokens (padding gets 0)."""
    positions = (layout.attention_mask.cumsum(-1) - 1).clamp(min=0)[None]
    return positions, rope_deltas(positions, layout.attention_mask)


@dataclass
class MediaSpan:
    """One media item in the sequence.

    ``index`` counts items of this kind over the batch in sequence order (row-major), which is
    their order in ``pixel_values`` / ``pixel_values_videos`` / ``input_features``.
    ``positions`` are its placeholder positions; ``start``/``stop`` bound its bracket tokens
    (inclusive/exclusive). Audio taken from a video's track has ``in_video`` = that video's index.
    """

    batch: int
    kind: Literal["image", "video", "audio"]
    index: int
    positions: Int[Tensor, "n_tokens"]
    start: int
    stop: int
    in_video: int | None = None


def _blank_origins(batch: int, seq: int) -> tuple[Tensor, ...]:
    """Per-position kind code (-1 text, 0 audio, 1 video, 2 image), audio and video time (NaN),
    frame group, row and column (-1), before any media token is placed."""
    def filled(value) -> Tensor:
        return torch.full((batch, seq), value, dtype=torch.float32 if value != value else torch.long)

    return filled(-1), filled(float("nan")), filled(float("nan")), filled(-1), filled(-1), filled(-1)


@dataclass
class TokenLayout:
    """Masks and media origins of a batch; see the module docstring."""

    input_ids: Int[Tensor, "batch prompt_seq"]
    attention_mask: Int[Tensor, "batch seq"]
    text: Bool[Tensor, "batch seq"]
    audio: Bool[Tensor, "batch seq"]
    video: Bool[Tensor, "batch seq"]
    image: Bool[Tensor, "batch seq"]
    generated: Bool[Tensor, "batch seq"]
    padding: Bool[Tensor, "batch seq"]
    audio_time: Float[Tensor, "batch seq"]  # seconds from the clip start; NaN off audio
    video_time: Float[Tensor, "batch seq"]  # seconds of the token's frame group; NaN off video
    frame_group: Int[Tensor, "batch seq"]  # -1 off video/image (images: 0)
    row: Int[Tensor, "batch seq"]  # merged-grid row; -1 off video/image
    col: Int[Tensor, "batch seq"]  # merged-grid column; -1 off video/image
    spans: list[MediaSpan]
    position_ids: Int[Tensor, "rows batch seq"] | Float[Tensor, "rows batch seq"]  # generated positions continue at max + 1
    rope_deltas: Int[Tensor, "batch 1"]  # per row: max prompt position + 1 - real prompt length
    padding_side: str = "left"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_segments(
        cls,
        rows: list[list[Segment]],
        *,
        pad_id: int,
        padding_side: str = "left",
        positions: PositionRule | None = None,
        width: int | None = None,
    ) -> "TokenLayout":
        """The layout of prompts given as the segments their prompt builder emitted: no id is
        parsed, every count and origin comes from the builder.

        ``positions`` is the family's position rule (the layout -> ``(position_ids [rows, batch,
        seq], deltas [batch, 1])``): 1D positions counting each row's real tokens by default.
        ``width`` pads every row to that many positions (default: the longest row's length; a
        parser of given ids passes their width, which may hold padding in every row).

        Example:
            >>> audio = Segment("audio", n_tokens=2, token_id=9, time=torch.tensor([0.0, 0.16]))
            >>> layout = TokenLayout.from_segments([[Segment.text([1]), audio, Segment.text([2])]], pad_id=0)
            >>> layout.audio.tolist(), layout.position_ids[0].tolist()
            ([[False, True, True, False]], [[0, 1, 2, 3]])
        """
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if not rows:
            raise InputError("a layout needs at least one row of segments")
        lengths = [sum(seg.n_tokens for seg in row) for row in rows]
        if width is not None and width < max(lengths):
            raise InputError(f"width={width} is shorter than the longest row ({max(lengths)} tokens)")
        batch, seq = len(rows), max(lengths) if width is None else width
        input_ids = torch.full((batch, seq), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, seq), dtype=torch.long)
        kind_of, audio_time, video_time, frame_group, row_of, col_of = _blank_origins(batch, seq)
        spans: list[MediaSpan] = []
        counters = {kind: 0 for kind in MEDIA_KINDS}
        for b, (segments, length) in enumerate(zip(rows, lengths)):
            at = seq - length if padding_side == "left" else 0
            attention_mask[b, at : at + length] = 1
            for seg in segments:
                n = seg.n_tokens
                input_ids[b, at : at + n] = torch.tensor(seg.token_ids(), dtype=torch.long)
                kinds = seg.kinds()
                present = [k for k in ("video", "image", "audio") if k in kinds]  # a video before its audio
                video_index = None
                for kind in present:
                    local = torch.tensor([i for i, k in enumerate(kinds) if k == kind])
                    where = local + at
                    kind_of[b, where] = KIND_CODE[kind]
                    if seg.time is not None:
                        (audio_time if kind == "audio" else video_time)[b, where] = seg.time[local].float()
                    for target, values in ((frame_group, seg.frame_group), (row_of, seg.row), (col_of, seg.col)):
                        if values is not None:
                            target[b, where] = values[local].long()
                    in_video = seg.in_video if kind == "audio" and video_index is None else video_index if kind == "audio" else None
                    start, stop = (at, at + n) if seg.token_kinds is not None else (int(where[0]), int(where[-1]) + 1)
                    spans.append(MediaSpan(b, kind, counters[kind], where, start, stop, in_video))
                    if kind == "video":
                        video_index = counters[kind]
                    counters[kind] += 1
                at += n
        padding = attention_mask == 0
        audio, video, image = (kind_of == KIND_CODE[k] for k in ("audio", "video", "image"))
        layout = cls(
            input_ids=input_ids, attention_mask=attention_mask, text=~(padding | audio | video | image),
            audio=audio, video=video, image=image, generated=torch.zeros_like(padding), padding=padding,
            audio_time=audio_time, video_time=video_time, frame_group=frame_group, row=row_of, col=col_of,
            spans=spans, position_ids=torch.zeros(1, batch, seq, dtype=torch.long),
            rope_deltas=torch.zeros(batch, 1, dtype=torch.long), padding_side=padding_side,
        )
        layout.position_ids, layout.rope_deltas = (positions or one_d_positions)(layout)
        return layout

    @classmethod
    def stack(
        cls, layouts: list["TokenLayout"], *, pad_id: int, padding_side: str = "left", positions: PositionRule | None = None
    ) -> "TokenLayout":
        """One padded batch of the rows of several prompt layouts, rows in order: every
        per-position tensor re-padded, spans shifted, media items renumbered in the new row-major
        order. Position ids are the rows' own (padding gets 0), or ``positions`` (the family's rule
        over the stacked layout) when given.

        Example:
            >>> a = TokenLayout.from_segments([[Segment.text([1, 2, 3])]], pad_id=0)
            >>> b = TokenLayout.from_segments([[Segment.text([4])]], pad_id=0)
            >>> TokenLayout.stack([a, b], pad_id=0).input_ids.tolist()
            [[1, 2, 3], [0, 0, 4]]
        """
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if not layouts:
            raise InputError("TokenLayout.stack needs at least one layout")
        if any(layout.shape[1] != layout.n_prompt for layout in layouts):
            raise InputError("TokenLayout.stack takes prompt layouts (without generated positions)")
        if len({layout.position_ids.shape[0] for layout in layouts}) > 1:
            raise InputError("these layouts have different numbers of position rows (1D vs M-RoPE); they come from different families")
        rows = []  # (layout, row index, real positions)
        for layout in layouts:
            for b in range(layout.shape[0]):
                rows.append((layout, b, torch.nonzero(layout.attention_mask[b].bool()).flatten()))
        longest = max(len(real) for _, _, real in rows)
        fills = {"input_ids": pad_id, "attention_mask": 0, "text": False, "audio": False, "video": False, "image": False,
                 "generated": False, "padding": True, "audio_time": float("nan"), "video_time": float("nan"),
                 "frame_group": -1, "row": -1, "col": -1}
        first = layouts[0]
        values = {name: torch.full((len(rows), longest), fill, dtype=getattr(first, name).dtype) for name, fill in fills.items()}
        stacked_positions = torch.zeros(first.position_ids.shape[0], len(rows), longest, dtype=first.position_ids.dtype)
        spans: list[MediaSpan] = []
        counters = {kind: 0 for kind in MEDIA_KINDS}
        video_at: dict[tuple[int, int], int] = {}  # (new row, a video's old index) -> its new index
        for r, (layout, b, real) in enumerate(rows):
            start = longest - len(real) if padding_side == "left" else 0
            target = slice(start, start + len(real))
            for name in fills:
                values[name][r, target] = getattr(layout, name)[b, real]
            stacked_positions[:, r, target] = layout.position_ids[:, b, real].to(stacked_positions.device)
            shift = start - int(real[0]) if len(real) else 0
            for span in sorted(layout.spans_of(batch=b), key=lambda s: int(s.positions[0])):
                if span.kind == "video":
                    video_at[(r, span.index)] = counters["video"]
                in_video = video_at.get((r, span.in_video)) if span.in_video is not None else None
                spans.append(MediaSpan(r, span.kind, counters[span.kind], span.positions + shift, span.start + shift,
                                       span.stop + shift, in_video))
                counters[span.kind] += 1
        stacked = cls(**values, spans=spans, position_ids=stacked_positions,
                      rope_deltas=rope_deltas(stacked_positions, values["attention_mask"]), padding_side=padding_side)
        if positions is not None:
            stacked.position_ids, stacked.rope_deltas = positions(stacked)
        return stacked

    # ------------------------------------------------------------------ reading
    @property
    def shape(self) -> tuple[int, int]:
        """``(batch, seq)`` including generated positions."""
        return tuple(self.attention_mask.shape)  # type: ignore[return-value]

    @property
    def n_prompt(self) -> int:
        """Sequence length of the prompt (before generated tokens)."""
        return self.input_ids.shape[1]

    def masks(self) -> dict[str, Bool[Tensor, "batch seq"]]:
        """The six position masks by name; each position is in exactly one."""
        return {name: getattr(self, name) for name in KINDS}

    def spans_of(self, kind: str | None = None, batch: int | None = None) -> list[MediaSpan]:
        """Media spans filtered by kind and/or batch row."""
        return [s for s in self.spans if (kind is None or s.kind == kind) and (batch is None or s.batch == batch)]

    @property
    def audio_token_counts(self) -> Int[Tensor, "n_audio"] | None:
        """Tokens of each audio item, in item order (``None`` without audio)."""
        counts = [len(s.positions) for s in sorted(self.spans_of("audio"), key=lambda s: s.index)]
        return torch.tensor(counts, dtype=torch.long) if counts else None

    @property
    def use_audio_in_video(self) -> bool:
        """Whether some audio item is a video's own sound track laid out with it."""
        return any(s.in_video is not None for s in self.spans_of("audio"))

    def kind_codes(self) -> Int[Tensor, "batch seq"]:
        """The kind code of every position (:mod:`hooked_avllm.vocabulary`), generated positions included.

        Example:
            >>> layout = TokenLayout.from_segments([[Segment.text([1]), Segment("audio", n_tokens=1, token_id=9)]], pad_id=0)
            >>> layout.kind_codes().tolist()
            [[0, 1]]
        """
        codes = torch.full(self.shape, KIND_CODE["text"], dtype=torch.long, device=self.attention_mask.device)
        for name in KINDS[1:]:  # torch.where: no host sync on a GPU
            codes = torch.where(getattr(self, name), KIND_CODE[name], codes)
        return codes

    @staticmethod
    def _continued(positions: Tensor, n_new: int) -> Tensor:
        """Positions of ``n_new`` generated tokens after ``positions`` [rows, b, s]: row max + 1, + 2, ..."""
        start = positions.amax(dim=(0, 2)) + 1  # [b]
        steps = torch.arange(n_new, device=positions.device)
        return (start[:, None] + steps[None, :]).unsqueeze(0).expand(positions.shape[0], -1, -1)

    # ------------------------------------------------------------------ growing
    def extend(self, n_new: int) -> "TokenLayout":
        """Append ``n_new`` generated positions at the right of every row (in place; returns self)."""
        if n_new < 0:
            raise InputError(f"extend needs n_new >= 0, got {n_new}.")
        if n_new == 0:
            return self
        batch = self.shape[0]

        def grow(tensor: Tensor, value) -> Tensor:
            extra = torch.full((batch, n_new), value, dtype=tensor.dtype, device=tensor.device)
            return torch.cat([tensor, extra], dim=1)

        self.attention_mask = grow(self.attention_mask, 1)
        for name in ("text", *MEDIA_KINDS, "padding"):
            setattr(self, name, grow(getattr(self, name), False))
        self.generated = grow(self.generated, True)
        for name in ("audio_time", "video_time"):
            setattr(self, name, grow(getattr(self, name), float("nan")))
        for name in ("frame_group", "row", "col"):
            setattr(self, name, grow(getattr(self, name), -1))
        self.position_ids = torch.cat([self.position_ids, self._continued(self.position_ids, n_new)], dim=2)
        return self

    def to(self, device: torch.device | str) -> "TokenLayout":
        """A copy with every tensor on ``device`` (host tensors reach a GPU without a host wait)."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = upload(value, device) if isinstance(value, Tensor) else value
        values["spans"] = [
            MediaSpan(s.batch, s.kind, s.index, upload(s.positions, device), s.start, s.stop, s.in_video) for s in self.spans
        ]
        return TokenLayout(**values)

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={int(mask.sum())}" for name, mask in self.masks().items())
        return f"TokenLayout(shape={self.shape}, {counts}, spans={len(self.spans)})"


def carried_layout(obj: object) -> "TokenLayout | None":
    """The :class:`TokenLayout` a value carries: itself, or the ``.layout`` of prepared inputs or a
    cache; ``None`` for bare token ids (a tensor's ``.layout`` is its memory layout, not ours).

    Example:
        >>> import torch
        >>> carried_layout(torch.tensor([[1, 2]])) is None
        True
    """
    if isinstance(obj, TokenLayout):
        return obj
    layout = getattr(obj, "layout", None) if not isinstance(obj, Tensor) else None
    return layout if isinstance(layout, TokenLayout) else None
