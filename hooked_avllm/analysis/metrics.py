"""Metrics on a run's logits at the last real position of each row, for patching and sweeps.

A metric is ``metric(logits [batch, pos, vocab], inputs or None) -> [batch] or scalar``:
:func:`logit_diff` and :func:`answer_prob` score answer tokens (ids or strings), :func:`kl_to_source`
compares with a source run's next-token distribution, and :func:`restoration` normalises a patched
value between the unpatched target (0) and the source (1).

Example:
    >>> metric = logit_diff(" dog", " car", model)                            # doctest: +SKIP
    >>> metric(model(target), target)                                          # doctest: +SKIP
    tensor([-1.73])
    >>> restoration(metric(patched_logits, target), target=-1.73, source=2.10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Metric", "answer_prob", "final_logits", "kl_to_source", "logit_diff", "metric_value", "restoration"]

Metric = Callable[..., Tensor]  # metric(logits [batch, pos, vocab], inputs or None) -> [batch] or scalar


def final_logits(logits: Float[Tensor, "batch pos vocab"], inputs: Any = None) -> Float[Tensor, "batch vocab"]:
    """Logits at the last real position of each row (``inputs``' attention mask; last column if None).

    ``inputs`` may be ModelInputs, a TokenLayout or an attention mask ``[batch, seq]``.
    """
    if logits.ndim == 2:
        return logits
    if inputs is None:
        return logits[:, -1]
    mask = inputs if isinstance(inputs, Tensor) else inputs.attention_mask
    mask = mask[:, : logits.shape[1]].to(logits.device).long()
    if mask.shape[0] != logits.shape[0]:
        raise ValueError(f"the logits have {logits.shape[0]} rows but the inputs {mask.shape[0]}")
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # [batch]: the last 1 of each row
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def _upcast(x: Tensor) -> Tensor:
    """At least float32 (bf16 logits are scored in float32; float64 analyses keep float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _tokenizer(model: Any) -> Any:
    if model is None:
        return None
    return getattr(model, "tokenizer", None) if hasattr(model, "cfg") else model


def _token_ids(answer: Any, model: Any, what: str) -> Int[Tensor, "*batch"]:
    """int | str | per-row sequence of those | tensor -> a long tensor (scalar or [batch])."""
    if isinstance(answer, Tensor):
        return answer.long()
    if isinstance(answer, (list, tuple)):
        return torch.stack([_token_ids(a, model, what) for a in answer])
    if isinstance(answer, str):
        tok = _tokenizer(model)
        if tok is None:
            raise ValueError(f"{what} {answer!r} is a string but no tokenizer is at hand: pass model= (with a tokenizer) or token ids")
        ids = tok.encode(answer, add_special_tokens=False)
        if not ids:
            raise ValueError(f"{what} {answer!r} tokenizes to nothing")
        return torch.tensor(ids[0])
    return torch.tensor(int(answer))


def _pick(final: Float[Tensor, "batch vocab"], ids: Tensor) -> Float[Tensor, " batch"]:
    ids = ids.to(final.device)
    if ids.ndim == 0:
        return final[:, ids]
    if ids.shape[0] != final.shape[0]:
        raise ValueError(f"{ids.shape[0]} answers for {final.shape[0]} rows; give one per row or a single one")
    return final.gather(-1, ids[:, None])[:, 0]


@dataclass
class _LogitDiff:
    a: Tensor
    b: Tensor
    __name__ = "logit_diff"

    def __call__(self, logits: Tensor, inputs: Any = None) -> Float[Tensor, " batch"]:
        final = _upcast(final_logits(logits, inputs))
        return _pick(final, self.a) - _pick(final, self.b)


@dataclass
class _AnswerProb:
    answer: Tensor
    __name__ = "answer_prob"

    def __call__(self, logits: Tensor, inputs: Any = None) -> Float[Tensor, " batch"]:
        return _pick(_upcast(final_logits(logits, inputs)).softmax(-1), self.answer)


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


def logit_diff(answer_a: Any, answer_b: Any, model: Any = None) -> Metric:
    """Metric: logit of ``answer_a`` minus logit of ``answer_b`` at the last real position, per row.

    Answers are token ids or strings (first token, through ``model.tokenizer``), one for all rows
    or one per row. Positive means the run prefers ``answer_a`` (e.g. the audio-correct word).

    Example:
        >>> metric = logit_diff(" dog", " car", model)             # doctest: +SKIP
        >>> metric(model(target), target)                           # doctest: +SKIP
        tensor([-1.73])
    """
    return _LogitDiff(_token_ids(answer_a, model, "answer_a"), _token_ids(answer_b, model, "answer_b"))


def answer_prob(answer: Any, model: Any = None) -> Metric:
    """Metric: probability of ``answer`` (id or string, first token) at the last real position, per row.

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


def restoration(patched: Any, target: Any, source: Any) -> Any:
    """(patched - target) / (source - target): 0 = the unpatched target, 1 = the source's value.

    Example:
        >>> restoration(1.5, target=1.0, source=2.0)
        0.5
    """
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
