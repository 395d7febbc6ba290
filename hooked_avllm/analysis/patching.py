"""Activation patching between runs whose token layouts differ, aligned by modality and order.

The source run (e.g. audio only) and the target run (the same audio with a conflicting video) do
not share positions: the audio-only run has no video tokens. :func:`align_positions` maps the k-th
audio token of each source row onto the k-th audio token of its target row (any modality, a time
window of the audio, or explicit masks), and every patch below goes through that map. Encoder
activations (``audio.*``, ``vision.*``, ``*_proj.hook_out``) have no LLM positions and are
patched whole, which needs the same shapes in both runs (the same media lengths).

Score at the answer token: ``answer_prefix="I hear"`` teacher-forces the answer's first words
after both runs' prompts, so the metric is read where the model says the answer word (at the last
prompt position a chat model says "I", and the audio-only vs conflict gap there is noise). Each
sweep reports every pair's clean-corrupt gap (``sweep.gaps``, ``sweep.pair_table()``) and warns
(:class:`~hooked_avllm.analysis.metrics.MetricGapWarning`) naming the pairs where it is tiny or has
the wrong sign.

Example:
    >>> source = model.prepare(prompt="What do you hear?", audio="barking.wav")              # doctest: +SKIP
    >>> target = model.prepare(prompt="What do you hear?", video="car_with_barking.mp4")    # doctest: +SKIP
    >>> metric = logit_diff(" barking", " rumbling", model)                                 # doctest: +SKIP
    >>> logits = patch(model, source, target, "blocks.20.hook_resid_post", answer_prefix="I hear")  # doctest: +SKIP
    >>> sweep = patching_sweep(model, source, target, metric, answer_prefix="I hear")       # doctest: +SKIP
    >>> sweep.pair_table()                          # source, target, gap per pair            # doctest: +SKIP
    >>> sweep.plot("restoration.png"); sweep.table().head()                                # doctest: +SKIP

Costs: :func:`patch` is one source forward (caching only the patched hooks at the aligned
positions) plus one target forward. :func:`patching_sweep` runs the target's towers once and then
one LLM-only forward per layer (or per ``layers_per_forward`` layers), with one batch row per
swept component, so a 36-layer x 3-component sweep costs 36 LLM forwards, not 108 full ones.
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hooked_avllm.analysis.alignment import Modality, PositionAlignment, align_positions
from hooked_avllm.analysis.logit_lens import token_decoder
from hooked_avllm.analysis.arguments import check_layers
from hooked_avllm.analysis.metrics import (
    ABSOLUTE_FLOOR,
    GAP_FRACTION,
    Metric,
    MetricGapWarning,
    PairGaps,
    answer_prob,
    check_gaps,
    final_logits,
    kl_to_source,
    logit_diff,
    measure_pair,
    metric_name,
    metric_value,
    reads_final_logits,
    restoration,
)
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.analysis.runner import SweepUnit, offset_column, run_sweep
from hooked_avllm.analysis.source_run import (
    AnswerPrefix,
    answer_prefix_ids,
    check_reach,
    is_encoder_hook,
    paired_runs,
    patched_at,
    run_source,
    scored_at,
    with_answer_prefix,
)

__all__ = [
    "PatchingSweep",
    "PositionAlignment",
    "align_positions",
    "answer_prob",
    "final_logits",
    "kl_to_source",
    "logit_diff",
    "patch",
    "patching_hooks",
    "patching_sweep",
    "restoration",
]

HookSpec = str | tuple  # "blocks.3.hook_resid_pre" or ("resid_pre", 3)


# ---------------------------------------------------------------------------------------- hooks


def _hook_name(spec: HookSpec, model: Any = None) -> str:
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str):
            raise TypeError(f"hook_names: a (component, layer) pair looks like ('resid_pre', 3); got {spec!r}")
        layer = spec[1]
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"hook_names: the layer of {spec!r} must be an int, got {layer!r}")
        if model is not None:
            n = model.cfg.n_layers
            if not -n <= layer < n:
                raise ValueError(f"hook_names: {spec!r} names layer {layer}, which this {n}-layer model lacks (layers "
                                 f"0..{n - 1}, or -{n}..-1 counted from the end)")
            layer %= n
        return get_act_name(spec[0], layer)
    if not isinstance(spec, str):
        raise TypeError(f"a hook is a full name ('blocks.3.hook_resid_pre') or a (component, layer) pair; got {spec!r}")
    return spec


def _check_patchable(name: str, model: Any = None) -> None:
    if model is not None and name not in model.hook_dict:
        close = difflib.get_close_matches(name, list(model.hook_dict), n=3, cutoff=0.6)
        hint = f"; the closest are {close}" if close else ""
        raise ValueError(
            f"the model has no hook {name!r} (it has {model.cfg.n_layers} LLM layers){hint}; names look like "
            "'blocks.3.hook_resid_pre' or 'audio_proj.hook_out' (model.hook_dict lists them all)"
        )
    if not is_encoder_hook(name) and ("hook_pattern" in name or "hook_attn_scores" in name):
        raise ValueError(
            f"{name} is indexed by query and key positions; patch hook_z (per head) or hook_attn_out instead"
        )


def _llm_components(model: Any) -> list[str]:
    """The short names of the hooks of an LLM layer ('resid_pre', 'attn_out', 'z', ...)."""
    names = []
    for hook in model.hook_dict:
        if hook.startswith("blocks.0."):
            short = hook[len("blocks.0."):].rsplit(".", 1)[-1].removeprefix("hook_")
            if get_act_name(short, 0) == hook and short not in ("pattern", "attn_scores"):
                names.append(short)
    return names


def _heads_index(heads: int | Sequence[int] | None, model: Any = None) -> Tensor | None:
    if heads is None or isinstance(heads, Tensor):
        return heads
    given = [heads] if isinstance(heads, int) and not isinstance(heads, bool) else heads
    if model is None:
        return torch.tensor(list(given), dtype=torch.long)
    return torch.tensor(check_layers(model.cfg.text.n_heads, given, "heads", what="head"), dtype=torch.long)


def _write(
    act: Tensor, src: Tensor, align: PositionAlignment, name: str, heads: Tensor | None, row_offset: int = 0, clone: bool = True
) -> Tensor:
    """``act`` (a copy unless ``clone=False``) with the aligned target positions (rows shifted by
    ``row_offset``) overwritten. Copying keeps tensors other hooks already hold (caches) intact."""
    if is_encoder_hook(name):
        if act.shape != src.shape:
            raise ValueError(
                f"{name} has shape {tuple(src.shape)} in the source run and {tuple(act.shape)} in the target: encoder "
                f"activations are patched whole, which needs the same media (length) in both runs; patch the LLM "
                f"side (e.g. audio_proj.hook_out positions through blocks.0.hook_resid_pre) instead"
            )
        return src.to(act.dtype)
    check_reach(align, act, name, "target", row_offset)
    if clone:
        act = act.clone()
    rows = align.target_batch.to(act.device) + row_offset
    pos = align.target_pos.to(act.device)
    if heads is None:
        act[rows, pos] = src.to(act.dtype)
    else:
        if act.ndim != 4:
            raise ValueError(f"heads= applies to per-head hooks [batch, pos, head, d_head] such as hook_z; {name} has {act.ndim} dims")
        h = heads.to(act.device)
        act[rows[:, None], pos[:, None], h[None, :]] = src[:, h].to(act.dtype)
    return act


def patching_hooks(
    source_store: dict[str, Tensor],
    align: PositionAlignment,
    hook_names: Sequence[str],
    heads: int | Sequence[int] | None = None,
) -> list[tuple[str, Callable]]:
    """Forward hooks that write gathered source activations into a target run (building block).

    ``source_store[name]`` holds the source activation at the aligned positions ([n, ...], in
    target order; whole tensors for encoder hooks), as :func:`patch` gathers it. Useful to patch
    from a cache you already have, or to combine patches with other hooks:

    Example:
        >>> align = align_positions(source, target, "audio")                                   # doctest: +SKIP
        >>> name = "blocks.1.hook_resid_pre"                                                    # doctest: +SKIP
        >>> store = {name: source_cache[name][align.source_batch, align.source_pos]}            # doctest: +SKIP
        >>> logits = model.run_with_hooks(target, fwd_hooks=patching_hooks(store, align, [name]))  # doctest: +SKIP
    """
    h = _heads_index(heads)

    def write(act: Tensor, hook: Any) -> Tensor:
        return _write(act, source_store[hook.name], align, hook.name, None if is_encoder_hook(hook.name) else h)

    return [(name, write) for name in hook_names]


def patch(
    model: Any,
    source: Any,
    target: Any,
    hook_names: HookSpec | Sequence[HookSpec],
    modality: Modality = "audio",
    *,
    heads: int | Sequence[int] | None = None,
    time: tuple[float, float] | None = None,
    source_rows: Sequence[int] | None = None,
    answer_prefix: AnswerPrefix = None,
    return_cache: bool = False,
) -> Float[Tensor, "batch pos vocab"] | tuple[Tensor, Any]:
    """Run ``target`` with the ``modality`` positions of ``hook_names`` taken from ``source``.

    LLM hooks (``blocks.{l}.hook_resid_pre/mid/post``, ``hook_attn_out``, ``hook_mlp_out``,
    ``attn.hook_z``...) are patched at the positions :func:`align_positions` pairs; ``heads``
    restricts per-head hooks (``hook_z``, ``hook_q``...) to those heads. Encoder hooks
    (``audio.blocks.{l}.hook_resid_post``, ``audio_proj.hook_out``...) are replaced whole and need
    equal shapes. The source run caches only these hooks, at the aligned positions.

    Args:
        hook_names: one or several full names, or ``(component, layer)`` pairs (``("resid_pre", 3)``).
        answer_prefix: the answer's first words (``"I hear"``, or their token ids) teacher-forced
            after both runs' prompts, so that the returned logits' last position predicts the
            answer word (score them with ``metric(logits)``: the last column).
        return_cache: also return the patched run's :class:`AVActivationCache` (every hook).

    Returns:
        The target's logits ``[batch, pos, vocab]`` under the patch (and the cache if asked).

    Example:
        >>> logits = patch(model, audio_only, audio_video, [("resid_pre", 10)], answer_prefix="I hear")  # doctest: +SKIP
        >>> logit_diff(" barking", " rumbling", model)(logits)                                          # doctest: +SKIP
        >>> logits = patch(model, audio_only, audio_video, "blocks.10.attn.hook_z", heads=3)            # doctest: +SKIP
    """
    single = isinstance(hook_names, str) or (
        isinstance(hook_names, tuple) and len(hook_names) == 2 and isinstance(hook_names[1], int)
    )
    specs = [hook_names] if single else list(hook_names)
    if not specs:
        raise ValueError("hook_names is empty: name at least one hook to patch, e.g. 'blocks.3.hook_resid_pre'")
    names = [_hook_name(s, model) for s in specs]
    for name in names:
        _check_patchable(name, model)
    head_index = _heads_index(heads, model)
    if head_index is not None:
        flat = [n for n in names if not is_encoder_hook(n) and not n.split(".")[-1] in _PER_HEAD_HOOKS]
        if flat:
            raise ValueError(f"heads={heads!r} applies to per-head hooks ({', '.join(_PER_HEAD_HOOKS)}); {flat[0]} has no "
                             "head axis: patch it without heads=, or patch blocks.{l}.attn.hook_z")
    prefix = answer_prefix_ids(model, answer_prefix)
    source, target = with_answer_prefix(source, prefix), with_answer_prefix(target, prefix)
    source_run = run_source(model, source, target, names, modality, time=time, source_rows=source_rows)
    with torch.no_grad():
        hooks = patching_hooks(source_run.store, source_run.align, names, head_index)
        if return_cache:
            with model.hooks(fwd_hooks=hooks):
                return model.run_with_cache(target)
        return model.run_with_hooks(target, fwd_hooks=hooks)


_PER_HEAD_HOOKS = ("hook_z", "hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_result")


# ---------------------------------------------------------------------------------------- sweep


@dataclass
class PatchingSweep:
    """Result of :func:`patching_sweep`.

    ``values`` is ``[component, layer]`` (``[layer, head]`` for a ``"z"`` sweep), averaged over
    the (source, target) pairs and the target rows; ``per_pair`` keeps the pairs
    (``[pair, ...]``). ``source_value`` / ``target_value`` are the metric on the unpatched runs
    (per pair), ``gap`` their difference (restoration's denominator) and ``restoration`` the
    normalised effect, averaged over pairs; ``gaps`` adds each pair's noise floor and verdict
    (:class:`~hooked_avllm.analysis.metrics.PairGaps`; ``pair_table()`` shows them), and
    ``weak_pairs`` lists the pairs whose gap is tiny or has the wrong sign (restoration warns
    while there are any). ``scored_at`` says where the metric was read, ``patched_at`` which
    positions were patched (encoder hooks: whole). Cells a component does
    not have (an encoder with fewer layers) are NaN; an encoder hook without a layer fills its
    whole row. ``n_forwards`` counts patched forwards (the two reference forwards per pair, the
    source run and the unpatched target, come on top).
    """

    method: ClassVar[str] = "activation patching (real)"

    per_pair: Float[Tensor, "pair row col"]
    source_value: Float[Tensor, " pair"]
    target_value: Float[Tensor, " pair"]
    row_labels: list  # components (or layers of a "z" sweep)
    col_labels: list[int]  # layers (or heads)
    axis_names: tuple[str, str]
    metric_name: str
    n_forwards: int
    fixed_rows: list[int] = field(default_factory=list)  # rows of layer-less encoder hooks
    gaps: PairGaps | None = None  # None: built from the values with the generic noise floor
    scored_at: str = "the last input position"
    patched_at: str = "the aligned positions"

    def __post_init__(self) -> None:
        if self.gaps is None:
            n = len(self.source_value)
            measures = [(float(self.source_value[i]), float(self.target_value[i]), gap_floor_of(self.source_value[i],
                         self.target_value[i]), -1, float("nan"), float("nan")) for i in range(n)]
            self.gaps = PairGaps.of(measures)

    @property
    def values(self) -> Float[Tensor, "row col"]:
        return self.per_pair.mean(0)

    @property
    def gap(self) -> Float[Tensor, " pair"]:
        """The clean-corrupt gap of each pair: the metric on the source run minus on the target run."""
        return self.source_value - self.target_value

    @property
    def weak_pairs(self) -> list[int]:
        """Pairs whose gap is tiny (at most the metric's noise floor) or has the wrong sign."""
        return self.gaps.weak.nonzero().flatten().tolist()

    def pair_table(self) -> Any:
        """A pandas DataFrame, one row per (source, target) pair: the metric on the source and target
        runs, their gap, the metric's noise floor there and a check ("ok", "tiny gap", "wrong sign")."""
        return self.gaps.table()

    @property
    def restoration(self) -> Float[Tensor, "row col"]:
        weak = self.weak_pairs
        if weak:
            warnings.warn(
                f"restoration averages pairs {weak} whose clean-corrupt gap is tiny or of the wrong sign "
                f"({', '.join(f'{float(self.gap[i]):.3g}' for i in weak[:6])}; see .pair_table()): it is noise there. "
                "Score at the answer token (answer_prefix=) or leave those pairs out",
                MetricGapWarning, stacklevel=2,
            )
        diff = (self.source_value - self.target_value)[:, None, None]
        return ((self.per_pair - self.target_value[:, None, None]) / diff).mean(0)

    def table(self, per_pair: bool = False) -> Any:
        """A long pandas DataFrame: one row per cell (component, layer | layer, head), with value and
        restoration (means over pairs). ``per_pair=True``: one row per (pair, cell), with the pair's
        source and target values and their gap beside the cell's value and restoration."""
        import pandas as pd

        if per_pair:
            gap = self.gap
            frames = []
            for p in range(self.per_pair.shape[0]):
                one = self._cells(self.per_pair[p], (self.per_pair[p] - self.target_value[p]) / gap[p])
                one.insert(0, "pair", p)
                one["source"], one["target"], one["gap"] = float(self.source_value[p]), float(self.target_value[p]), float(gap[p])
                frames.append(one)
            return pd.concat(frames, ignore_index=True)
        return self._cells(self.values, self.restoration)

    def _cells(self, values: Tensor, restored: Tensor) -> Any:
        """One row per cell of ``values`` / ``restored`` ([row, col])."""
        import pandas as pd

        rows = []
        for i, r in enumerate(self.row_labels):
            for j, c in enumerate(self.col_labels):
                if math.isnan(float(values[i, j])):
                    continue
                if i in self.fixed_rows:
                    if j > 0:
                        continue
                    c = None
                rows.append({self.axis_names[0]: r, self.axis_names[1]: c,
                             "value": float(values[i, j]), "restoration": float(restored[i, j])})
        df = pd.DataFrame(rows, columns=[*self.axis_names, "value", "restoration"])
        df[self.axis_names[1]] = df[self.axis_names[1]].astype("Int64")
        if self.axis_names[0] == "layer":
            df[self.axis_names[0]] = df[self.axis_names[0]].astype("Int64")
        return df

    def default_title(self, normalized: bool = True) -> str:
        """What the figure shows: the method (real patching or its linear estimate), the metric, where
        it was scored, and how many pairs (and weak pairs) the mean covers."""
        what = f"restoration of {self.metric_name}" if normalized else self.metric_name
        n = len(self.source_value)
        weak = self.weak_pairs
        pairs = f"mean of {n} pair{'s' if n != 1 else ''}" + (f", {len(weak)} with a weak gap" if weak else "")
        return f"{self.method}: {what}\npatched at {self.patched_at}; {pairs}\nscored at {self.scored_at}"

    def plot(self, path: str | Path | None = None, normalized: bool = True, title: str | None = None) -> Any:
        """Heatmap of ``restoration`` (or raw ``values``); saved to ``path`` (PNG) when given. Returns the figure.

        The default title names the method (activation patching or its attribution estimate), the
        metric, where it was scored and the pairs averaged."""
        import numpy as np

        plt = pyplot()
        with warnings.catch_warnings():  # the sweep already warned about weak pairs
            warnings.simplefilter("ignore", MetricGapWarning)
            data = (self.restoration if normalized else self.values).numpy()
        fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(self.col_labels) + 2), max(2.8, 0.4 * len(self.row_labels) + 2.0)))
        if normalized:
            image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
        else:
            finite = data[~np.isnan(data)]
            bound = float(np.abs(finite).max()) if finite.size else 1.0
            image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_xticks(range(len(self.col_labels)), [str(c) for c in self.col_labels])
        ax.set_yticks(range(len(self.row_labels)), [str(r) for r in self.row_labels])
        ax.set_xlabel(self.axis_names[1]), ax.set_ylabel(self.axis_names[0])
        ax.set_title(title or self.default_title(normalized), fontsize=9)
        label = "restoration (0 = target run, 1 = source run)" if normalized else self.metric_name
        fig.colorbar(image, ax=ax, label=label)
        return save(fig, path)


