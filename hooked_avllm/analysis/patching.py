"""Activation patching between runs whose token layouts differ, aligned by modality and order.

The source run (e.g. audio only) and the target run (the same audio with a conflicting video) do
not share positions: the audio-only run has no video tokens. :func:`align_positions` maps the k-th
audio token of each source row onto the k-th audio token of its target row (any modality, a time
window of the audio, or explicit masks), and every patch below goes through that map. Encoder
activations (``audio.*``, ``vision.*``, ``*_proj.hook_out``) have no LLM positions and are
patched whole, which needs the same shapes in both runs (the same media lengths).

Example:
    >>> source = model.prepare(prompt="What do you hear?", audio="dog.wav")               # doctest: +SKIP
    >>> target = model.prepare(prompt="What do you hear?", video="car_with_dog_audio.mp4")  # doctest: +SKIP
    >>> metric = logit_diff(" dog", " car", model)                                         # doctest: +SKIP
    >>> logits = patch(model, source, target, "blocks.20.hook_resid_post", modality="audio")  # doctest: +SKIP
    >>> sweep = patching_sweep(model, source, target, metric)                              # doctest: +SKIP
    >>> sweep.plot("restoration.png"); sweep.table().head()                                # doctest: +SKIP

Costs: :func:`patch` is one source forward (caching only the patched hooks at the aligned
positions) plus one target forward. :func:`patching_sweep` runs the target's towers once and then
one LLM-only forward per layer (or per ``layers_per_forward`` layers), with one batch row per
swept component, so a 36-layer x 3-component sweep costs 36 LLM forwards, not 108 full ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from hooked_avllm.analysis.alignment import Modality, PositionAlignment, align_positions
from hooked_avllm.analysis.metrics import (
    Metric,
    answer_prob,
    final_logits,
    kl_to_source,
    logit_diff,
    metric_value,
    restoration,
)
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.analysis.runner import SweepUnit, run_sweep
from hooked_avllm.analysis.source_run import check_reach, is_encoder_hook, paired_runs, run_source

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


def _hook_name(spec: HookSpec) -> str:
    if isinstance(spec, tuple):
        return get_act_name(spec[0], int(spec[1]))
    if not isinstance(spec, str):
        raise TypeError(f"a hook is a full name ('blocks.3.hook_resid_pre') or a (component, layer) pair; got {spec!r}")
    return spec


def _check_patchable(name: str, model: Any = None) -> None:
    if model is not None and name not in model.hook_dict:
        raise ValueError(f"the model has no hook {name!r}; names look like 'blocks.3.hook_resid_pre' or 'audio_proj.hook_out'")
    if not is_encoder_hook(name) and ("hook_pattern" in name or "hook_attn_scores" in name):
        raise ValueError(
            f"{name} is indexed by query and key positions; patch hook_z (per head) or hook_attn_out instead"
        )


def _heads_index(heads: int | Sequence[int] | None) -> Tensor | None:
    if heads is None:
        return None
    return torch.tensor([heads] if isinstance(heads, int) else list(heads), dtype=torch.long)


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
        return_cache: also return the patched run's :class:`AVActivationCache` (every hook).

    Returns:
        The target's logits ``[batch, pos, vocab]`` under the patch (and the cache if asked).

    Example:
        >>> logits = patch(model, audio_only, audio_video, [("resid_pre", 10)], modality="audio")  # doctest: +SKIP
        >>> logits = patch(model, audio_only, audio_video, "blocks.10.attn.hook_z", heads=3)       # doctest: +SKIP
    """
    single = isinstance(hook_names, str) or (
        isinstance(hook_names, tuple) and len(hook_names) == 2 and isinstance(hook_names[1], int)
    )
    specs = [hook_names] if single else list(hook_names)
    names = [_hook_name(s) for s in specs]
    for name in names:
        _check_patchable(name, model)
    source_run = run_source(model, source, target, names, modality, time=time, source_rows=source_rows)
    with torch.no_grad():
        hooks = patching_hooks(source_run.store, source_run.align, names, heads)
        if return_cache:
            with model.hooks(fwd_hooks=hooks):
                return model.run_with_cache(target)
        return model.run_with_hooks(target, fwd_hooks=hooks)


# ---------------------------------------------------------------------------------------- sweep


