"""The source run of a patch, one for every tool that patches (``patch``, ``patching_sweep``,
``attribution_patching``): pair the source's positions with the target's, run the source once
keeping only the patched hooks at the aligned positions, and keep its answer to score.

Where the answer is scored is the same for the three tools: ``answer_prefix`` (the answer's first
words, e.g. ``"I hear"``) is teacher-forced after both runs' prompts (:func:`with_answer_prefix`),
so every metric reads the last forced position, where the model says the answer word, rather
than the last prompt position, where a chat model says "I".

Example:
    >>> run = run_source(model, audio_only, audio_video, ["blocks.3.hook_resid_pre"], "audio")  # doctest: +SKIP
    >>> run.store["blocks.3.hook_resid_pre"].shape          # [aligned positions, d_model]      # doctest: +SKIP
    >>> run.value(logit_diff(" dog", " car", model))          # the metric on the source's answer  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_avllm.analysis.alignment import Modality, PositionAlignment, align_positions
from hooked_avllm.analysis.metrics import Metric, final_logits, metric_value
from hooked_avllm.inputs.batching import teacher_forced_inputs
from hooked_avllm.vocabulary import ENCODER_PREFIXES

__all__ = [
    "AnswerPrefix",
    "SourceRun",
    "answer_prefix_ids",
    "check_reach",
    "is_encoder_hook",
    "paired_runs",
    "run_source",
    "patched_at",
    "scored_at",
    "with_answer_prefix",
]

AnswerPrefix = str | Sequence[int] | Tensor | None  # "I hear", its token ids, or None (the last prompt position)


def is_encoder_hook(name: str) -> bool:
    """Whether a hook sits in a tower or projector (no LLM positions: patched whole)."""
    return name.startswith(ENCODER_PREFIXES)


def check_reach(align: PositionAlignment, act: Tensor, name: str, side: str, row_offset: int = 0) -> None:
    """Raise when ``align`` reaches past ``act``'s rows or positions on ``side`` (source or target)."""
    batch = align.source_batch if side == "source" else align.target_batch
    pos = align.source_pos if side == "source" else align.target_pos
    if len(pos) == 0:
        return
    if int(pos.max()) >= act.shape[1] or int(batch.max()) + row_offset >= act.shape[0]:
        raise ValueError(
            f"the alignment reaches {side} row {int(batch.max()) + row_offset}, position {int(pos.max())} but {name} "
            f"has shape {tuple(act.shape[:2])} here; build the alignment from the layouts of these very runs"
        )


def _aligned(act: Tensor, align: PositionAlignment, name: str) -> Tensor:
    """Source activation at the aligned positions, in target order: [n, ...] (encoder hooks: whole)."""
    if is_encoder_hook(name):
        return act.detach().clone()
    check_reach(align, act, name, "source")
    return act[align.source_batch.to(act.device), align.source_pos.to(act.device)].detach().clone()


@dataclass
class SourceRun:
    """One source run: the ``align``-ment with the target, ``store[name]`` the source activation
    at the aligned positions ([n, ...] in target order; whole tensors for encoder hooks) and
    ``answer_logits`` the source's final logits for each target row (from the source row patched
    into it), ``[target_batch, vocab]``."""

    align: PositionAlignment
    store: dict[str, Tensor]
    answer_logits: Float[Tensor, "target_batch vocab"]

    def value(self, metric: Metric) -> float:
        """``metric`` on the source's answer, averaged over the target rows (the restoration's 1)."""
        return metric_value(metric, self.answer_logits[:, None], None)


