"""TokenLayout: what every sequence position is, and where each media token came from.

Built once, by :meth:`TokenLayout.from_segments`, from the segments a family's prompt builder
emits (text runs and media blocks whose every token's kind and origin the builder knows). Bare
ids (a Hugging Face processor's output) go through :meth:`TokenLayout.from_input_ids`, which
finds the media blocks in the ids, checks them against the media metadata and hands the same
blocks to ``from_segments``. A layout holds boolean masks ``[batch, seq]`` for text, audio,
video, image, generated and padding positions (every position is in exactly one), the origin of
each media token (audio time, video frame group / row / column in its token grid), the span of
every media item, and the position ids: 1D, or 3-row M-RoPE / TMRoPE from the spans
(:func:`hooked_avllm.inputs.positions.positions_from_layout`, computed on first use).

Example:
    >>> layout = TokenLayout.from_input_ids(input_ids, attention_mask, spec,        # doctest: +SKIP
    ...     video_grid_thw=grid, video_second_per_grid=spg, audio_token_counts=counts,
    ...     use_audio_in_video=True)
    >>> resid[layout.audio]              # residuals at every audio token  # doctest: +SKIP
    >>> layout.audio_time[layout.audio]  # their times in seconds     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.interleave import merge_runs
from hooked_avllm.inputs.media_blocks import audio_block, audio_in_video_block, image_block, video_block
from hooked_avllm.inputs.model_spec import ModelInputSpec
from hooked_avllm.inputs.segments import Segment
from hooked_avllm.position_kinds import KINDS, MEDIA_KINDS


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
    spec: ModelInputSpec
    image_grid_thw: Int[Tensor, "n_images 3"] | None = None
    video_grid_thw: Int[Tensor, "n_videos 3"] | None = None
    video_second_per_grid: Float[Tensor, "n_videos"] | None = None
    audio_token_counts: Int[Tensor, "n_audio"] | None = None
    use_audio_in_video: bool = False
    padding_side: str = "left"
    source: str = "ids"  # "ids": parsed from placeholders; "segments": built from a prompt builder's segments
    _position_ids: Tensor | None = field(default=None, repr=False)
    _rope_deltas: Tensor | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_input_ids(
        cls,
        input_ids: Int[Tensor, "batch seq"],
        attention_mask: Int[Tensor, "batch seq"] | None,
        spec: ModelInputSpec | None = None,
        *,
        image_grid_thw: Int[Tensor, "n_images 3"] | None = None,
        video_grid_thw: Int[Tensor, "n_videos 3"] | None = None,
        video_second_per_grid: Float[Tensor, "n_videos"] | None = None,
        audio_token_counts: Int[Tensor, "n_audio"] | None = None,
        use_audio_in_video: bool = False,
        padding_side: str = "left",
    ) -> "TokenLayout":
        """Parse the placeholders of ``input_ids``, check them against the media metadata, and
        build the layout from the media blocks found (:meth:`from_segments`).

        Raises :class:`InputError` when a placeholder run does not have the length its grid or
        audio length implies, when a media token sits outside its bracket, or when there are more
        or fewer media items in the ids than in the metadata.
        """
        spec = spec or ModelInputSpec()
        input_ids = input_ids.long().cpu()
        batch, seq = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.long().cpu()
        merge = spec.spatial_merge_size**2
        grids = {
            "image": image_grid_thw.long().cpu() if image_grid_thw is not None else torch.zeros(0, 3, dtype=torch.long),
            "video": video_grid_thw.long().cpu() if video_grid_thw is not None else torch.zeros(0, 3, dtype=torch.long),
        }
        n_audio_items = (
            audio_token_counts.long().cpu() if audio_token_counts is not None else torch.zeros(0, dtype=torch.long)
        )
        if video_second_per_grid is None:
            video_second_per_grid = torch.ones(len(grids["video"]), dtype=torch.float32)
        seconds_per_grid = video_second_per_grid.float().cpu()
        if len(seconds_per_grid) != len(grids["video"]):
            raise InputError(
                f"video_second_per_grid has {len(seconds_per_grid)} entries for {len(grids['video'])} videos; give one per video."
            )

        blocks: list[list[tuple[int, int, Segment]]] = [[] for _ in range(batch)]  # per row: (start, stop, block)
        counters = {"image": 0, "video": 0, "audio": 0}
        t = spec.tokens

        def take(kind: str) -> int:
            index = counters[kind]
            available = len(n_audio_items) if kind == "audio" else len(grids[kind])
            if index >= available:
                raise InputError(
                    f"input_ids hold more {kind} items than the {available} given; give one {kind} per placeholder."
                )
            counters[kind] += 1
            return index

        for b in range(batch):
            real = attention_mask[b].bool()
            ids = input_ids[b].masked_fill(~real, -1)
            starts = (
                torch.nonzero(
                    (ids == t.vision_start) | ((ids == t.audio_start) if t.audio_start is not None else False)
                )
                .flatten()
                .tolist()
            )
            media_ids = [x for x in (t.image, t.video, t.audio) if x is not None]
            is_media = torch.isin(ids, torch.tensor(media_ids))
            run_ends = torch.nonzero(~is_media).flatten()  # a media run ends at the next non-media position
            covered = torch.zeros(seq, dtype=torch.bool)
            skip_until = -1
            for start in starts:
                if start < skip_until:
                    continue
                opener = int(ids[start])
                nxt = int(ids[start + 1]) if start + 1 < seq else -1
                if opener == t.vision_start and nxt == t.audio_start and t.audio_start is not None:
                    body_start, closers = start + 2, (t.audio_end, t.vision_end)
                elif opener == t.vision_start and nxt in (t.image, t.video):
                    body_start, closers = start + 1, (t.vision_end,)
                elif opener == t.audio_start and nxt == t.audio:
                    body_start, closers = start + 1, (t.audio_end,)
                else:
                    continue  # a bracket token used as text
                after = run_ends[torch.searchsorted(run_ends, body_start) :]
                body_end = int(after[0]) if len(after) else seq
                stop = body_end + len(closers)
                if [int(x) for x in ids[body_end:stop]] != list(closers):
                    raise InputError(
                        f"Row {b}: the media placeholders starting at position {start} are not closed by their "
                        "end token(s); build prompts with prepare_inputs rather than by hand."
                    )
                body = ids[body_start:body_end]
                positions = torch.arange(body_start, body_end)
                covered[body_start:body_end] = True
                skip_until = stop
                if len(closers) == 2:  # a video with its audio track
                    v, a = take("video"), take("audio")
                    expected = merge_runs(spec.rules.audio_in_video_runs(
                        tuple(grids["video"][v].tolist()), float(seconds_per_grid[v]), int(n_audio_items[a]), spec))
                    found = merge_runs(
                        [("video" if x == t.video else "audio" if x == t.audio else "image", 1) for x in body.tolist()]
                    )
                    if found != expected:
                        raise InputError(
                            f"Row {b}: the audio-in-video block at position {start} does not interleave video and audio "
                            f"tokens in the order the model expects (found runs {found[:6]}..., expected "
                            f"{expected[:6]}...). Check use_audio_in_video and the audio length."
                        )
                    block = audio_in_video_block(t.vision_start, t.vision_end, grids["video"][v].tolist(),
                                                 float(seconds_per_grid[v]), int(n_audio_items[a]), spec)
                    blocks[b].append((start, stop, block))
                    continue
                kind = {t.image: "image", t.video: "video", t.audio: "audio"}[int(body[0])]
                if (body != body[0]).any():
                    raise InputError(f"Row {b}: the {kind} block at position {start} mixes placeholder kinds.")
                index = take(kind)
                expected_len = int(n_audio_items[index]) if kind == "audio" else int(grids[kind][index].prod()) // merge
                if len(positions) != expected_len:
                    raise InputError(
                        f"Row {b}: {kind} {index} has {len(positions)} placeholder tokens but its "
                        f"{'length' if kind == 'audio' else 'grid'} needs {expected_len}. Let prepare_inputs expand "
                        "the placeholders, or fix the grid / feature mask."
                    )
                if kind == "audio":
                    block = audio_block(opener, closers[0], expected_len, spec)
                elif kind == "video":
                    block = video_block(opener, closers[0], grids[kind][index].tolist(), float(seconds_per_grid[index]), spec)
                else:
                    block = image_block(opener, closers[0], grids[kind][index].tolist(), spec)
                blocks[b].append((start, stop, block))
            stray = is_media & ~covered
            if stray.any():
                position = int(torch.nonzero(stray)[0])
                raise InputError(
                    f"Row {b}: media placeholder token {int(ids[position])} at position {position} is outside a "
                    "media bracket. Put placeholders only where media go (prepare_inputs adds the brackets)."
                )
        for kind, count in counters.items():
            available = len(n_audio_items) if kind == "audio" else len(grids[kind])
            if count != available:
                raise InputError(
                    f"{available} {kind} item(s) were given but input_ids place {count}; give one placeholder per {kind}."
                )

        rows = []
        for b in range(batch):  # text between the blocks; the real tokens must sit on one side
            real = torch.nonzero(attention_mask[b]).flatten()
            if len(real) and int(real[-1]) - int(real[0]) + 1 != len(real):
                raise InputError(f"Row {b}: the attention mask has padding between real tokens; pad each row on one side.")
            first, last = (int(real[0]), int(real[-1]) + 1) if len(real) else (0, 0)
            segments, at = [], first
            for start, stop, block in blocks[b]:
                segments.append(Segment.text(input_ids[b, at:start].tolist()))
                segments.append(block)
                at = stop
            segments.append(Segment.text(input_ids[b, at:last].tolist()))
            rows.append(segments)
        ends = {(int(m.nonzero()[0]) > 0, int(m.nonzero()[-1]) < seq - 1) for m in attention_mask if m.any()}
        side = "right" if any(right for _, right in ends) else "left" if any(left for left, _ in ends) else padding_side
        layout = cls.from_segments(
            rows, spec, pad_id=0, padding_side=side, position_rows=3, image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw, video_second_per_grid=video_second_per_grid,
            use_audio_in_video=use_audio_in_video,
        )
        if not torch.equal(layout.attention_mask, attention_mask):
            raise InputError("rows are padded on different sides; pad every row on the left (or every row on the right).")
        layout.input_ids = input_ids  # as given, padding ids included
        layout.audio_token_counts, layout.padding_side, layout.source = audio_token_counts, padding_side, "ids"
        return layout

    @classmethod
    def from_segments(
        cls,
        rows: list[list[Segment]],
        spec: ModelInputSpec,
        *,
        pad_id: int,
        padding_side: str = "left",
        position_rows: int = 1,
        image_grid_thw: Int[Tensor, "n_images 3"] | None = None,
        video_grid_thw: Int[Tensor, "n_videos 3"] | None = None,
        video_second_per_grid: Float[Tensor, "n_videos"] | None = None,
        use_audio_in_video: bool = False,
    ) -> "TokenLayout":
        """The layout of prompts given as the segments their prompt builder emitted: no id is
        parsed, every count and origin comes from the builder.

        Position ids: with ``position_rows`` 1, 1D positions counting each row's real tokens; with
        3, M-RoPE / TMRoPE ids from the spans and these grids
        (:func:`~hooked_avllm.inputs.positions.positions_from_layout`, on first use).

        Example:
            >>> from hooked_avllm.inputs.model_spec import ModelInputSpec
            >>> audio = Segment("audio", n_tokens=2, token_id=9, time=torch.tensor([0.0, 0.16]))
            >>> layout = TokenLayout.from_segments([[Segment.text([1]), audio, Segment.text([2])]], ModelInputSpec(), pad_id=0)
            >>> layout.audio.tolist(), layout.position_ids[0].tolist()
            ([[False, True, True, False]], [[0, 1, 2, 3]])
        """
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        lengths = [sum(seg.n_tokens for seg in row) for row in rows]
        batch, seq = len(rows), max(lengths)
        input_ids = torch.full((batch, seq), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, seq), dtype=torch.long)
        kind_of, audio_time, video_time, frame_group, row_of, col_of = _blank_origins(batch, seq)
        spans: list[MediaSpan] = []
        counters = {"image": 0, "video": 0, "audio": 0}
        code = {"audio": 0, "video": 1, "image": 2}
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
                    positions = local + at
                    kind_of[b, positions] = code[kind]
                    if seg.time is not None:
                        (audio_time if kind == "audio" else video_time)[b, positions] = seg.time[local].float()
                    for target, values in ((frame_group, seg.frame_group), (row_of, seg.row), (col_of, seg.col)):
                        if values is not None:
                            target[b, positions] = values[local].long()
                    in_video = seg.in_video if kind == "audio" and video_index is None else video_index if kind == "audio" else None
                    start, stop = (at, at + n) if seg.token_kinds is not None else (int(positions[0]), int(positions[-1]) + 1)
                    spans.append(MediaSpan(b, kind, counters[kind], positions, start, stop, in_video))
                    if kind == "video":
                        video_index = counters[kind]
                    counters[kind] += 1
                at += n
        padding = attention_mask == 0
        audio, video, image = kind_of == 0, kind_of == 1, kind_of == 2
        counts = [len(s.positions) for s in spans if s.kind == "audio"]
        if position_rows > 1 and video_second_per_grid is None:  # the M-RoPE rule's default: 1 s per frame group
            video_second_per_grid = torch.ones(len(video_grid_thw) if video_grid_thw is not None else 0)
        layout = cls(
            input_ids=input_ids, attention_mask=attention_mask, text=~(padding | audio | video | image),
            audio=audio, video=video, image=image, generated=torch.zeros_like(padding), padding=padding,
            audio_time=audio_time, video_time=video_time, frame_group=frame_group, row=row_of, col=col_of,
            spans=spans, spec=spec, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
            video_second_per_grid=video_second_per_grid,
            audio_token_counts=torch.tensor(counts, dtype=torch.long) if counts else None,
            use_audio_in_video=use_audio_in_video, padding_side=padding_side, source="segments",
        )
        if position_rows == 1:
            positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            layout._position_ids = positions[None].clone()
            layout._rope_deltas = positions.amax(-1, keepdim=True) + 1 - attention_mask.sum(-1, keepdim=True)
        # otherwise computed from the spans and grids on first use
        return layout

    @classmethod
    def stack(cls, layouts: list["TokenLayout"], *, pad_id: int, padding_side: str = "left") -> "TokenLayout":
        """One padded batch of the rows of several segment-built layouts (prompts only), rows in
        order: every per-position tensor re-padded, spans shifted, media items renumbered in the
        new row-major order.

        Example:
            >>> from hooked_avllm.inputs.model_spec import ModelInputSpec
            >>> a = TokenLayout.from_segments([[Segment.text([1, 2, 3])]], ModelInputSpec(), pad_id=0)
            >>> b = TokenLayout.from_segments([[Segment.text([4])]], ModelInputSpec(), pad_id=0)
            >>> TokenLayout.stack([a, b], pad_id=0).input_ids.tolist()
            [[1, 2, 3], [0, 0, 4]]
        """
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if any(layout.source != "segments" or layout.shape[1] != layout.n_prompt for layout in layouts):
            raise InputError("TokenLayout.stack takes prompt layouts built from segments (model.prepare of this family)")
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
        positions = torch.zeros(first.position_ids.shape[0], len(rows), longest, dtype=first.position_ids.dtype)
        spans: list[MediaSpan] = []
        counters = {"image": 0, "video": 0, "audio": 0}
        video_at: dict[tuple[int, int], int] = {}  # (new row, a video's old index) -> its new index
        for r, (layout, b, real) in enumerate(rows):
            start = longest - len(real) if padding_side == "left" else 0
            target = slice(start, start + len(real))
            for name in fills:
                values[name][r, target] = getattr(layout, name)[b, real]
            positions[:, r, target] = layout.position_ids[:, b, real]
            shift = start - int(real[0]) if len(real) else 0
            for span in sorted(layout.spans_of(batch=b), key=lambda s: int(s.positions[0])):
                if span.kind == "video":
                    video_at[(r, span.index)] = counters["video"]
                in_video = video_at.get((r, span.in_video)) if span.in_video is not None else None
                spans.append(MediaSpan(r, span.kind, counters[span.kind], span.positions + shift, span.start + shift,
                                       span.stop + shift, in_video))
                counters[span.kind] += 1
        counts = [len(s.positions) for s in spans if s.kind == "audio"]
        stacked = cls(**values, spans=spans, spec=first.spec,
                      audio_token_counts=torch.tensor(counts, dtype=torch.long) if counts else None,
                      padding_side=padding_side, source="segments")
        stacked._position_ids = positions
        real = stacked.attention_mask.bool()
        stacked._rope_deltas = positions.masked_fill(~real[None], 0).amax(dim=(0, 2))[:, None] + 1 - real.sum(-1, keepdim=True)
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
    def position_ids(self) -> Int[Tensor, "3 batch seq"]:
        """TMRoPE position ids (t, h, w rows); generated tokens continue at the row's maximum + 1."""
        if self._position_ids is None:
            self._compute_positions()
        return self._position_ids  # type: ignore[return-value]

    @property
    def rope_deltas(self) -> Int[Tensor, "batch 1"]:
        """Per row: max prompt position + 1 - real prompt length (as the reference returns it)."""
        if self._rope_deltas is None:
            self._compute_positions()
        return self._rope_deltas  # type: ignore[return-value]

    def _compute_positions(self) -> None:
        """M-RoPE / TMRoPE ids from the spans found when the ids were parsed (they are not read again)."""
        positions, deltas = self.spec.rules.layout_positions(self)
        positions = positions.to(self.attention_mask.device)
        n_new = self.shape[1] - self.n_prompt
        if n_new:
            positions = torch.cat([positions, self._continued(positions, n_new)], dim=2)
        self._position_ids, self._rope_deltas = positions, deltas.to(self.attention_mask.device)

    @staticmethod
    def _continued(positions: Tensor, n_new: int) -> Tensor:
        """Positions of ``n_new`` generated tokens after ``positions`` [3, b, s]: row max + 1, + 2, ..."""
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
        if self._position_ids is not None:
            self._position_ids = torch.cat([self._position_ids, self._continued(self._position_ids, n_new)], dim=2)
        return self

    def to(self, device: torch.device | str) -> "TokenLayout":
        """A copy with every tensor on ``device``."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value.to(device) if isinstance(value, Tensor) else value
        values["spans"] = [
            MediaSpan(s.batch, s.kind, s.index, s.positions.to(device), s.start, s.stop, s.in_video) for s in self.spans
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