def gap_floor_of(source: Any, target: Any) -> float:
    """The generic noise floor of one pair (a tenth of the larger value), for sweeps built by hand."""
    return max(GAP_FRACTION * max(abs(float(source)), abs(float(target))), ABSOLUTE_FLOOR)


def _encoder_layers(model: Any, template: str) -> list[int]:
    out, layer = [], 0
    while template.format(l=layer, layer=layer) in model.hook_dict:
        out.append(layer)
        layer += 1
    if not out:
        raise ValueError(f"no hook matches {template!r} (e.g. 'audio.blocks.{{l}}.hook_resid_post')")
    return out


@dataclass
class SweepCells:
    """The cells of a sweep over (component, layer) — or (layer, head) of ``hook_z``.

    ``llm_cells[layer]`` lists ``(row, col, hook name, head or None)`` of the LLM hooks of that
    layer (a patching sweep batches them per layer); ``whole_cells`` lists ``(row, col, hook
    name)`` of encoder hooks and fixed hooks (``col`` -1: the hook fills its whole row, e.g.
    ``"audio_proj.hook_out"`` or ``"ln_final.hook_normalized"``).
    """

    row_labels: list
    col_labels: list[int]
    axis_names: tuple[str, str]
    llm_cells: dict[int, list[tuple[int, int, str, int | None]]]
    whole_cells: list[tuple[int, int, str]]
    fixed_rows: list[int]
    per_head: bool

    @property
    def names(self) -> list[str]:
        """Every hook the sweep touches."""
        return sorted({c[2] for cells in self.llm_cells.values() for c in cells} | {c[2] for c in self.whole_cells})

    @property
    def n_cells(self) -> int:
        """The number of cells (what a sweep's progress bar counts per pair)."""
        return sum(len(cells) for cells in self.llm_cells.values()) + len(self.whole_cells)