def run_source(
    model: Any,
    source: Any,
    target: Any,
    hook_names: Sequence[str],
    modality: Modality = "audio",
    *,
    time: tuple[float, float] | None = None,
    source_rows: Sequence[int] | None = None,
) -> SourceRun:
    """Align ``source`` with ``target`` (see :func:`align_positions`) and run ``source`` once
    (no gradients), keeping ``hook_names`` at the aligned positions; raises when one of them does
    not fire in the source run.

    Example:
        >>> run = run_source(model, audio_only, audio_video, ["blocks.1.hook_resid_pre"])  # doctest: +SKIP
        >>> logits = model.run_with_hooks(audio_video, fwd_hooks=patching_hooks(run.store, run.align, names))  # doctest: +SKIP
    """
    align = align_positions(source, target, modality, time=time, source_rows=source_rows)
    if len(align) == 0 and not all(is_encoder_hook(name) for name in hook_names):
        window = "" if time is None else f" with time={time}"
        raise ValueError(
            f"modality={_shown(modality)}{window} selects no position in the source or the target: nothing would be "
            "patched. Choose positions both runs have (e.g. 'audio' where both carry audio, 'last', or a time window "
            "inside the clip)"
        )
    store: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any) -> None:
        store[hook.name] = _aligned(act, align, hook.name)

    with torch.no_grad():
        logits = model.run_with_hooks(source, fwd_hooks=[(name, keep) for name in hook_names])
    for name in hook_names:
        if name not in store:
            raise ValueError(f"{name} did not fire in the source run (is that tower used there?); the source has nothing to patch in")
    answers = final_logits(logits, source)[align.source_rows.to(logits.device)]
    return SourceRun(align, store, answers)


def _shown(modality: Any) -> str:
    if isinstance(modality, Tensor):
        return f"<a mask of shape {tuple(modality.shape)}>"
    if isinstance(modality, tuple) and all(isinstance(m, Tensor) for m in modality):
        return "<(source_mask, target_mask)>"
    return repr(modality)


def answer_prefix_ids(model: Any, answer_prefix: AnswerPrefix) -> Tensor | None:
    """The token ids ``[n]`` of ``answer_prefix`` (text through ``model.tokenizer``, or ids),
    checked: not empty, no unknown token, inside the vocabulary. None stays None.

    Example:
        >>> answer_prefix_ids(model, "I hear")  # doctest: +SKIP
        tensor([40, 35])
    """
    if answer_prefix is None:
        return None
    if isinstance(answer_prefix, str):
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise ValueError(f"answer_prefix={answer_prefix!r} is text but the model has no tokenizer; pass its token ids")
        ids = list(tok.encode(answer_prefix, add_special_tokens=False))
        if not ids:
            raise ValueError(f"answer_prefix={answer_prefix!r} tokenizes to nothing; pass the answer's first words "
                             "(e.g. 'I hear'), or None to score at the last prompt position")
        unk_id = getattr(tok, "unk_token_id", None)
        if unk_id is not None and unk_id in ids:
            pieces = tok.convert_ids_to_tokens(ids)
            raise ValueError(f"answer_prefix={answer_prefix!r} holds a word the tokenizer does not know: it tokenizes to "
                             f"{pieces} ({tok.unk_token!r} = id {unk_id}); write the answer as the model writes it")
        return torch.tensor(ids, dtype=torch.long)
    if isinstance(answer_prefix, Tensor):
        if answer_prefix.is_floating_point() or answer_prefix.dtype == torch.bool:
            raise TypeError(f"answer_prefix as a tensor must hold integer token ids; got dtype {answer_prefix.dtype}")
        ids = answer_prefix.detach().cpu().long().flatten()
    elif isinstance(answer_prefix, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in answer_prefix):
        ids = torch.tensor(list(answer_prefix), dtype=torch.long)
    else:
        raise TypeError(f"answer_prefix must be text ('I hear'), token ids (a list of ints or a tensor) or None; "
                        f"got {answer_prefix!r}")
    if ids.numel() == 0:
        raise ValueError("answer_prefix is empty; pass the answer's first words (e.g. 'I hear'), or None to score at the "
                         "last prompt position")
    vocab = model.cfg.d_vocab
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise ValueError(f"answer_prefix holds token id {int(bad[0])}, outside the vocabulary [0, {vocab})")
    return ids


def with_answer_prefix(inputs: Any, ids: Tensor | None) -> Any:
    """``inputs`` with the answer prefix ``ids`` teacher-forced after every row (unchanged for None).

    Example:
        >>> forced = with_answer_prefix(conflict, answer_prefix_ids(model, "I hear"))  # doctest: +SKIP
    """
    if ids is None:
        return inputs
    if getattr(inputs, "layout", None) is None:
        raise TypeError(f"answer_prefix= needs prepared inputs (model.prepare), got {type(inputs).__name__}")
    try:
        return teacher_forced_inputs(inputs, ids.to(inputs.input_ids.device))
    except ValueError as err:
        raise ValueError(f"answer_prefix= cannot be appended to these inputs: {err}") from err


