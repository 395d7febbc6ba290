"""Attribution patching: the linear estimate of activation patching from one backward pass.

Activation patching writes the source run's activation into the target run and re-runs it: one
forward per (layer, component). Attribution patching estimates every patch at once from the
target run's gradient: patching ``act`` from source into target changes the metric by about

    (source_act - target_act) . d metric / d act        (evaluated on the target run)

summed over the patched positions (the aligned ``modality`` tokens, as in
:func:`~hooked_avllm.analysis.patching.patching_sweep`; per head for ``hook_z``). The cost per
(source, target) pair is one source forward, one target forward and one backward, whatever the
number of cells; the backward keeps the activations from the first swept hook on (an LLM-only
sweep keeps none of the towers'). The estimate is exact where the metric is linear in the activation (e.g.
``ln_final.hook_normalized`` under a logit difference) and good where the patch is small; use it to
find the cells worth a real patch.

The metric is scored where the real sweep scores it: ``answer_prefix="I hear"`` teacher-forces the
answer's first words after both runs, and the result reports each pair's clean-corrupt gap
(``ap.components.pair_table()``), warning when it is tiny or of the wrong sign, as
:func:`~hooked_avllm.analysis.patching.patching_sweep` does.

Example:
    >>> metric = logit_diff(" barking", " rumbling", model)                               # doctest: +SKIP
    >>> ap = attribution_patching(model, audio_only, audio_video, metric, answer_prefix="I hear")  # doctest: +SKIP
    >>> ap.components.values.shape, ap.heads.values.shape     # [component, layer], [layer, head]  # doctest: +SKIP
    >>> ap.components.plot("attribution.png"); ap.position_table().head()                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import textwrap

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.analysis.alignment import Modality, PositionAlignment
from hooked_avllm.analysis.logit_lens import token_decoder
from hooked_avllm.analysis.metrics import (Metric, PairGaps, check_gaps, final_logits, measure_pair, metric_name,
                                           reads_final_logits)
from hooked_avllm.analysis.patching import PatchingSweep, SweepCells, checked_layers, sweep_cells
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.analysis.runner import SweepUnit, offset_column, run_sweep
from hooked_avllm.analysis.source_run import (
    AnswerPrefix,
    is_encoder_hook,
    paired_runs,
    patched_at,
    run_source,
    scored_at,
)

__all__ = ["AttributionPatching", "AttributionSweep", "attribution_patching"]


@dataclass
class AttributionSweep(PatchingSweep):
    """An attribution-patching estimate, shaped like a :class:`PatchingSweep`.

    ``per_pair`` holds the *estimated* patched metric (target value + estimated change), so
    ``values``, ``restoration``, ``table()`` and ``plot()`` read as those of the real sweep;
    ``effect`` is the estimated change itself. ``per_position[p]`` is ``[row, col, n_p]``: the
    estimate of patching each aligned position alone (``positions[p]``: its target (row, position)
    pairs); rows filled by a whole-tensor hook (an encoder) have NaN there. ``n_forwards`` is 0
    (no patched forward); the pair's cost is ``n_backwards`` backward passes, 1 per pair. Its
    figures are titled "attribution patching (linear estimate)", the real sweep's "activation
    patching (real)".
    """

    method: ClassVar[str] = "attribution patching (linear estimate)"

    per_position: list[Tensor] | None = None
    positions: list[Int[Tensor, "n 2"]] | None = None
    position_times: list[Tensor] | None = None
    n_backwards: int = 0

    @property
    def effect(self) -> Float[Tensor, "row col"]:
        """The estimated change of the metric, averaged over pairs."""
        return (self.per_pair - self.target_value[:, None, None]).mean(0)

    def position_table(self) -> Any:
        """A long pandas DataFrame: one row per (cell, aligned position, pair), with the target row,
        position, its time in the clip (s; NaN for text) and the attribution."""
        import pandas as pd

        rows = []
        for p, (attr, where, times) in enumerate(zip(self.per_position, self.positions, self.position_times)):
            for i, r in enumerate(self.row_labels):
                if i in self.fixed_rows and self.axis_names[0] == "component" and bool(torch.isnan(attr[i]).all()):
                    continue
                for j, c in enumerate(self.col_labels):
                    values = attr[i, j]
                    if bool(torch.isnan(values).all()):
                        continue
                    for k in range(values.shape[0]):
                        rows.append({"pair": p, self.axis_names[0]: r, self.axis_names[1]: c, "batch": int(where[k, 0]),
                                     "position": int(where[k, 1]), "time": float(times[k]), "attribution": float(values[k])})
        return pd.DataFrame(rows, columns=["pair", *self.axis_names, "batch", "position", "time", "attribution"])

    def plot_positions(self, row: Any, path: str | Path | None = None, pair: int = 0, title: str | None = None) -> Any:
        """Heatmap of the per-position estimate for one component (or one layer of a head sweep):
        columns (layers or heads) down, aligned positions across, labelled by their time in the
        clip; colour is the estimated change of the metric. Saved to ``path`` when given."""
        import numpy as np

        if row not in self.row_labels:
            raise ValueError(f"{row!r} is not a row of this sweep; rows are {self.row_labels}")
        i = self.row_labels.index(row)
        data = self.per_position[pair][i].numpy()  # [col, n]
        finite = data[~np.isnan(data)]
        bound = float(np.abs(finite).max()) if finite.size else 1.0
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(max(4.0, 0.12 * data.shape[1] + 2), max(2.0, 0.3 * data.shape[0] + 1.2)))
        image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        times = self.position_times[pair].numpy()
        step = max(1, len(times) // 12)
        ticks = list(range(0, len(times), step))
        labels = [f"{times[t]:.2f}" if np.isfinite(times[t]) else str(int(self.positions[pair][t, 1])) for t in ticks]
        ax.set_xticks(ticks, labels, rotation=90)
        ax.set_yticks(range(len(self.col_labels)), [str(c) for c in self.col_labels])
        ax.set_xlabel("aligned position (time in the clip, s; position index for text)")
        ax.set_ylabel(self.axis_names[1])
        ax.set_title(title or f"{self.method}, {self.axis_names[0]} {row}: estimated change of {self.metric_name}\n"
                              f"pair {pair}, scored at {self.scored_at}", fontsize=9)
        height = fig.get_size_inches()[1]
        label = "\n".join(textwrap.wrap(f"estimated change of {self.metric_name}", max(16, int(height * 11))))
        fig.colorbar(image, ax=ax, label=label)  # wrapped to the bar's height (about 11 characters an inch)
        return save(fig, path)


@dataclass
class AttributionPatching:
    """Result of :func:`attribution_patching`: ``components`` ([component, layer]) and, from the same
    backward pass, ``heads`` ([layer, head] of ``hook_z``; None when ``heads=False``)."""

    components: AttributionSweep
    heads: AttributionSweep | None


def attribution_patching(
    model: Any,
    source: Any,
    target: Any,
    metric: Metric | Sequence[Metric],
    layers: Sequence[int] | None = None,
    components: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    modality: Modality = "audio",
    *,
    heads: bool | Sequence[int] = True,
    time: tuple[float, float] | None = None,
    source_rows: Sequence[int] | None = None,
    answer_prefix: AnswerPrefix | Sequence[AnswerPrefix] = None,
    progress: bool = True,
    distributed: bool | None = None,
    resume: str | os.PathLike | None = None,
) -> AttributionPatching:
    """Estimate :func:`~hooked_avllm.analysis.patching.patching_sweep` for every cell from one
    backward pass per (source, target) pair (see the module docstring).

    Takes the arguments of ``patching_sweep`` (pairs of runs across layouts, aligned by
    ``modality``, ``time`` and ``source_rows``; components as there: LLM short names, encoder
    templates, full hook names; ``answer_prefix`` teacher-forced after both runs, where the metric
    is then read, and the per-pair gap check with its warning); ``heads=True`` (or a list of heads) also estimates the per-head
    ``hook_z`` patches of the same layers. ``metric`` must be differentiable in the logits (all of
    :mod:`hooked_avllm.analysis.metrics` are). ``distributed``: under ``torchrun`` each rank
    estimates a contiguous block of the pairs and every rank returns the whole result (see
    :func:`hooked_avllm.parallel.active`); ``False`` runs every pair in every process. The pairs
    run through :func:`hooked_avllm.analysis.runner.run_sweep` (``progress``: a bar over pairs x
    cells, every cell of a pair at once, as they come from its one backward pass). ``resume``: a
    results folder where each pair's estimates are written as they come (and its per-pair table
    rows as Parquet), read back instead of recomputed when started again
    (:mod:`~hooked_avllm.analysis.sweep_store`).

    Returns:
        :class:`AttributionPatching` with ``components`` and ``heads`` sweeps; their ``values`` /
        ``restoration`` compare directly with a real sweep's, ``effect`` is the estimated change,
        ``per_position`` the estimate per aligned token.

    Example:
        >>> ap = attribution_patching(model, audio_only, audio_video, logit_diff(" dog", " car", model))  # doctest: +SKIP
        >>> ap.components.restoration                                         # [component, layer]  # doctest: +SKIP
        >>> ap.heads.plot("heads.png")                                                              # doctest: +SKIP
    """
    layers = checked_layers(model, layers)
    if not isinstance(heads, bool) and (isinstance(heads, (str, int)) or not isinstance(heads, Sequence)):
        raise TypeError(f"heads={heads!r}: pass True (every head), False (no head sweep) or a list of heads, e.g. [0, 3]")
    grids = [sweep_cells(model, layers, components, None)]
    if heads is not False:
        grids.append(sweep_cells(model, layers, ("z",), None if heads is True else heads))
    names = sorted(set().union(*(g.names for g in grids)))
    pairs, metrics = paired_runs(source, target, metric, model, answer_prefix)

    def one_pair(unit: SweepUnit) -> tuple[tuple, list[_PairEstimate]]:
        (src, tgt), pair_metric = unit.item
        source_run = run_source(model, src, tgt, names, modality, time=time, source_rows=source_rows)
        value, final, acts, grads = _target_gradients(model, tgt, pair_metric, names)
        layout = getattr(tgt, "layout", None)
        estimates = [_estimate(g, source_run.align, source_run.store, acts, grads, layout) for g in grids]
        source_value = source_run.value(pair_metric)
        return measure_pair(pair_metric, source_run.answer_logits, final, source_value, value), estimates

    tokenizer = getattr(model, "tokenizer", None)
    decode = token_decoder(tokenizer) if tokenizer is not None else None

    def combine(done: list, check: bool = True) -> AttributionPatching:
        gaps = PairGaps.of([d[0] for d in done])
        if check:
            check_gaps(gaps, "attribution patching", decode)
        name, where = metric_name(metrics, decode), (scored_at(model, answer_prefix), patched_at(modality, time))
        sweeps = [_sweep(g, [d[1][k] for d in done], gaps, name, where) for k, g in enumerate(grids)]
        return AttributionPatching(sweeps[0], sweeps[1] if len(sweeps) > 1 else None)

    def unit_table(part: Any, unit: SweepUnit) -> Any:
        """The pair's component rows (``grid`` "components") and head rows ("heads"), one table."""
        import pandas as pd

        result = combine([part], check=False)
        tables = []
        for grid, sweep in (("components", result.components), ("heads", result.heads)):
            if sweep is not None:
                table = sweep.table(per_pair=True)
                table.insert(1, "grid", grid)
                tables.append(table)
        return offset_column(pd.concat(tables, ignore_index=True), "pair", unit.first)

    signature = {"layers": list(layers), "components": list(components), "heads": heads if isinstance(heads, bool) else list(heads),
                 "modality": modality, "time": time, "source_rows": source_rows, "answer_prefix": answer_prefix}
    done = run_sweep(one_pair, list(zip(pairs, metrics)), tool="attribution patching", unit="pairs",
                     steps=sum(g.n_cells for g in grids), step_name="cells", progress=progress, distributed=distributed,
                     resume=resume, signature=signature, unit_table=unit_table)
    return combine(done)