def checked_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    """``layers`` as non-negative ints (all LLM layers when None; negative ones count from the end);
    raises naming the value for a layer the LLM lacks, a layer named twice, a bare int or a float
    (see :func:`hooked_avllm.analysis.arguments.check_layers`)."""
    return check_layers(model, layers, "layers")


def _is_full_hook_name(model: Any, component: str) -> bool:
    return component in model.hook_dict and ("." in component or component.startswith("hook_"))


def _checked_components(model: Any, components: Any) -> list[str]:
    """``components`` as a non-empty list of distinct strings (one string is a list of one)."""
    if isinstance(components, str):
        components = [components]
    elif not isinstance(components, Sequence):
        raise TypeError(f"components={components!r}: pass a list of component names, e.g. ('resid_pre', 'attn_out', "
                        "'mlp_out')")
    components = list(components)
    if not components:
        raise ValueError("components is empty: give at least one (e.g. 'resid_pre', 'attn_out', 'mlp_out')")
    for comp in components:
        if not isinstance(comp, str) or not comp:
            raise TypeError(f"components={components!r}: each component is a non-empty name such as 'resid_pre', got "
                            f"{comp!r}")
    twice = sorted({c for c in components if components.count(c) > 1})
    if twice:
        raise ValueError(f"components={components!r} names {twice} more than once; name each component once")
    return components