@dataclass
class PatchingSweep:
    """Result of :func:`patching_sweep`.

    ``values`` is ``[component, layer]`` (``[layer, head]`` for a ``"z"`` sweep), averaged over
    the (source, target) pairs and the target rows; ``per_pair`` keeps the pairs
    (``[pair, ...]``). ``source_value`` / ``target_value`` are the metric on the unpatched runs
    (per pair) and ``restoration`` the normalised effect, averaged over pairs. Cells a component
    does not have (an encoder with fewer layers) are NaN; an encoder hook without a layer fills its
    whole row. ``n_forwards`` counts patched forwards (the two reference forwards per pair, the
    source run and the unpatched target, come on top).
    """

    per_pair: Float[Tensor, "pair row col"]
    source_value: Float[Tensor, " pair"]
    target_value: Float[Tensor, " pair"]
    row_labels: list  # components (or layers of a "z" sweep)
    col_labels: list[int]  # layers (or heads)
    axis_names: tuple[str, str]
    metric_name: str
    n_forwards: int
    fixed_rows: list[int] = field(default_factory=list)  # rows of layer-less encoder hooks

    @property
    def values(self) -> Float[Tensor, "row col"]:
        return self.per_pair.mean(0)

    @property
    def restoration(self) -> Float[Tensor, "row col"]:
        diff = (self.source_value - self.target_value)[:, None, None]
        return ((self.per_pair - self.target_value[:, None, None]) / diff).mean(0)

    def table(self) -> Any:
        """A long pandas DataFrame: one row per cell (component, layer | layer, head), with value and restoration."""
        import pandas as pd

        values, restored = self.values, self.restoration
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

    def plot(self, path: str | Path | None = None, normalized: bool = True, title: str | None = None) -> Any:
        """Heatmap of ``restoration`` (or raw ``values``); saved to ``path`` (PNG) when given. Returns the figure."""
        import numpy as np

        plt = pyplot()
        data = (self.restoration if normalized else self.values).numpy()
        fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(self.col_labels) + 2), max(2.0, 0.4 * len(self.row_labels) + 1.2)))
        if normalized:
            image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
        else:
            finite = data[~np.isnan(data)]
            bound = float(np.abs(finite).max()) if finite.size else 1.0
            image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_xticks(range(len(self.col_labels)), [str(c) for c in self.col_labels])
        ax.set_yticks(range(len(self.row_labels)), [str(r) for r in self.row_labels])
        ax.set_xlabel(self.axis_names[1]), ax.set_ylabel(self.axis_names[0])
        ax.set_title(title or f"{'restoration' if normalized else self.metric_name} by {' x '.join(self.axis_names)}")
        fig.colorbar(image, ax=ax, label="restoration" if normalized else self.metric_name)
        return save(fig, path)


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
    """``layers`` as ints (all LLM layers when None); raises for a layer the LLM lacks."""
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is out of range: the LLM has {n_layers} layers")
    if not layers:
        raise ValueError("layers is empty: give at least one LLM layer")
    return layers


def _is_full_hook_name(model: Any, component: str) -> bool:
    return component in model.hook_dict and ("." in component or component.startswith("hook_"))


