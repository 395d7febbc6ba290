"""Caption scoring: the record a scorer returns, the scorer interface, the keyword scorer of the toy
and the fidelity table of the study (PAPER.md: audio and video fidelity per condition, x100).

A *scorer* answers one question per caption: does it describe the reference? It gets captions,
references and a *kind* (``"audio"``: the sounds of the reference audio caption; ``"video"``: its
visual content) and returns one :class:`Judgement` per caption, a score in [0, 1] or a *missing*
judgement that says why (the judge timed out, replied nonsense, the caption was never generated).
Two scorers exist: :class:`KeywordScorer` (exact, for templated answers such as the toy's) and
:class:`hooked_avllm.study.judge.LLMJudge` (an LLM judge, for free captions).

:func:`score_rows` scores a list of :class:`CaptionRow` (one generated caption of one clip under one
condition, with the clip's two reference captions) with any scorer, and :func:`fidelity_table`
turns the result into the study's table. A missing judgement is never counted as 0: it is left out
of the mean and counted in its own column, and a condition whose judgements are all missing shows
NaN.

Example:
    >>> rows = [CaptionRow("clip0", "factual", "I see a dog and I hear barking.", "barking", "dog"),
    ...         CaptionRow("clip0", "counterfactual", "I see a dog and I hear barking.", "meowing", "dog"),
    ...         CaptionRow("clip1", "counterfactual", None, "ringing", "car")]
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # clip1 has no caption: its judgements are missing
    ...     table = fidelity_table(score_rows(KeywordScorer(), rows))
    >>> print(table[["audio_fidelity", "audio_scored", "audio_missing", "video_fidelity"]].reset_index().to_string(index=False))
         condition  audio_fidelity  audio_scored  audio_missing  video_fidelity
           factual           100.0             1              0           100.0
    counterfactual             0.0             1              1           100.0
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

__all__ = [
    "KINDS",
    "CaptionRow",
    "Judgement",
    "KeywordScorer",
    "Kind",
    "ScoredCaption",
    "Scorer",
    "check_kind",
    "check_pairs",
    "fidelity_table",
    "score_rows",
]

Kind = Literal["audio", "video"]
KINDS: tuple[Kind, ...] = ("audio", "video")


@dataclass(frozen=True)
class Judgement:
    """One scorer's verdict on one caption.

    ``score`` is in [0, 1] (1: the caption describes the reference), or ``None`` when the judgement
    is *missing*; then ``error`` says why (a missing judgement always has one, a scored one never).
    ``reason`` is the scorer's short justification, ``raw`` the judge's reply as received (``None``
    for a scorer without one), ``attempts`` the requests it took (0: served from a cache or decided
    without a request) and ``cached`` whether it came from the answer cache.

    Example:
        >>> Judgement(0.8, reason="names the engine").missing
        False
        >>> Judgement(None, error="timed out after 3 attempts", attempts=3).missing
        True
        >>> Judgement(1.5)
        Traceback (most recent call last):
        ...
        ValueError: Judgement score must be in [0, 1] or None (missing), got 1.5; a judge replying on 0-100 is divided by 100 when parsed
    """

    score: float | None
    reason: str = ""
    error: str | None = None
    raw: str | None = None
    attempts: int = 0
    cached: bool = False

    def __post_init__(self) -> None:
        if self.score is None:
            if not self.error:
                raise ValueError("a missing Judgement (score=None) needs an error saying why it is missing")
            return
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)) or not 0 <= self.score <= 1:
            raise ValueError(f"Judgement score must be in [0, 1] or None (missing), got {self.score!r}; "
                             "a judge replying on 0-100 is divided by 100 when parsed")
        if self.error is not None:
            raise ValueError(f"a scored Judgement (score={self.score}) cannot carry an error ({self.error!r}); "
                             "use score=None for a missing one")

    @property
    def missing(self) -> bool:
        """True when there is no score (see ``error``)."""
        return self.score is None


@runtime_checkable
class Scorer(Protocol):
    """What scores captions: ``score(captions, references, kind)`` returns one :class:`Judgement`
    per caption, in order. ``kind`` is ``"audio"`` (does the caption describe the sounds of the
    reference?) or ``"video"`` (its visual content). A caption of ``None`` (never generated) and an
    empty reference give a missing judgement, not a score. Lengths that differ raise ValueError.

    Example:
        >>> isinstance(KeywordScorer(), Scorer)
        True
    """

    def score(self, captions: Sequence[str | None], references: Sequence[str], kind: Kind) -> list[Judgement]:
        ...


def check_kind(kind: str) -> Kind:
    """``kind`` itself, or a ValueError naming it and the kinds there are.

    Example:
        >>> check_kind("sound")
        Traceback (most recent call last):
        ...
        ValueError: kind must be 'audio' or 'video', got 'sound'
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
    return kind  # type: ignore[return-value]