def _target_gradients(model: Any, target: Any, metric: Metric, names: list[str]) -> tuple[float, Tensor, dict, dict]:
    """The metric on the target run, its final logits, the activations at ``names`` and the
    gradients of the metric (mean over rows) there.

    The weights are frozen for this one forward, so the graph starts at the first hook of
    ``names`` that fires (each such activation becomes a leaf): nothing upstream of the swept
    hooks (e.g. the vision tower, for LLM components) is kept for the backward.
    """
    acts: dict[str, Tensor] = {}

    def capture(act: Tensor, hook: Any) -> Tensor:
        if not act.requires_grad:  # the first swept hook on this path: start the graph here
            act = act.detach().requires_grad_(True)
        acts[hook.name] = act
        return act

    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.enable_grad(), model.hooks(fwd_hooks=[(n, capture) for n in names]):
            if reads_final_logits(metric):  # unembed each row's last real position alone: [batch, vocab]
                logits = model.unembed(final_logits(model(target, return_type="normalized"), target))
            else:
                logits = model(target)
            value = torch.as_tensor(metric(logits, target))
            value = value.to(torch.promote_types(value.dtype, torch.float32)).mean()  # float64 runs stay float64
        for name in names:
            if name not in acts:
                raise ValueError(f"{name} did not fire in the target run (is that tower used there?); nothing to attribute")
        if not value.requires_grad:
            raise ValueError(
                "the metric does not depend on the logits through autograd; attribution patching needs a differentiable metric"
            )
        order = list(acts)
        found = torch.autograd.grad(value, [acts[n] for n in order], allow_unused=True)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    grads = {n: (g if g is not None else torch.zeros_like(acts[n])) for n, g in zip(order, found)}
    final = final_logits(logits.detach(), target)
    return float(value.detach()), final, {n: a.detach() for n, a in acts.items()}, grads


