"""Hypothesis strategies for the property tests (``tests/test_properties.py``): random layouts of a
family's tiny clips (kinds, lengths, padding side), random hooks and positions to patch, random text
sizes of a family's tiny config, and the builders that turn a drawn description into inputs or a model.

Nothing here names a family: every family's inputs come from its test kit (``tests/kits/``), and a
random config is the kit model's own config with other text sizes, parsed back by the family's
``config_from_dict`` (what ``HookedAVLLM.from_config(dict)`` calls).

Example:
    >>> row = Row(kind="audio", seconds=2, prefix=3, suffix=1, seed=4)
    >>> row.audio, row.video
    (True, False)
    >>> mrope_sections(16), mrope_sections(8)
    ((2, 3, 3), (2, 1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from hooked_avllm import HookedAVLLM
from hooked_avllm.inputs import ModelInputs
from hooked_avllm.inputs.select import position_mask

KINDS = ("text", "audio", "video", "audio+video")
PADDING_SIDES = ("left", "right")
PATCHED_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
TEXT_IDS = 199  # the kits' plain text ids lie below this (media and brackets above)


@dataclass(frozen=True)
class Row:
    """One drawn input row: ``kind`` (text only, audio only, video only, audio+video), the clip's
    ``seconds``, the text around it and the seed of its random ids and media."""

    kind: str
    seconds: int
    prefix: int
    suffix: int
    seed: int

    @property
    def audio(self) -> bool:
        return "audio" in self.kind

    @property
    def video(self) -> bool:
        return "video" in self.kind


@dataclass(frozen=True)
class Layout:
    """A drawn batch: its rows and the padding side."""

    rows: tuple[Row, ...]
    padding_side: str


@dataclass(frozen=True)
class TextSizes:
    """Drawn sizes of the decoder: layers, query heads, key/value heads (dividing the query heads)
    and the head width (``n_heads * d_head`` need not be ``d_model``)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int


def rows_share_audio_length(kit) -> bool:
    """Whether the family's batch needs one audio length for every row: such a kit's
    ``other_length`` keeps the 3-s clip and changes the prefix instead (``kits.FamilyKit``)."""
    return kit.other_length.get("seconds", 3) == 3


@st.composite
def rows(draw) -> Row:
    """One row: a random kind, 1-3 s of clip, 0-6 text tokens before it and 0-4 after."""
    return Row(kind=draw(st.sampled_from(KINDS)), seconds=draw(st.integers(1, 3)), prefix=draw(st.integers(0, 6)),
               suffix=draw(st.integers(0, 4)), seed=draw(st.integers(0, 2**16)))


@st.composite
def layouts(draw, kit, min_rows: int = 2, max_rows: int = 3, padding_sides: tuple[str, ...] = PADDING_SIDES) -> Layout:
    """A batch of ``min_rows``-``max_rows`` random rows padded on one of ``padding_sides``; where the
    family's rows must share one audio length (``rows_share_audio_length``), every row with audio
    takes the first one's."""
    drawn = draw(st.lists(rows(), min_size=min_rows, max_size=max_rows))
    if rows_share_audio_length(kit):
        audio = [row.seconds for row in drawn if row.audio]
        drawn = [Row(r.kind, audio[0], r.prefix, r.suffix, r.seed) if r.audio else r for r in drawn]
    return Layout(tuple(drawn), draw(st.sampled_from(padding_sides)))


def build_row(kit, model: HookedAVLLM, row: Row) -> ModelInputs:
    """The kit's inputs for one drawn row (text only: ``prefix + suffix + 1`` random text ids)."""
    if row.kind == "text":
        g = torch.Generator().manual_seed(row.seed)
        return kit.text(model, torch.randint(0, TEXT_IDS, (1, row.prefix + row.suffix + 1), generator=g))
    return kit.clip(model, video=row.video, audio=row.audio, seconds=row.seconds, seed=row.seed, prefix=row.prefix,
                    suffix=row.suffix)


def build_batch(kit, model: HookedAVLLM, layout: Layout) -> tuple[ModelInputs, list[ModelInputs]]:
    """The padded batch of a drawn layout and its rows alone."""
    alone = [build_row(kit, model, row) for row in layout.rows]
    return kit.batch(model, alone, padding_side=layout.padding_side), alone


def present_kinds(inputs: ModelInputs) -> list[str]:
    """The position kinds every row of ``inputs`` holds (what a patch by modality can align)."""
    return ["all", "last"] + [kind for kind in ("text", "audio", "video", "media")
                              if bool(position_mask(inputs.layout, kind).any(1).all())]


@st.composite
def text_sizes(draw) -> TextSizes:
    """1-3 layers, 1, 2, 4 or 8 query heads, a divisor of them as key/value heads, d_head 8, 16 or 32.
    Each choice lists the kits' own size first, where hypothesis starts and shrinks to."""
    n_heads = draw(st.sampled_from((4, 1, 2, 8)))
    n_kv_heads = draw(st.sampled_from([k for k in (2, 1, 4, 8) if n_heads % k == 0]))
    return TextSizes(draw(st.sampled_from((2, 1, 3))), n_heads, n_kv_heads, draw(st.sampled_from((16, 8, 32))))


def mrope_sections(d_head: int) -> tuple[int, int, int]:
    """Sections (T, H, W) over the ``d_head / 2`` rotary frequencies in the released proportions
    (Qwen: 16, 24, 24 of 64), so they sum to ``d_head / 2``."""
    half = d_head // 2
    side = half * 3 // 8
    return (half - 2 * side, side, side)


def resized_config(model: HookedAVLLM, sizes: TextSizes) -> dict:
    """``model``'s config as a dict (``to_dict``) with the decoder resized: what
    ``HookedAVLLM.from_config`` parses with the family's ``config_from_dict``."""
    config = model.cfg.to_dict()
    text = config["text"]
    text.update(n_layers=sizes.n_layers, n_heads=sizes.n_heads, n_kv_heads=sizes.n_kv_heads, d_head=sizes.d_head)
    if text.get("mrope_section") is not None:
        text["mrope_section"] = mrope_sections(sizes.d_head)
    return config


__all__ = ["KINDS", "PATCHED_HOOKS", "TEXT_IDS", "Layout", "Row", "TextSizes", "build_batch", "build_row", "layouts",
           "mrope_sections", "present_kinds", "resized_config", "rows", "rows_share_audio_length", "text_sizes"]
