"""The source run of a patch, one for every tool that patches (``patch``, ``patching_sweep``,
``attribution_patching``): pair the source's positions with the target's, run the source once
keeping only the patched hooks at the aligned positions, and keep its answer to score.

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
from hooked_avllm.vocabulary import ENCODER_PREFIXES

__all__ = ["SourceRun", "check_reach", "is_encoder_hook", "paired_runs", "run_source"]


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


def paired_runs(source: Any, target: Any, metric: Metric | Sequence[Metric]) -> tuple[list[tuple[Any, Any]], list[Metric]]:
    """(source, target) pairs from one run each or equal-length lists, and one metric per pair.

    Example:
        >>> paired_runs(["s0", "s1"], ["t0", "t1"], "m")
        ([('s0', 't0'), ('s1', 't1')], ['m', 'm'])
    """
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources for {len(targets)} targets; give (source, target) pairs of equal-length lists")
    metrics = list(metric) if isinstance(metric, (list, tuple)) else [metric] * len(sources)
    if len(metrics) != len(sources):
        raise ValueError(f"{len(metrics)} metrics for {len(sources)} (source, target) pairs; give one metric or one per pair")
    return list(zip(sources, targets)), metrics