def check_pairs(captions: Sequence[str | None], references: Sequence[str]) -> None:
    """Raise unless there is one reference per caption (a silent zip would drop clips)."""
    if isinstance(captions, str) or isinstance(references, str):
        raise TypeError("captions and references must be lists of strings, not one string; wrap a single caption in a list")
    if len(captions) != len(references):
        raise ValueError(f"one reference per caption: got {len(captions)} captions and {len(references)} references")


def unusable(caption: str | None, reference: str | None) -> Judgement | None:
    """A missing judgement when there is nothing to score, else None."""
    if caption is None:
        return Judgement(None, error="no caption (None): the caption was not generated")
    if reference is None or not str(reference).strip():
        return Judgement(None, error=f"no reference caption ({reference!r}): nothing to score against")
    return None


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``, punctuation dropped.

    Example:
        >>> words("I hear a Dog's bark, then chirping!")
        ['i', 'hear', 'a', "dog's", 'bark', 'then', 'chirping']
    """
    return _WORD.findall(text.lower())


def find_phrase(tokens: list[str], phrase: list[str]) -> int | None:
    """Index of the first occurrence of the word sequence ``phrase`` in ``tokens``, or None."""
    n = len(phrase)
    return next((i for i in range(len(tokens) - n + 1) if tokens[i : i + n] == phrase), None)


class KeywordScorer:
    """Exact scoring of captions that name a label: 1 if the caption names the reference, else 0.

    A reference is a label (``"barking"``, ``"dog"``, or a phrase: ``"fire truck"``); the caption
    names it when the label's words occur in it as consecutive whole words, case and punctuation
    ignored. ``synonyms`` maps a label to further accepted wordings (``{"barking": ["barks"]}``).

    With ``vocabularies`` (kind -> the closed list of labels of that kind) the scorer applies the
    toy's rule (``hooked_avllm.toy.evaluate.score`` through ``toy.data.parse_answer``): the
    caption's answer is the FIRST label of the vocabulary it names, and it scores 1 only if that
    answer is the reference, so "I hear meowing and barking" is 0 for barking. A reference outside
    the vocabulary raises (it could never score 1).

    The scorer names the label it found as its ``reason``; it never makes a request (``attempts``
    is 0).

    Example:
        >>> scorer = KeywordScorer(synonyms={"barking": ["barks"]})
        >>> [j.score for j in scorer.score(["A dog barks.", "A cat meows."], ["barking", "barking"], "audio")]
        [1.0, 0.0]
        >>> toy = KeywordScorer(vocabularies={"audio": ["barking", "meowing"], "video": ["dog", "cat"]})
        >>> toy.score(["I hear meowing and barking."], ["barking"], "audio")[0].reason
        "names 'meowing' first, not 'barking'"
    """

    def __init__(self, synonyms: Mapping[str, Sequence[str]] | None = None,
                 vocabularies: Mapping[str, Sequence[str]] | None = None):
        self.synonyms = {label.lower(): [label, *extra] for label, extra in (synonyms or {}).items()}
        self.vocabularies = {check_kind(k): [w.lower() for w in v] for k, v in (vocabularies or {}).items()}

    def wordings(self, label: str) -> list[list[str]]:
        """The word sequences that count as naming ``label``."""
        return [words(w) for w in self.synonyms.get(label.lower(), [label])]

    def first_named(self, tokens: list[str], vocabulary: list[str]) -> str | None:
        """The vocabulary label the caption names first (earliest position), or None."""
        found = []
        for label in vocabulary:
            at = [i for i in (find_phrase(tokens, w) for w in self.wordings(label)) if i is not None]
            if at:
                found.append((min(at), label))
        return min(found)[1] if found else None

    def judge(self, caption: str, reference: str, kind: Kind) -> Judgement:
        """The judgement of one caption against one reference label."""
        tokens, label = words(caption), reference.strip().lower()
        vocabulary = self.vocabularies.get(kind)
        if vocabulary is None:
            named = any(find_phrase(tokens, w) is not None for w in self.wordings(label))
            return Judgement(1.0 if named else 0.0, reason=f"{'names' if named else 'does not name'} {label!r}")
        if label not in vocabulary:
            raise ValueError(f"reference {reference!r} is not in the {kind} vocabulary {vocabulary}; "
                             f"add it to vocabularies[{kind!r}] or score without vocabularies")
        first = self.first_named(tokens, vocabulary)
        if first is None:
            return Judgement(0.0, reason=f"names no {kind} label")
        return Judgement(1.0 if first == label else 0.0,
                         reason=f"names {label!r}" if first == label else f"names {first!r} first, not {label!r}")

    def score(self, captions: Sequence[str | None], references: Sequence[str], kind: Kind) -> list[Judgement]:
        """One :class:`Judgement` per caption (see the class)."""
        check_kind(kind)
        check_pairs(captions, references)
        return [unusable(c, r) or self.judge(c, r, kind) for c, r in zip(captions, references)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class CaptionRow:
    """One generated caption: the clip, the condition it was generated under (``"factual"``,
    ``"counterfactual"``, ``"knockout gen->video 18-30"``...), the caption (``None`` if it was not
    generated) and the clip's reference audio and video captions."""

    clip_id: str
    condition: str
    caption: str | None
    audio_reference: str
    video_reference: str