def sweep_cells(model: Any, layers: list[int], components: Sequence[str] | str, heads: Sequence[int] | None) -> SweepCells:
    """The cells of ``patching_sweep`` / ``attribution_patching`` for these components (see there)."""
    components = _checked_components(model, components)
    per_head = "z" in components
    if per_head and len(components) > 1:
        raise ValueError("sweep 'z' (per head, [layer, head]) in its own call; use 'attn_out' for all heads at once")
    llm_cells: dict[int, list[tuple[int, int, str, int | None]]] = {}
    whole_cells: list[tuple[int, int, str]] = []
    fixed_rows: list[int] = []
    if per_head:
        head_list = check_layers(model.cfg.text.n_heads, heads, "heads", what="head")
        for i, layer in enumerate(layers):
            llm_cells[layer] = [(i, j, get_act_name("z", layer), h) for j, h in enumerate(head_list)]
        return SweepCells([int(l) for l in layers], head_list, ("layer", "head"), llm_cells, whole_cells, fixed_rows, True)
    templates = {c: _encoder_layers(model, c) for c in components if is_encoder_hook(c) and "{" in c}
    col_labels = sorted(set(layers).union(*templates.values()))
    col = {c: j for j, c in enumerate(col_labels)}
    for i, comp in enumerate(components):
        if comp in templates:
            whole_cells += [(i, col[l], comp.format(l=l, layer=l)) for l in templates[comp]]
        elif is_encoder_hook(comp) or _is_full_hook_name(model, comp):
            _check_patchable(comp, model)
            fixed_rows.append(i)
            whole_cells.append((i, -1, comp))
        else:
            having = [layer for layer in range(model.cfg.n_layers) if get_act_name(comp, layer) in model.hook_dict]
            if not having:
                known = _llm_components(model)
                close = difflib.get_close_matches(comp, known, n=3, cutoff=0.5)
                raise ValueError(
                    f"components: {comp!r} is not a component of this model's LLM layers{f' (closest: {close})' if close else ''}; "
                    f"use one of {known}, an encoder template such as 'audio.blocks.{{l}}.hook_resid_post', or a full "
                    "hook name"
                )
            missing = [layer for layer in layers if layer not in having]
            if having and missing:
                raise ValueError(
                    f"component {comp!r} exists at layers {having} only, not at {missing}; pass layers={having} "
                    "(sweep it in its own call if the other components need other layers)"
                )
            for layer in layers:
                name = get_act_name(comp, layer)
                _check_patchable(name, model)
                llm_cells.setdefault(layer, []).append((i, col[layer], name, None))
    return SweepCells(components, col_labels, ("component", "layer"), llm_cells, whole_cells, fixed_rows, False)