def sweep_cells(model: Any, layers: list[int], components: Sequence[str] | str, heads: Sequence[int] | None) -> SweepCells:
    """The cells of ``patching_sweep`` / ``attribution_patching`` for these components (see there)."""
    components = [components] if isinstance(components, str) else list(components)
    if not components:
        raise ValueError("components is empty: give at least one (e.g. 'resid_pre', 'attn_out', 'mlp_out')")
    per_head = "z" in components
    if per_head and len(components) > 1:
        raise ValueError("sweep 'z' (per head, [layer, head]) in its own call; use 'attn_out' for all heads at once")
    llm_cells: dict[int, list[tuple[int, int, str, int | None]]] = {}
    whole_cells: list[tuple[int, int, str]] = []
    fixed_rows: list[int] = []
    if per_head:
        n_heads = model.cfg.text.n_heads
        head_list = list(range(n_heads)) if heads is None else [int(h) for h in heads]
        bad = [h for h in head_list if not 0 <= h < n_heads]
        if bad:
            raise ValueError(f"heads {bad} are out of range: the LLM has {n_heads} heads per layer")
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
    layers_per_forward: int = 1,
    progress: bool = True,
    distributed: bool | None = None,
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
        layers: LLM layers to sweep (default all).
        components: LLM components (``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``,
            ``mlp_out``, any ``get_act_name`` short name with positions), encoder hook templates
            (``"audio.blocks.{l}.hook_resid_post"``, swept over the tower's layers), fixed hooks
            given by their full name (``"audio_proj.hook_out"``, ``"ln_final.hook_normalized"``:
            one row, one patched forward); or ``("z",)`` alone for a [layer, head] sweep.
        heads: the heads of a ``"z"`` sweep (default all).
        modality, time, source_rows: as in :func:`align_positions`.
        progress: a bar over pairs x cells.
        distributed: under ``torchrun``, each rank patches a contiguous block of the pairs and
            every rank returns the whole sweep (see :func:`hooked_avllm.parallel.active`);
            ``False`` runs every pair in every process. The pairs run through
            :func:`hooked_avllm.analysis.runner.run_sweep`.

    Example:
        >>> sweep = patching_sweep(model, audio_only, audio_video, logit_diff(" dog", " car", model))  # doctest: +SKIP
        >>> sweep.values.shape, sweep.n_forwards                                                        # doctest: +SKIP
        (torch.Size([3, 36]), 36)
        >>> sweep.plot("patching.png")                                                                  # doctest: +SKIP
    """
    layers = checked_layers(model, layers)
    if layers_per_forward < 1:
        raise ValueError(f"layers_per_forward must be >= 1, got {layers_per_forward}")
    cells = sweep_cells(model, layers, components, heads)
    llm_cells, fixed_rows = cells.llm_cells, cells.fixed_rows
    row_labels, col_labels, axis_names, per_head = cells.row_labels, cells.col_labels, cells.axis_names, cells.per_head
    groups = [layers[k : k + layers_per_forward] for k in range(0, len(layers), layers_per_forward)]
    groups = [g for g in groups if any(l in llm_cells for l in g)]

    pairs, metrics = paired_runs(source, target, metric)

    def one_pair(unit: SweepUnit) -> tuple[Tensor, float, float, int]:
        (src, tgt), pair_metric = unit.item
        return _sweep_pair(model, src, tgt, pair_metric, cells, groups, modality, time, source_rows, unit)

    done = run_sweep(one_pair, list(zip(pairs, metrics)), tool="patching sweep", unit="pairs", steps=cells.n_cells,
                     step_name="cells", progress=progress, distributed=distributed)
    per_pair = torch.stack([d[0] for d in done])
    source_values, target_values = torch.tensor([d[1] for d in done]), torch.tensor([d[2] for d in done])
    n_forwards = sum(d[3] for d in done)
    name = getattr(metrics[0], "__name__", type(metrics[0]).__name__)
    return PatchingSweep(per_pair, source_values, target_values, [str(r) if not per_head else r for r in row_labels],
                         col_labels, axis_names, name, n_forwards, fixed_rows)


def _sweep_pair(model: Any, src: Any, tgt: Any, metric: Metric, cells: SweepCells, groups: list[list[int]],
                modality: Modality, time: Any, source_rows: Any, unit: SweepUnit) -> tuple[Tensor, float, float, int]:
    """One (source, target) pair of :func:`patching_sweep`: the patched metric per cell ``[row, col]``
    (NaN where a component has no such layer), the source and target values, the patched forwards;
    advances the sweep's bar by the cells of each forward."""
    llm_cells, enc_cells = cells.llm_cells, cells.whole_cells
    per_pair = torch.full((len(cells.row_labels), len(cells.col_labels)), float("nan"))
    n_forwards = 0
    source_run = run_source(model, src, tgt, cells.names, modality, time=time, source_rows=source_rows)
    store, align = source_run.store, source_run.align
    source_value = source_run.value(metric)
    with torch.no_grad():
        llm = model.llm_inputs(tgt)  # the target's towers, once
        batch = llm["embeds"].shape[0]
        target_value = metric_value(metric, model.run_decoder(**llm, return_type="logits"), tgt)

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
                logits = model.run_decoder(**repeated, return_type="logits")
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
    return per_pair, source_value, target_value, n_forwards


def _block_writer(src: Tensor, align: PositionAlignment, blocks: list[tuple[int, int | None]]) -> Callable:
    """One hook writing ``src`` into several row blocks (offset, head) of a batched run."""

    def write(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        for offset, head in blocks:
            _write(act, src, align, hook.name, None if head is None else torch.tensor([head]), offset, clone=False)
        return act

    return write