@dataclass
class _PairEstimate:
    """One pair's estimate on one grid: the change per cell ``[row, col]`` (NaN where a component has
    no such layer), per aligned position ``[row, col, n]``, the aligned target (row, position)
    pairs and their times in the clip."""

    effect: Tensor
    per_position: Tensor
    positions: Tensor
    times: Tensor


def _estimate(cells: SweepCells, align: PositionAlignment, store: dict, acts: dict, grads: dict, layout: Any) -> _PairEstimate:
    """One grid's estimate for one (source, target) pair."""
    effect = torch.full((len(cells.row_labels), len(cells.col_labels)), float("nan"), dtype=torch.float64)
    by_pos = torch.full((len(cells.row_labels), len(cells.col_labels), len(align)), float("nan"), dtype=torch.float64)
    for layer_cells in cells.llm_cells.values():
        for i, j, name, head in layer_cells:
            by_pos[i, j] = _aligned_attribution(store[name], acts[name], grads[name], align, head)  # [n]
    for i, j, name in cells.whole_cells:
        if is_encoder_hook(name):
            total = float(((store[name].to(acts[name].dtype) - acts[name]).double() * grads[name].double()).sum())
        else:
            per_token = _aligned_attribution(store[name], acts[name], grads[name], align, None)
            total = float(per_token.sum())
            if j >= 0:
                by_pos[i, j] = per_token
            else:
                by_pos[i, :] = per_token
        if j < 0:
            effect[i, :] = total
        else:
            effect[i, j] = total
    for layer_cells in cells.llm_cells.values():
        for i, j, _, _ in layer_cells:
            effect[i, j] = float(by_pos[i, j].sum())
    positions = torch.stack((align.target_batch, align.target_pos), dim=1)
    return _PairEstimate(effect, by_pos, positions, _times(layout, align))