def patching_sweep(
    model: Any,
    source: Any,
    target: Any,
    metric: Metric | Sequence[Metric],
    layers: Sequence[int] | None = None,
    components: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    modality: Modality = "audio",
    *,
    heads: Sequence[int] | None = None,
    time: tuple[float, float] | None = None,
    source_rows: Sequence[int] | None = None,
    answer_prefix: AnswerPrefix | Sequence[AnswerPrefix] = None,
    layers_per_forward: int = 1,
    progress: bool = True,
    distributed: bool | None = None,
    resume: str | os.PathLike | None = None,
) -> PatchingSweep:
    """Patch each (component, layer) — or each (layer, head) of ``hook_z`` — from source to target.

    The target's towers run once; then each group of ``layers_per_forward`` layers is ONE
    LLM-only forward on a batch with one block of rows per swept cell, each block patched at a
    single (layer, component/head). Encoder components cost one full forward per cell.

    Args:
        source, target: ModelInputs, or equal-length lists of them (pairs of clips); values are
            averaged over pairs (``per_pair`` keeps them) and over target rows.
        metric: ``metric(logits, inputs) -> [batch] or scalar`` (e.g. :func:`logit_diff`), or one
            metric per pair (per-clip answers, :func:`kl_to_source` of each source).
        layers: LLM layers to sweep (default all; negative ones count from the end).
        components: LLM components (``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``,
            ``mlp_out``, any ``get_act_name`` short name with positions), encoder hook templates
            (``"audio.blocks.{l}.hook_resid_post"``, swept over the tower's layers), fixed hooks
            given by their full name (``"audio_proj.hook_out"``, ``"ln_final.hook_normalized"``:
            one row, one patched forward); or ``("z",)`` alone for a [layer, head] sweep.
        heads: the heads of a ``"z"`` sweep (default all).
        modality, time, source_rows: as in :func:`align_positions` (``"last"``: the last position
            of the runs, after the answer prefix when one is given).
        answer_prefix: where the metric is read. The answer's first words (``"I hear"``, or token
            ids; one for every pair, or a list with one per pair) are teacher-forced after both
            runs' prompts, so the metric scores the answer word; None reads the last position of
            the inputs as given (for a chat model, where it says "I").
        progress: a bar over pairs x cells.
        distributed: under ``torchrun``, each rank patches a contiguous block of the pairs and
            every rank returns the whole sweep (see :func:`hooked_avllm.parallel.active`);
            ``False`` runs every pair in every process. The pairs run through
            :func:`hooked_avllm.analysis.runner.run_sweep`.
        resume: a results folder where each pair's cells are written as they come (and its
            ``table(per_pair=True)`` rows as Parquet), read back instead of recomputed when the sweep
            is started again (:mod:`~hooked_avllm.analysis.sweep_store`).

    Warns:
        :class:`~hooked_avllm.analysis.metrics.MetricGapWarning` naming the pairs whose
        clean-corrupt gap (metric on the source run minus on the target run) is at most the
        metric's noise floor or has the sign opposite to most pairs' (``sweep.pair_table()``).

    Example:
        >>> metric = logit_diff(" barking", " rumbling", model)                                      # doctest: +SKIP
        >>> sweep = patching_sweep(model, audio_only, audio_video, metric, answer_prefix="I hear")  # doctest: +SKIP
        >>> sweep.values.shape, sweep.n_forwards                                                     # doctest: +SKIP
        (torch.Size([3, 36]), 36)
        >>> sweep.pair_table(); sweep.plot("patching.png")                                           # doctest: +SKIP
    """
    layers = checked_layers(model, layers)
    if isinstance(layers_per_forward, bool) or not isinstance(layers_per_forward, int) or layers_per_forward < 1:
        raise ValueError(f"layers_per_forward must be an int >= 1 (LLM layers per batched forward), got {layers_per_forward!r}")
    cells = sweep_cells(model, layers, components, heads)
    llm_cells, fixed_rows = cells.llm_cells, cells.fixed_rows
    row_labels, col_labels, axis_names, per_head = cells.row_labels, cells.col_labels, cells.axis_names, cells.per_head
    groups = [layers[k : k + layers_per_forward] for k in range(0, len(layers), layers_per_forward)]
    groups = [g for g in groups if any(l in llm_cells for l in g)]

    pairs, metrics = paired_runs(source, target, metric, model, answer_prefix)

    def one_pair(unit: SweepUnit) -> tuple[Tensor, tuple, int]:
        (src, tgt), pair_metric = unit.item
        return _sweep_pair(model, src, tgt, pair_metric, cells, groups, modality, time, source_rows, unit)

    tokenizer = getattr(model, "tokenizer", None)
    decode = token_decoder(tokenizer) if tokenizer is not None else None

    def combine(done: list[tuple[Tensor, tuple, int]], check: bool = True) -> PatchingSweep:
        per_pair = torch.stack([d[0] for d in done])
        gaps = PairGaps.of([d[1] for d in done])
        if check:
            check_gaps(gaps, "patching sweep", decode)
        return PatchingSweep(per_pair, gaps.source.float(), gaps.target.float(),
                             [str(r) if not per_head else r for r in row_labels], col_labels, axis_names,
                             metric_name(metrics, decode), sum(d[2] for d in done), fixed_rows, gaps,
                             scored_at(model, answer_prefix), patched_at(modality, time))

    signature = {"layers": list(layers), "components": [str(c) for c in cells.col_labels], "rows": [str(r) for r in row_labels],
                 "modality": modality, "time": time, "source_rows": source_rows, "answer_prefix": answer_prefix}
    done = run_sweep(one_pair, list(zip(pairs, metrics)), tool="patching sweep", unit="pairs", steps=cells.n_cells,
                     step_name="cells", progress=progress, distributed=distributed, resume=resume, signature=signature,
                     unit_table=lambda part, unit: offset_column(combine([part], check=False).table(per_pair=True), "pair",
                                                                 unit.first))
    return combine(done)