def scored_at(model: Any, answer_prefix: Any) -> str:
    """Where a tool's metric is read, for titles and tables.

    Example:
        >>> scored_at(None, None)
        'the last input position (no answer_prefix)'
    """
    if answer_prefix is None:
        return "the last input position (no answer_prefix)"
    if isinstance(answer_prefix, (list, tuple)) and answer_prefix and not isinstance(answer_prefix[0], int):
        return "the answer token (after each pair's teacher-forced answer prefix)"
    if isinstance(answer_prefix, str):
        return f"the answer token (after the teacher-forced {answer_prefix.strip()!r})"
    ids = torch.as_tensor(answer_prefix).flatten().tolist()
    tok = getattr(model, "tokenizer", None)
    text = tok.decode(ids) if tok is not None else f"ids {ids}"
    return f"the answer token (after the teacher-forced {text.strip() if tok is not None else text})"


def patched_at(modality: Any, time: Any = None) -> str:
    """Which positions a patch writes, for titles: ``"the audio positions in [0, 2) s"``.

    Example:
        >>> patched_at("audio", (0.0, 2.0)), patched_at("last")
        ('the audio positions in [0, 2) s', 'the last position')
    """
    if isinstance(modality, str):
        where = "the last position" if modality == "last" else f"the {modality} positions"
    elif isinstance(modality, (list, tuple)) and modality and all(isinstance(m, str) for m in modality):
        where = f"the {' + '.join(modality)} positions"
    else:
        where = "the masked positions"
    return where if time is None else f"{where} in [{float(time[0]):g}, {float(time[1]):g}) s"


def _per_pair_prefixes(answer_prefix: Any, n_pairs: int) -> list:
    """One prefix per pair: a list of prefixes (text or id lists) of the pairs' length, or one for all."""
    per_pair = isinstance(answer_prefix, (list, tuple)) and len(answer_prefix) > 0 and all(
        isinstance(p, (str, list, tuple, Tensor)) for p in answer_prefix)
    if not per_pair:
        return [answer_prefix] * n_pairs
    if len(answer_prefix) != n_pairs:
        raise ValueError(f"answer_prefix has {len(answer_prefix)} prefixes for {n_pairs} (source, target) pairs; give one "
                         "prefix (for all) or one per pair")
    return list(answer_prefix)


def paired_runs(source: Any, target: Any, metric: Metric | Sequence[Metric], model: Any = None,
                answer_prefix: Any = None) -> tuple[list[tuple[Any, Any]], list[Metric]]:
    """(source, target) pairs from one run each or equal-length lists, and one metric per pair;
    with ``answer_prefix`` (one for all pairs, or one per pair) teacher-forced after both runs.

    Example:
        >>> pairs, metrics = paired_runs(["s0", "s1"], ["t0", "t1"], len)
        >>> pairs, metrics == [len, len]
        ([('s0', 't0'), ('s1', 't1')], True)
    """
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources for {len(targets)} targets; give (source, target) pairs of equal-length lists")
    metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric] * len(sources)
    if len(metrics) != len(sources):
        raise ValueError(f"{len(metrics)} metrics for {len(sources)} (source, target) pairs; give one metric or one per pair")
    for m in metrics:
        if isinstance(m, str) or not callable(m):
            raise TypeError(f"metric must be a function metric(logits, inputs) such as logit_diff(' dog', ' car', model); "
                            f"got {m!r}")
    pairs = list(zip(sources, targets))
    if answer_prefix is not None:
        prefixes = [answer_prefix_ids(model, p) for p in _per_pair_prefixes(answer_prefix, len(pairs))]
        pairs = [(with_answer_prefix(s, ids), with_answer_prefix(t, ids)) for (s, t), ids in zip(pairs, prefixes)]
    return pairs, metrics
