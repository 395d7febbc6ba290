"""Metrics on a run's logits at the last real position of each row, for patching and sweeps.

A metric is ``metric(logits [batch, pos, vocab], inputs or None) -> [batch] or scalar``:
:func:`logit_diff` and :func:`answer_prob` score answer tokens (ids or single-token words; a word
the vocabulary splits or does not know is refused), :func:`kl_to_source` compares with a source
run's next-token distribution, and :func:`restoration` normalises a patched value between the
unpatched target (0) and the source (1).

Where the metric is read matters: at the last prompt position a chat model is about to say "I",
not the answer word. The patching tools take ``answer_prefix=`` ("I hear"): the answer's first
words teacher-forced after both runs' prompts, so the metric is read where the answer word comes.

A metric measures nothing in a pair whose clean-corrupt gap (the metric on the source run minus
on the target run) is tiny, or has the sign opposite to the other pairs': restoration there
divides by noise. :class:`PairGaps` holds each pair's gap and :func:`check_gaps` warns
(:class:`MetricGapWarning`) naming those pairs; "tiny" is below the metric's noise floor
(:func:`gap_floor`: for a logit difference, the typical difference of two random tokens' logits at
the scored position).

Example:
    >>> metric = logit_diff(" dog", " car", model)                            # doctest: +SKIP
    >>> metric(model(target), target)                                          # doctest: +SKIP
    tensor([-1.73])
    >>> restoration(metric(patched_logits, target), target=-1.73, source=2.10)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "Metric",
    "MetricGapWarning",
    "PairGaps",
    "answer_prob",
    "check_gaps",
    "final_logits",
    "gap_floor",
    "kl_to_source",
    "logit_diff",
    "metric_name",
    "metric_value",
    "restoration",
]

Metric = Callable[..., Tensor]  # metric(logits [batch, pos, vocab], inputs or None) -> [batch] or scalar

GAP_FRACTION = 0.1  # a gap below a tenth of the metric's larger value is tiny (metrics without their own floor)
ABSOLUTE_FLOOR = 1e-6  # and below float32 rounding of values near 1 whatever the values
KL_FLOOR = 0.01  # nats: runs whose next-token distributions differ less than this are the same run
ANSWER_PROB_FLOOR = 0.01  # answers less probable than this in both runs are not what the model says there


class MetricGapWarning(UserWarning):
    """The clean-corrupt gap of a patching metric is tiny or has the wrong sign in some pairs, so
    restoration there is noise (score at the answer token: ``answer_prefix=``)."""


def final_logits(logits: Float[Tensor, "batch pos vocab"], inputs: Any = None) -> Float[Tensor, "batch vocab"]:
    """Logits at the last real position of each row (``inputs``' attention mask; last column if None).

    ``inputs`` may be ModelInputs, a TokenLayout or an attention mask ``[batch, seq]``.
    """
    if logits.ndim == 2:
        return logits
    if inputs is None:
        return logits[:, -1]
    mask = inputs if isinstance(inputs, Tensor) else inputs.attention_mask
    if mask.shape[-1] < logits.shape[1]:
        raise ValueError(
            f"the logits have {logits.shape[1]} positions but the inputs' attention mask {mask.shape[-1]}: score a run "
            "with the inputs it ran on (with answer_prefix=, the teacher-forced inputs), or pass inputs=None to read "
            "the last column"
        )
    mask = mask[:, : logits.shape[1]].to(logits.device).long()
    if mask.shape[0] != logits.shape[0]:
        raise ValueError(f"the logits have {logits.shape[0]} rows but the inputs {mask.shape[0]}")
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # [batch]: the last 1 of each row
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def reads_final_logits(metric: Metric) -> bool:
    """Whether ``metric`` reads the logits at the last real position of each row only (the
    library's metrics; a metric of one's own says so with an attribute ``reads_final_logits =
    True``). A sweep then unembeds those rows alone: ``[batch, vocab]`` instead of ``[batch, pos,
    vocab]`` (a 10-s clip's full logits are 0.9 GB per row in bf16).

    Example:
        >>> reads_final_logits(logit_diff(1, 0)), reads_final_logits(lambda logits, inputs: logits[:, 3, 0])
        (True, False)
    """
    return isinstance(metric, (_LogitDiff, _AnswerProb, _KLToSource)) or getattr(metric, "reads_final_logits", False) is True


def _upcast(x: Tensor) -> Tensor:
    """At least float32 (bf16 logits are scored in float32; float64 analyses keep float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _tokenizer(model: Any) -> Any:
    if model is None:
        return None
    return getattr(model, "tokenizer", None) if hasattr(model, "cfg") else model


def _token_ids(answer: Any, model: Any, what: str) -> Int[Tensor, "*batch"]:
    """int | single-token str | per-row sequence of those | int tensor -> a long tensor (scalar or [batch])."""
    if isinstance(answer, Tensor):
        if answer.is_floating_point() or answer.is_complex() or answer.dtype == torch.bool:
            raise TypeError(f"{what} as a tensor must hold integer token ids; got dtype {answer.dtype}")
        return _in_vocabulary(answer.long().cpu(), model, what)
    if isinstance(answer, (list, tuple)):
        if not answer:
            raise ValueError(f"{what} is an empty {type(answer).__name__}; give one answer, or one per row")
        return torch.stack([_token_ids(a, model, what) for a in answer])
    if isinstance(answer, str):
        return torch.tensor(single_token(answer, model, what))
    if isinstance(answer, bool) or not isinstance(answer, int) and not hasattr(answer, "__index__"):
        raise TypeError(f"{what} must be a token id (int) or a single-token word (str); got {answer!r} ({type(answer).__name__})")
    return _in_vocabulary(torch.tensor(int(answer)), model, what)


def _in_vocabulary(ids: Tensor, model: Any, what: str) -> Tensor:
    """``ids``, checked against the model's vocabulary (when a model is at hand; else at scoring time)."""
    vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    bad = ids[(ids < 0) | (ids >= vocab)] if vocab is not None else ids[ids < 0]
    if bad.numel():
        where = f"[0, {vocab})" if vocab is not None else "of ids >= 0"
        raise ValueError(f"{what}: token id {int(bad[0])} is outside the vocabulary {where}; pass an id the model has")
    return ids


def _pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    return list(convert(list(ids))) if convert is not None else [str(i) for i in ids]


def _is_one_token(tok: Any, text: str) -> bool:
    try:
        return len(tok.encode(text, add_special_tokens=False)) == 1
    except Exception:  # noqa: BLE001 - a hint only; a tokenizer that cannot encode it gives none
        return False


def single_token(word: str, model: Any, what: str) -> int:
    """The one token id of ``word`` in the model's tokenizer; raises, naming the word, its
    tokenization and what to do, when it is several tokens or the unknown token.

    Example:
        >>> single_token(" barking", model, "answer_a")  # doctest: +SKIP
        73
    """
    tok = _tokenizer(model)
    if tok is None:
        raise ValueError(f"{what} {word!r} is a string but no tokenizer is at hand: pass model= (with a tokenizer) or token ids")
    ids = list(tok.encode(word, add_special_tokens=False))
    if not ids:
        raise ValueError(f"{what} {word!r} tokenizes to nothing; pass a word or a token id")
    unk, unk_id = getattr(tok, "unk_token", None), getattr(tok, "unk_token_id", None)
    if unk_id is not None and unk_id in ids and word.strip() != unk:
        raise ValueError(
            f"{what} {word!r} is not in the vocabulary: it tokenizes to {_pieces(tok, ids)} (the unknown token {unk!r} = "
            f"id {unk_id}), so the metric would score {unk!r}; pass a word the tokenizer knows or a token id"
        )
    if len(ids) > 1:
        hint = next((f" ({other!r} is one token)" for other in (word.strip(), " " + word.strip())
                     if other != word and _is_one_token(tok, other)), "")
        raise ValueError(
            f"{what} {word!r} is {len(ids)} tokens {_pieces(tok, ids)} = ids {ids}; a metric compares single tokens: pass "
            f"one token id (e.g. the first, {ids[0]}, and teacher-force the rest with answer_prefix=) or a single-token "
            f"word{hint}"
        )
    return _in_vocabulary(torch.tensor(ids[0]), model, what).item()


def _pick(final: Float[Tensor, "batch vocab"], ids: Tensor) -> Float[Tensor, " batch"]:
    if ids.numel() and int(ids.max()) >= final.shape[-1]:
        raise ValueError(f"answer token id {int(ids.max())} is outside these logits' vocabulary ({final.shape[-1]} ids)")
    ids = ids.to(final.device)
    if ids.ndim == 0:
        return final[:, ids]
    if ids.shape[0] != final.shape[0]:
        raise ValueError(f"{ids.shape[0]} answers for {final.shape[0]} rows; give one per row or a single one")
    return final.gather(-1, ids[:, None])[:, 0]


def _logit_spread(*finals: Tensor) -> float:
    """sqrt(2) x the logits' standard deviation over the vocabulary (mean over rows): the typical
    difference between two random tokens' logits at the scored position."""
    rows = torch.cat([_upcast(f.detach()).reshape(-1, f.shape[-1]) for f in finals])
    return math.sqrt(2.0) * float(rows.std(-1).mean())


def _relative_floor(source_value: float, target_value: float) -> float:
    return max(GAP_FRACTION * max(abs(source_value), abs(target_value)), ABSOLUTE_FLOOR)


@dataclass
class _LogitDiff:
    a: Tensor
    b: Tensor
    __name__ = "logit_diff"

    def __call__(self, logits: Tensor, inputs: Any = None) -> Float[Tensor, " batch"]:
        final = _upcast(final_logits(logits, inputs))
        return _pick(final, self.a) - _pick(final, self.b)

    @property
    def answer_ids(self) -> tuple[Tensor, ...]:
        return self.a, self.b

    def floor(self, source_final: Tensor, target_final: Tensor, source_value: float, target_value: float) -> float:
        """A gap below the typical logit difference of two random tokens there is noise."""
        return _logit_spread(source_final, target_final)

    def label(self, decode: Callable[[Sequence[int]], list[str]] | None = None) -> str:
        if self.a.ndim or self.b.ndim:
            return self.__name__
        if decode is None:
            return f"logit_diff(id {int(self.a)} - id {int(self.b)})"
        a, b = decode([int(self.a), int(self.b)])
        return f"logit_diff({a.strip()!r} - {b.strip()!r})"


@dataclass
class _AnswerProb:
    answer: Tensor
    __name__ = "answer_prob"

    def __call__(self, logits: Tensor, inputs: Any = None) -> Float[Tensor, " batch"]:
        return _pick(_upcast(final_logits(logits, inputs)).softmax(-1), self.answer)

    @property
    def answer_ids(self) -> tuple[Tensor, ...]:
        return (self.answer,)

    def floor(self, source_final: Tensor, target_final: Tensor, source_value: float, target_value: float) -> float:
        """A tenth of the larger probability, and never below a random token's (1 / vocabulary)."""
        return max(_relative_floor(source_value, target_value), 1.0 / target_final.shape[-1])

    def label(self, decode: Callable[[Sequence[int]], list[str]] | None = None) -> str:
        if self.answer.ndim:
            return self.__name__
        if decode is None:
            return f"answer_prob(id {int(self.answer)})"
        return f"answer_prob({decode([int(self.answer)])[0].strip()!r})"


@dataclass
class _KLToSource:
    source_logprobs: Tensor  # [batch or 1, vocab]
    __name__ = "kl_to_source"

    def __call__(self, logits: Tensor, inputs: Any = None) -> Float[Tensor, " batch"]:
        logq = _upcast(final_logits(logits, inputs)).log_softmax(-1)
        logp = self.source_logprobs.to(logq.device)
        if logp.shape[0] not in (1, logq.shape[0]):
            raise ValueError(f"source logits have {logp.shape[0]} rows for {logq.shape[0]} patched rows")
        return (logp.exp() * (logp - logq)).sum(-1)

    def floor(self, source_final: Tensor, target_final: Tensor, source_value: float, target_value: float) -> float:
        """Runs whose next-token distributions differ by less than KL_FLOOR nats."""
        return KL_FLOOR


def logit_diff(answer_a: Any, answer_b: Any, model: Any = None) -> Metric:
    """Metric: logit of ``answer_a`` minus logit of ``answer_b`` at the last real position, per row.

    Answers are token ids or single-token strings (through ``model.tokenizer``), one for all rows
    or one per row. Positive means the run prefers ``answer_a`` (e.g. the audio-correct word). A
    word the tokenizer splits into several tokens or does not know (``[UNK]``) raises, naming its
    tokenization: pass a token id, or a word that is one token (``" barking"`` after "I hear").
    Score it where the answer word comes: the patching tools take ``answer_prefix="I hear"``.

    Example:
        >>> metric = logit_diff(" dog", " car", model)             # doctest: +SKIP
        >>> metric(model(target), target)                           # doctest: +SKIP
        tensor([-1.73])
    """
    a, b = _token_ids(answer_a, model, "answer_a"), _token_ids(answer_b, model, "answer_b")
    if a.shape == b.shape and torch.equal(a, b):
        raise ValueError(f"answer_a {answer_a!r} and answer_b {answer_b!r} are the same token (id {a.tolist()}): their "
                         "logit difference is 0 in every run; pass two different answers")
    return _LogitDiff(a, b)


def answer_prob(answer: Any, model: Any = None) -> Metric:
    """Metric: probability of ``answer`` (a token id or a single-token word, as in :func:`logit_diff`)
    at the last real position, per row.

    Example:
        >>> answer_prob(" dog", model)(logits, inputs)  # doctest: +SKIP
    """
    return _AnswerProb(_token_ids(answer, model, "answer"))


def kl_to_source(source_logits: Float[Tensor, "batch pos vocab"] | Float[Tensor, "batch vocab"], source: Any = None) -> Metric:
    """Metric: KL(source || run) of the next-token distributions at the last real positions, per row.

    ``source_logits`` are the source run's logits (with ``source`` inputs to find the last real
    position under right padding) or its final logits ``[batch, vocab]``. 0 means the run
    predicts exactly what the source does.

    Example:
        >>> metric = kl_to_source(model(audio_only), audio_only)  # doctest: +SKIP
    """
    return _KLToSource(_upcast(final_logits(source_logits.detach(), source)).log_softmax(-1))


def restoration(patched: Any, target: Any, source: Any, *, floor: float | None = None) -> Any:
    """(patched - target) / (source - target): 0 = the unpatched target, 1 = the source's value.

    Warns (:class:`MetricGapWarning`) where the gap ``source - target`` is at most ``floor``
    (default: a tenth of ``max(|source|, |target|)``, at least 1e-6): dividing by a tiny gap turns
    noise into restoration.

    Example:
        >>> restoration(1.5, target=1.0, source=2.0)
        0.5
    """
    gap = torch.as_tensor(source, dtype=torch.float64) - torch.as_tensor(target, dtype=torch.float64)
    if floor is None:
        floor_t = (GAP_FRACTION * torch.maximum(torch.as_tensor(source, dtype=torch.float64).abs(),
                                                torch.as_tensor(target, dtype=torch.float64).abs())).clamp_min(ABSOLUTE_FLOOR)
    else:
        floor_t = torch.as_tensor(float(floor), dtype=torch.float64)
    tiny = gap.abs() <= floor_t
    if bool(tiny.any()):
        where = "" if gap.ndim == 0 else f" at {tiny.nonzero().flatten().tolist()}"
        shown = float(gap[tiny].flatten()[0]) if gap.ndim else float(gap)
        warnings.warn(
            f"restoration: the gap source - target is tiny{where} ({shown:.3g}, at most "
            f"{float(floor_t.broadcast_to(gap.shape)[tiny].flatten()[0]):.3g}): restoration divides by noise there. "
            "Score where the answer is read out (answer_prefix=) or leave those pairs out",
            MetricGapWarning, stacklevel=2,
        )
    return (patched - target) / (source - target)


def _scalar(value: Any) -> float:
    return float(torch.as_tensor(value).float().mean())


def metric_value(metric: Metric, logits: Float[Tensor, "batch pos vocab"], inputs: Any) -> float:
    """``metric(logits, inputs)`` as one float (the mean over rows): a sweep's cell value.

    Example:
        >>> metric_value(logit_diff(1, 0), torch.tensor([[[0.0, 2.0]], [[0.0, 4.0]]]), None)
        3.0
    """
    return _scalar(metric(logits, inputs))


def metric_name(metrics: Sequence[Metric], decode: Callable[[Sequence[int]], list[str]] | None = None) -> str:
    """A readable name for the metric of a sweep: ``"logit_diff('barking' - 'meowing')"`` for one
    metric with words, the bare name when the pairs' metrics differ (``"logit_diff (answers per pair)"``).

    Example:
        >>> metric_name([logit_diff(3, 5)]), metric_name([logit_diff(3, 5), logit_diff(4, 5)])
        ('logit_diff(id 3 - id 5)', 'logit_diff (answers per pair)')
    """
    labels = [m.label(decode) if hasattr(m, "label") else getattr(m, "__name__", type(m).__name__) for m in metrics]
    if len(set(labels)) == 1:
        return labels[0]
    bare = getattr(metrics[0], "__name__", type(metrics[0]).__name__)
    return f"{bare} (answers per pair)"


def gap_floor(metric: Metric, source_final: Tensor, target_final: Tensor, source_value: float, target_value: float) -> float:
    """The metric's noise floor for one pair: a clean-corrupt gap at or below it measures nothing.

    :func:`logit_diff`: the typical logit difference of two random tokens at the scored position
    (sqrt(2) x the logits' standard deviation over the vocabulary); :func:`answer_prob`: a tenth of
    the larger probability (at least 1 / vocabulary); :func:`kl_to_source`: 0.01 nats; any other
    metric: a tenth of ``max(|source|, |target|)``; never below 1e-6.

    Example:
        >>> gap_floor(lambda logits, inputs: logits, None, None, 2.0, -0.5)
        0.2
    """
    own = getattr(metric, "floor", None)
    if own is not None:
        return float(own(source_final, target_final, source_value, target_value))
    return _relative_floor(source_value, target_value)


def _answer_mass(metric: Metric, *finals: Tensor) -> float:
    """The metric's answers' total probability at the scored position, the larger of the runs (NaN without answers)."""
    ids = getattr(metric, "answer_ids", None)
    if ids is None:
        return float("nan")
    masses = []
    for final in finals:
        probs = _upcast(final.detach()).reshape(-1, final.shape[-1]).softmax(-1)
        masses.append(float(sum(_pick(probs, a.expand(probs.shape[0]) if a.ndim == 0 else a) for a in ids).mean()))
    return max(masses)


@dataclass(frozen=True)
class PairGaps:
    """The clean-corrupt gap of each (source, target) pair of a patching sweep.

    ``source`` / ``target``: the metric on the unpatched source and target runs; ``floor``: the
    metric's noise floor there (:func:`gap_floor`); ``top_token`` / ``top_prob``: what the target
    run predicts at the scored position; ``answer_mass``: the metric's answers' probability there
    (the larger of the two runs; NaN for metrics without answers).

    Example:
        >>> pairs = [(2.0, -1.0), (1.0, 0.95), (3.0, 0.0), (-3.0, 1.0)]  # (source, target) values
        >>> gaps = PairGaps.of([(s, t, 0.5, 7, 0.9, 0.9) for s, t in pairs])  # noise floor 0.5
        >>> gaps.tiny.tolist(), gaps.wrong_sign.tolist(), gaps.verdicts()
        ([False, True, False, False], [False, False, False, True], ['ok', 'tiny gap', 'ok', 'wrong sign'])
    """

    source: Float[Tensor, " pair"]
    target: Float[Tensor, " pair"]
    floor: Float[Tensor, " pair"]
    top_token: Int[Tensor, " pair"]
    top_prob: Float[Tensor, " pair"]
    answer_mass: Float[Tensor, " pair"]

    @classmethod
    def of(cls, measures: Sequence[tuple[float, float, float, int, float, float]]) -> "PairGaps":
        """From one ``(source, target, floor, top_token, top_prob, answer_mass)`` per pair."""
        columns = list(zip(*measures)) if measures else [()] * 6
        floats = [torch.tensor(c, dtype=torch.float64) for c in columns]
        return cls(floats[0], floats[1], floats[2], torch.tensor(columns[3], dtype=torch.long), floats[4], floats[5])

    @property
    def gap(self) -> Float[Tensor, " pair"]:
        """source - target per pair (restoration's denominator)."""
        return self.source - self.target

    @property
    def tiny(self) -> Tensor:
        """Pairs whose |gap| is at most the metric's noise floor."""
        return self.gap.abs() <= self.floor

    @property
    def wrong_sign(self) -> Tensor:
        """Pairs (not tiny) whose gap has the sign opposite to most pairs' gaps (a tie: to the larger
        gaps' side). One pair alone has no wrong sign."""
        signs = torch.sign(self.gap) * (~self.tiny)
        majority = torch.sign(signs.sum())
        if majority == 0:
            majority = torch.sign((self.gap * (~self.tiny)).sum())
        return (signs != 0) & (signs == -majority) & (majority != 0)

    @property
    def weak(self) -> Tensor:
        """Pairs whose restoration is noise: a tiny gap or the wrong sign."""
        return self.tiny | self.wrong_sign

    def verdicts(self) -> list[str]:
        return ["tiny gap" if t else "wrong sign" if w else "ok" for t, w in zip(self.tiny.tolist(), self.wrong_sign.tolist())]

    def table(self) -> Any:
        """A pandas DataFrame, one row per pair: source, target, gap, floor, check."""
        import pandas as pd

        return pd.DataFrame({"pair": range(len(self.source)), "source": self.source.numpy(), "target": self.target.numpy(),
                             "gap": self.gap.numpy(), "floor": self.floor.numpy(), "check": self.verdicts()})

    def message(self, tool: str, decode: Callable[[Sequence[int]], list[str]] | None = None) -> str | None:
        """The warning for the weak pairs (None when every pair is fine)."""
        if not bool(self.weak.any()):
            return None
        parts = []
        tiny = self.tiny.nonzero().flatten().tolist()
        if tiny:
            shown = ", ".join(f"{float(self.gap[i]):.3g} (floor {float(self.floor[i]):.3g})" for i in tiny[:6])
            parts.append(f"tiny in pairs {tiny}: {shown}")
        wrong = self.wrong_sign.nonzero().flatten().tolist()
        if wrong:
            side = "positive" if float(self.gap[~self.weak].sum()) > 0 else "negative"
            parts.append(f"of the wrong sign in pairs {wrong} ({', '.join(f'{float(self.gap[i]):.3g}' for i in wrong[:6])}; "
                         f"most pairs' gaps are {side})")
        hint = ""
        weak = self.weak.nonzero().flatten().tolist()
        mass = self.answer_mass[weak]
        if bool((mass < ANSWER_PROB_FLOOR).any()):
            i = weak[int(mass.argmin())]
            top = decode([int(self.top_token[i])])[0] if decode is not None else str(int(self.top_token[i]))
            hint = (f" In pair {i} the answers have probability {float(self.answer_mass[i]):.2g} at the scored position, "
                    f"where the target run predicts {top!r} (p = {float(self.top_prob[i]):.2f}): the answer word is not "
                    "what the model says there.")
        return (f"{tool}: the clean-corrupt gap (the metric on the source run minus on the target run) is "
                f"{'; '.join(parts)}. Restoration divides by that gap, so in these pairs it is noise.{hint} Score where "
                "the answer word is read out (answer_prefix=, e.g. 'I hear': the answer's first words teacher-forced), "
                "or leave those pairs out; .pair_table() lists every pair's gap")


def measure_pair(metric: Metric, source_final: Tensor, target_final: Tensor, source_value: float,
                 target_value: float) -> tuple[float, float, float, int, float, float]:
    """One pair's entry of :class:`PairGaps` from the unpatched runs' final logits ``[rows, vocab]`` and values."""
    floor = gap_floor(metric, source_final, target_final, source_value, target_value)
    probs = _upcast(target_final.detach()).reshape(-1, target_final.shape[-1]).softmax(-1).mean(0)
    return (source_value, target_value, floor, int(probs.argmax()), float(probs.max()),
            _answer_mass(metric, source_final, target_final))


def check_gaps(gaps: PairGaps, tool: str, decode: Callable[[Sequence[int]], list[str]] | None = None,
               stacklevel: int = 3) -> None:
    """Warn (:class:`MetricGapWarning`) naming the pairs whose gap is tiny or has the wrong sign.

    Example:
        >>> check_gaps(sweep.gaps, "patching sweep")  # doctest: +SKIP
    """
    message = gaps.message(tool, decode)
    if message is not None:
        warnings.warn(message, MetricGapWarning, stacklevel=stacklevel)