def _sweep(cells: SweepCells, estimates: list[_PairEstimate], gaps: PairGaps, metric_name: str,
           where: tuple[str, str]) -> AttributionSweep:
    """One grid's :class:`AttributionSweep` from its per-pair estimates (in pair order)."""
    source_values, target_values = gaps.source, gaps.target
    if estimates:
        effect = torch.stack([e.effect for e in estimates])
    else:
        effect = torch.full((0, len(cells.row_labels), len(cells.col_labels)), float("nan"), dtype=torch.float64)
    per_pair = (effect + target_values.double()[:, None, None]).float()  # as a PatchingSweep
    return AttributionSweep(
        per_pair, source_values.float(), target_values.float(), list(cells.row_labels), list(cells.col_labels),
        cells.axis_names, metric_name, 0, list(cells.fixed_rows), gaps, *where, per_position=[e.per_position for e in estimates],
        positions=[e.positions for e in estimates], position_times=[e.times for e in estimates],
        n_backwards=len(estimates),
    )


def _aligned_attribution(
    source: Tensor, act: Tensor, grad: Tensor, align: PositionAlignment, head: int | None
) -> Float[Tensor, " n"]:
    """(source - target) . grad at each aligned target position (one head of a per-head hook if given)."""
    rows, pos = align.target_batch.to(act.device), align.target_pos.to(act.device)
    delta = source.to(act.device, act.dtype) - act[rows, pos]  # [n, ...]
    product = delta.double() * grad[rows, pos].double()
    if head is not None:
        product = product[:, head]
    return product.reshape(product.shape[0], -1).sum(-1).cpu()


def _times(layout: Any, align: PositionAlignment) -> Tensor:
    """Each aligned target position's time in the clip (audio time, else video time; NaN for text)."""
    if layout is None or len(align) == 0:
        return torch.full((len(align),), float("nan"))
    rows, pos = align.target_batch, align.target_pos
    audio, video = layout.audio_time.cpu()[rows, pos], layout.video_time.cpu()[rows, pos]
    return torch.where(torch.isnan(audio), video, audio)