def _sweep_pair(model: Any, src: Any, tgt: Any, metric: Metric, cells: SweepCells, groups: list[list[int]],
                modality: Modality, time: Any, source_rows: Any, unit: SweepUnit) -> tuple[Tensor, tuple, int]:
    """One (source, target) pair of :func:`patching_sweep`: the patched metric per cell ``[row, col]``
    (NaN where a component has no such layer), the pair's gap measures (see
    :func:`~hooked_avllm.analysis.metrics.measure_pair`), the patched forwards; advances the
    sweep's bar by the cells of each forward."""
    llm_cells, enc_cells = cells.llm_cells, cells.whole_cells
    per_pair = torch.full((len(cells.row_labels), len(cells.col_labels)), float("nan"))
    n_forwards = 0
    source_run = run_source(model, src, tgt, cells.names, modality, time=time, source_rows=source_rows)
    store, align = source_run.store, source_run.align
    source_value = source_run.value(metric)
    final_only = reads_final_logits(metric)  # then only each row's last real position is unembedded
    with torch.no_grad():
        llm = model.llm_inputs(tgt)  # the target's towers, once
        batch = llm["embeds"].shape[0]
        target_logits = _decoder_logits(model, llm, final_only)
        target_value = metric_value(metric, target_logits, tgt)
        measures = measure_pair(metric, source_run.answer_logits, final_logits(target_logits, tgt), source_value, target_value)

        for group in groups:
            group_cells = [c for layer in group for c in llm_cells.get(layer, [])]
            by_hook: dict[str, list[tuple[int, int | None]]] = {}
            for k, cell in enumerate(group_cells):
                by_hook.setdefault(cell[2], []).append((k * batch, cell[3]))
            hooks = [(name, _block_writer(store[name], align, blocks)) for name, blocks in by_hook.items()]
            n = len(group_cells)
            repeated = dict(llm, embeds=llm["embeds"].repeat(n, 1, 1), position_ids=llm["position_ids"].repeat(1, n, 1),
                            attention_mask=llm["attention_mask"].repeat(n, 1), kinds=llm["kinds"].repeat(n, 1))
            if "injections" in llm:  # rows a family adds after decoder layers, for every copy
                repeated["injections"] = [injection.repeat(n) for injection in llm["injections"]]
            with model.hooks(fwd_hooks=hooks):
                logits = _decoder_logits(model, repeated, final_only)
            n_forwards += 1
            for k, (i, j, _, _) in enumerate(group_cells):
                per_pair[i, j] = metric_value(metric, logits[k * batch : (k + 1) * batch], tgt)
            unit.advance(len(group_cells))

        for i, j, name in enc_cells:
            hooks = patching_hooks(store, align, [name])
            logits = model.run_with_hooks(tgt, fwd_hooks=hooks)
            n_forwards += 1
            value = metric_value(metric, logits, tgt)
            if j < 0:
                per_pair[i, :] = value
            else:
                per_pair[i, j] = value
            unit.advance(1)
    return per_pair, measures, n_forwards


def _decoder_logits(model: Any, llm: dict[str, Any], final_only: bool
                    ) -> Float[Tensor, "batch pos vocab"] | Float[Tensor, "batch vocab"]:
    """The decoder's logits for ``llm`` (``run_decoder``'s arguments); with ``final_only``, those
    of each row's last real position alone, ``[batch, vocab]`` (what the sweep's metric reads)."""
    if not final_only:
        return model.run_decoder(**llm, return_type="logits")
    normalized = model.run_decoder(**llm, return_type="normalized")  # [batch, pos, d_model]
    return model.unembed(final_logits(normalized, llm["attention_mask"]))  # [batch, vocab]


def _block_writer(src: Tensor, align: PositionAlignment, blocks: list[tuple[int, int | None]]) -> Callable:
    """One hook writing ``src`` into several row blocks (offset, head) of a batched run."""

    def write(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        for offset, head in blocks:
            _write(act, src, align, hook.name, None if head is None else torch.tensor([head]), offset, clone=False)
        return act

    return write