@dataclass(frozen=True)
class ScoredCaption:
    """The judgement of one caption of one clip under one condition, for one kind."""

    clip_id: str
    condition: str
    kind: Kind
    judgement: Judgement


def score_rows(scorer: Scorer, rows: Sequence[CaptionRow], kinds: Sequence[str] = KINDS) -> list[ScoredCaption]:
    """Score every row for every kind (audio against ``audio_reference``, video against
    ``video_reference``) with ``scorer``; the result feeds :func:`fidelity_table`.

    Example:
        >>> rows = [CaptionRow("c0", "factual", "a dog barking", "barking", "dog")]
        >>> [(s.kind, s.judgement.score) for s in score_rows(KeywordScorer(), rows)]
        [('audio', 1.0), ('video', 1.0)]
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to score (pass CaptionRow(clip_id, condition, caption, audio_reference, "
                         "video_reference) per generated caption)")
    scored = []
    for kind in map(check_kind, kinds):
        references = [r.audio_reference if kind == "audio" else r.video_reference for r in rows]
        captions = [r.caption for r in rows]
        judgements = scorer.score(captions, references, kind)
        if len(judgements) != len(rows):
            raise ValueError(f"{type(scorer).__name__}.score returned {len(judgements)} judgements for {len(rows)} captions")
        scored += [ScoredCaption(r.clip_id, r.condition, kind, j) for r, j in zip(rows, judgements)]
    return scored


def summarize(judgements: list[Judgement]) -> dict[str, float | int]:
    """Fidelity (x100 mean over the scored), its standard error (x100) and the two counts."""
    scores = [j.score for j in judgements if j.score is not None]
    n = len(scores)
    mean = 100 * sum(scores) / n if n else math.nan
    sem = 100 * math.sqrt(sum((s - mean / 100) ** 2 for s in scores) / (n - 1) / n) if n > 1 else math.nan
    return {"fidelity": mean, "sem": sem, "scored": n, "missing": len(judgements) - n}


def fidelity_table(rows: Iterable[ScoredCaption]) -> pd.DataFrame:
    """Audio and video fidelity per condition, as the study reports them.

    One row per condition (in order of first appearance), and for each kind: ``{kind}_fidelity``,
    100 x the mean score over the clips that have one; ``{kind}_sem``, its standard error (x100,
    NaN under 2 scores); ``{kind}_scored`` and ``{kind}_missing``, the judgements with and without
    a score. A missing judgement is left out of the mean, never counted as 0; a condition whose
    judgements of a kind are all missing has fidelity NaN (and a warning says so). A kind that was
    not scored for a condition shows NaN with both counts 0. ``clips`` counts the distinct clips.
    The same (clip, condition, kind) twice raises: it would weigh that clip twice.

    Example:
        >>> ok, lost = Judgement(0.5), Judgement(None, error="timeout")
        >>> rows = [ScoredCaption("a", "factual", "audio", ok), ScoredCaption("b", "factual", "audio", lost)]
        >>> table = fidelity_table(rows)
        >>> float(table.audio_fidelity["factual"]), int(table.audio_scored["factual"]), int(table.audio_missing["factual"])
        (50.0, 1, 1)
    """
    groups: dict[str, dict[str, list[Judgement]]] = {}
    clips: dict[str, set[str]] = {}
    seen: set[tuple[str, str, str]] = set()
    for row in rows:
        if not isinstance(row, ScoredCaption):
            raise TypeError(f"fidelity_table takes ScoredCaption records (from score_rows), got {type(row).__name__}")
        key = (row.clip_id, row.condition, check_kind(row.kind))
        if key in seen:
            raise ValueError(f"clip {row.clip_id!r} has two {row.kind} judgements under condition {row.condition!r}; "
                             "score each (clip, condition) once")
        seen.add(key)
        groups.setdefault(row.condition, {k: [] for k in KINDS})[row.kind].append(row.judgement)
        clips.setdefault(row.condition, set()).add(row.clip_id)
    if not groups:
        raise ValueError("rows is empty: no judgement to tabulate (pass score_rows(scorer, caption_rows))")
    records = []
    for condition, by_kind in groups.items():
        record: dict[str, object] = {"condition": condition, "clips": len(clips[condition])}
        for kind in KINDS:
            summary = summarize(by_kind[kind])
            if by_kind[kind] and not summary["scored"]:
                warnings.warn(f"condition {condition!r}: all {summary['missing']} {kind} judgements are missing, "
                              f"so its {kind} fidelity is NaN (see the judgements' errors)", stacklevel=2)
            record.update({f"{kind}_{name}": value for name, value in summary.items()})
        records.append(record)
    table = pd.DataFrame.from_records(records).set_index("condition")
    table.attrs["note"] = ("fidelity: 100 x mean score over the clips with a score (sem: its standard error x100); "
                           "missing judgements are left out of the mean and counted in *_missing, never scored 0")
    return table
