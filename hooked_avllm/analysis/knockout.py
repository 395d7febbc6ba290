"""Attention knockout (E3): block attention edges from one kind of position to another, in chosen
layers, in prefill and in KV-cached decoding.

A :class:`KnockoutRule` names a query kind, a key kind and a layer range; a :class:`Knockout`
holds several rules and is an attention edit for :meth:`HookedAVLLM.edit_attention`: every layer a
rule covers gets an additive ``-inf`` mask on those edges (SDPA still runs; a query always keeps
its own position, so no row is empty). Kinds are ``text``, ``audio``, ``video``, ``image``,
``generated``, ``media`` (audio, video or image) and ``any``. The last prompt position predicts the
first generated token; ``last_prompt_as_generated=True`` treats it as generated (as a query and as
a key).

What a knockout removes, and what it does not: it removes attention edges only. Rows a model adds
to the residual stream after a layer (``blocks.{l}.hook_injection``, e.g. DeepStack's vision-layer
features added at the visual positions after the first decoder layers) are not attention: under
``KnockoutRule("text", "video")`` they still enter the stream, at the video positions, in every
layer (also at the prefill of a generation; decoding steps inject nothing). What the rule blocks is
their only way to the text positions in the covered layers: reading the video positions. They can
still reach text through positions the rule leaves open (e.g. audio tokens that read the video).
To remove the injected rows themselves, ablate ``blocks.{l}.hook_injection`` with a hook (zero
it) in the layers that have one.

Example:
    >>> rules = KnockoutRule("generated", "video", layers=range(18, 30))          # doctest: +SKIP
    >>> tokens = generate_with_knockout(model, inputs, rules, max_new_tokens=50)  # doctest: +SKIP
    >>> with knockout(model, [rules, KnockoutRule("generated", "audio")]):        # doctest: +SKIP
    ...     logits = model(inputs)
"""

from __future__ import annotations

import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_avllm.analysis.arguments import (
    check_layers,
    check_modality_present,
    check_window,
    check_windows,
    describe_layers,
    held_kinds,
)
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.decoder_inputs import decoder_inputs
from hooked_avllm.decoding import decode_conditions
from hooked_avllm.analysis.runner import SweepUnit, batch_rows, left_padded_batches, offset_column, run_sweep
from hooked_avllm.forward_context import ForwardContext
from hooked_avllm.inputs.layout import carried_layout
from hooked_avllm.vocabulary import GENERATED, kind_codes

def _codes(kind: str | Sequence[str]) -> tuple[int, ...]:
    """Codes of a rule's kind names (``media`` and ``any`` included); unknown names raise."""
    try:
        return kind_codes(kind)
    except ValueError as error:
        raise ValueError(f"{error} (in a knockout rule)") from None


def _layer_spec(layers: Any) -> tuple[str, Any]:
    """How a rule names its layers, before the model's depth is known: ``("all", None)``,
    ``("window", (first, end))`` for a ``(first, end)`` tuple or a step-1 range, or ``("list",
    values)``. Only the type is checked here (a bare int, a float or a string raises); the values
    are checked against the model's depth when the rule meets the model (:meth:`Knockout.bind`)."""
    if layers is None:
        return "all", None
    if isinstance(layers, range) and layers.step == 1:
        return "window", layers
    if isinstance(layers, tuple) and len(layers) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        return "window", layers
    if isinstance(layers, (int, float)) or (isinstance(layers, Tensor) and layers.ndim == 0):
        raise TypeError(f"KnockoutRule(layers={layers!r}): layers is a (first, end) window, a range or a list of layers, "
                        f"not a single {type(layers).__name__}; for one layer pass layers=[{layers!r}] "
                        f"(negative counts from the end) or (l, l + 1)")
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"KnockoutRule(layers={layers!r}): pass a (first, end) window, a range or a list of layer "
                        f"indices, not a {type(layers).__name__}")
    return "list", layers.tolist() if isinstance(layers, Tensor) else layers if isinstance(layers, (list, tuple)) \
        else list(layers)


@dataclass(frozen=True)
class KnockoutRule:
    """Block attention from ``query`` positions to ``key`` positions in ``layers`` (all if ``None``).

    ``layers`` is a ``(first, end)`` tuple (end exclusive), as in the study's (query, key, first
    layer, end layer) rules, a ``range`` (``range(18, 30)``) or a list of layer indices; negative
    indices count from the end (``[-1]``: the last layer). They are checked against the model's
    depth when the rule meets the model (``knockout``, ``generate_with_knockout``,
    ``knockout_sweep``): a layer the model lacks, a reversed ``(4, 2)`` or empty window, or a
    layer named twice raises, naming the model's depth. A bare int (``layers=-1``) is a
    ``TypeError`` at once.

    Example:
        >>> KnockoutRule("generated", "video", layers=(18, 30)).covers(20)
        True
        >>> KnockoutRule("generated", "video", layers=[-1]).layers_at(36)
        frozenset({35})
    """

    query: str | tuple[str, ...]
    key: str | tuple[str, ...]
    layers: Any = None
    spec: tuple = field(default=("all", None), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _codes(self.query), _codes(self.key)  # validate names early
        spec = _layer_spec(self.layers)
        object.__setattr__(self, "spec", spec)
        if spec[0] == "window":
            object.__setattr__(self, "layers", frozenset(range(*_window_ends(spec[1]))))
        elif spec[0] == "list":
            object.__setattr__(self, "layers", frozenset(int(layer) for layer in spec[1] if _is_index(layer)))

    def layers_at(self, model: Any) -> frozenset[int] | None:
        """The layers this rule covers in ``model`` (or a depth), checked: ``None`` means every layer.

        Raises ``ValueError`` naming the rule, its layers and the model's depth for a layer the
        model lacks, a reversed or empty window, or a layer named twice.
        """
        kind, value = self.spec
        where = f"knockout rule {_name(self.query)}->{_name(self.key)}: layers"
        if kind == "all":
            return None
        if kind == "window":
            return frozenset(check_window(model, value, where))
        return frozenset(check_layers(model, value, where))

    def covers(self, layer: int) -> bool:
        """Whether the rule covers ``layer`` (as written: negative layers need :meth:`layers_at`)."""
        return self.layers is None or layer in self.layers

    def __or__(self, other: "KnockoutRule | Knockout") -> "Knockout":
        return Knockout([self]) | other

    def as_attention_edit(self) -> "Knockout":
        """This rule alone as an attention edit: ``model.edit_attention(rule)`` means ``Knockout([rule])``."""
        return Knockout([self])

    def __str__(self) -> str:
        kind, value = self.spec
        if kind == "all":
            span = "all layers"
        elif kind == "window" and _window_ends(value)[0] < _window_ends(value)[1] and min(_window_ends(value)) >= 0:
            span = describe_layers(range(*_window_ends(value)))
        elif kind == "list" and value and all(_is_index(v) and int(v) >= 0 for v in value) and len(set(value)) == len(value):
            span = describe_layers(value)
        else:
            span = f"layers {value!r}"
        return f"{_name(self.query)}->{_name(self.key)} @ {span}"


def _window_ends(window: Any) -> tuple[int, int]:
    return (window.start, window.stop) if isinstance(window, range) else (int(window[0]), int(window[1]))


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _name(kind: str | tuple[str, ...]) -> str:
    return kind if isinstance(kind, str) else "+".join(kind)


class Knockout:
    """A set of knockout rules, usable as an attention edit (``model.edit_attention(knockout)``).

    :meth:`bind` checks every rule's layers against a model's depth once (``knockout``,
    ``generate_with_knockout`` and ``knockout_sweep`` bind for you). With ``check_inputs`` (the
    default) the first forward of each input checks that the media kinds the rules name are there:
    a rule on video with inputs that hold no video raises (it would change nothing); rows of a
    batch that lack it are named in an :class:`~hooked_avllm.analysis.arguments.AnalysisWarning`.

    Example:
        >>> ko = Knockout([KnockoutRule("generated", "audio")], last_prompt_as_generated=True)
        >>> len(ko.rules)
        1
    """

    # a generated query's blocked keys depend only on the key kinds: captured decoding computes them once
    decode_invariant = True

    def __init__(self, rules: KnockoutRule | Sequence[KnockoutRule] = (), last_prompt_as_generated: bool = False,
                 check_inputs: bool = True):
        self.rules = [rules] if isinstance(rules, KnockoutRule) else list(rules)
        for rule in self.rules:
            if not isinstance(rule, KnockoutRule):
                raise TypeError(f"Knockout takes KnockoutRule objects, got {type(rule).__name__}")
        self.last_prompt_as_generated = last_prompt_as_generated
        self.check_inputs = check_inputs
        self._layer_sets: list[frozenset[int] | None] | None = None  # each rule's layers in the bound model
        self._checked: Any = None  # the forward context whose inputs were last checked
        self._memo: tuple[Any, tuple[int, ...], Tensor] | None = None  # (forward context, rules, edges)
        self._code_tensors: dict[tuple, Tensor] = {}

    def bind(self, model: Any) -> "Knockout":
        """Check every rule's layers against ``model``'s depth (once) and use them; returns self."""
        self._layer_sets = [rule.layers_at(model) for rule in self.rules]
        return self

    def check_modalities(self, source: Any, **names: Any) -> None:
        """Raise or warn (see the class docstring) when the inputs (``source``: anything
        :func:`~hooked_avllm.analysis.arguments.held_kinds` reads, or its per-row result) lack a
        media kind a rule names; ``names`` go to :func:`check_modality_present`."""
        for rule in self.rules:
            for side in ("query", "key"):
                check_modality_present(source, getattr(rule, side), f"knockout rule {_name(rule.query)}->{_name(rule.key)}",
                                       side, **names)

    def _code_tensor(self, kind: Any, device: torch.device) -> Tensor:
        key = (kind, str(device))
        if key not in self._code_tensors:
            self._code_tensors[key] = torch.tensor(_codes(kind), device=device)
        return self._code_tensors[key]

    def __or__(self, other: "KnockoutRule | Knockout") -> "Knockout":
        extra = [other] if isinstance(other, KnockoutRule) else other.rules
        flag = self.last_prompt_as_generated or getattr(other, "last_prompt_as_generated", False)
        return Knockout(self.rules + extra, flag)

    def kinds(self, context: ForwardContext) -> Int[Tensor, "batch key_pos"]:
        """Key kinds of this forward, with the last prompt position relabelled when asked."""
        kinds = context.kinds
        if self.last_prompt_as_generated and 0 < context.n_prompt <= kinds.shape[1]:
            kinds = kinds.clone()
            kinds[:, context.n_prompt - 1] = GENERATED
        return kinds

    def _covers(self, i: int, layer: int) -> bool:
        if self._layer_sets is None:
            return self.rules[i].covers(layer)
        covered = self._layer_sets[i]
        return covered is None or layer in covered

    def blocked(self, layer: int, context: ForwardContext) -> Bool[Tensor, "batch query key"] | None:
        """Edges removed at ``layer`` in this forward (``None`` when no rule covers it)."""
        if self.check_inputs and context.step == 0 and self._checked is not context:
            self._checked = context  # once per forward: a generation's prefill, or a plain forward
            self.check_modalities(context.kinds)
        covering = tuple(i for i in range(len(self.rules)) if self._covers(i, layer))
        if not covering:
            return None
        if self._memo is not None and self._memo[0] is context and self._memo[1] == covering:
            return self._memo[2]  # same rules as the previous layer of this forward: same edges
        kinds = self.kinds(context)
        queries = kinds[:, context.past : context.past + context.n_new]
        blocked = None
        for i in covering:
            rule = self.rules[i]
            q = torch.isin(queries, self._code_tensor(rule.query, kinds.device))
            k = torch.isin(kinds, self._code_tensor(rule.key, kinds.device))
            edges = q[:, :, None] & k[:, None, :]
            blocked = edges if blocked is None else blocked | edges
        self._memo = (context, covering, blocked)
        return blocked

    def __repr__(self) -> str:
        flag = ", last prompt position as generated" if self.last_prompt_as_generated else ""
        return f"Knockout([{'; '.join(map(str, self.rules))}]{flag})"


def _as_knockout(rules: Any, last_prompt_as_generated: bool, model: Any) -> Knockout:
    """A new :class:`Knockout` of ``rules`` bound to ``model`` (its layers checked)."""
    if isinstance(rules, Knockout):
        edit = Knockout(rules.rules, rules.last_prompt_as_generated or last_prompt_as_generated, rules.check_inputs)
    elif isinstance(rules, (KnockoutRule, list, tuple)):
        edit = Knockout(rules, last_prompt_as_generated)
    else:
        raise TypeError(f"rules={rules!r}: pass a KnockoutRule, a list of them or a Knockout, "
                        f"not a {type(rules).__name__}")
    return edit.bind(model)


@contextmanager
def knockout(
    model: Any, rules: KnockoutRule | Sequence[KnockoutRule] | Knockout, last_prompt_as_generated: bool = False
) -> Iterator[Knockout]:
    """Apply knockout rules to every forward and generation step inside the ``with`` block.

    The rules' layers are checked against the model's depth on entry; each forward checks that
    its inputs hold the media kinds the rules name (see :class:`Knockout`).

    Example:
        >>> with knockout(model, KnockoutRule("any", "audio")):  # doctest: +SKIP
        ...     logits = model(inputs)
    """
    edit = _as_knockout(rules, last_prompt_as_generated, model)
    with model.edit_attention(edit):
        yield edit


def generate_with_knockout(
    model: Any,
    inputs: Any,
    rules: KnockoutRule | Sequence[KnockoutRule] | Knockout,
    max_new_tokens: int = 32,
    last_prompt_as_generated: bool = False,
    **generate_kwargs: Any,
) -> Int[Tensor, "batch pos_plus_new"]:
    """Greedy generation under knockout rules (prefill and every cached decoding step).

    The rules are checked before anything runs: their layers against the model's depth, their
    media kinds against the inputs' layout (a rule on a modality no row holds raises; rows that
    lack it are named in a warning).

    Example:
        >>> tokens = generate_with_knockout(model, inputs, KnockoutRule("generated", "video", (18, 30)))  # doctest: +SKIP
    """
    edit = _as_knockout(rules, last_prompt_as_generated, model)
    layout = carried_layout(inputs)
    if layout is not None and edit.check_inputs:  # checked here, before the towers run, not again in the forward
        edit.check_modalities(layout)
        edit.check_inputs = False
    with model.edit_attention(edit):
        return model.generate(inputs, max_new_tokens=max_new_tokens, **generate_kwargs)


@dataclass
class KnockoutSweep:
    """Scores of a knockout sweep: ``scores[rule, window, clip]`` (``baseline[clip]`` without rules).
    ``shared_prefill`` counts the clips (batches) of the whole sweep whose conditions ran as one
    batch over one shared prefill (on any rank, in this run or, with ``resume``, an earlier one);
    the others generated once per condition."""

    scores: np.ndarray
    baseline: np.ndarray
    rule_names: list[str]
    windows: list[tuple[int, int]]
    shared_prefill: int = 0

    def table(self) -> Any:
        """Tidy DataFrame: rule, first_layer, end_layer, clip, score (plus the baseline rows)."""
        import pandas as pd

        rows = [
            {"rule": "none", "first_layer": -1, "end_layer": -1, "clip": c, "score": float(s)}
            for c, s in enumerate(self.baseline)
        ]
        for r, name in enumerate(self.rule_names):
            for w, (first, end) in enumerate(self.windows):
                for c in range(self.scores.shape[2]):
                    rows.append({"rule": name, "first_layer": first, "end_layer": end, "clip": c,
                                 "score": float(self.scores[r, w, c])})
        return pd.DataFrame(rows)

    def plot(self, path: Any = None, ylabel: str = "score", title: str = "Attention knockout during generation") -> Any:
        """Mean score per layer window, one colour per rule, the no-knockout baseline dashed.

        Windows are ticked by the layers they cover (``"0-3"``), in order of their first layer;
        a line joins only windows of the same width (one line style per width), so windows of
        different widths never zig-zag on one line. Error bars are ±1 standard error of the mean
        over the clips (none with one clip); the caption under the plot says so.
        """
        plt = pyplot()
        n_clips = self.scores.shape[2]
        order = sorted(range(len(self.windows)), key=lambda w: (self.windows[w][0], self.windows[w][1]))
        slot = {w: i for i, w in enumerate(order)}
        widths = sorted({end - first for first, end in self.windows})
        styles = ["-", "--", ":", "-."]
        markers = ["o", "s", "^", "D"]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(order) + 2), 3.8))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for r, name in enumerate(self.rule_names):
            mean = self.scores[r].mean(-1)
            sem = self.scores[r].std(-1, ddof=1) / n_clips ** 0.5 if n_clips > 1 else None
            for k, width in enumerate(widths):
                chosen = sorted((w for w, (first, end) in enumerate(self.windows) if end - first == width), key=slot.get)
                label = name if len(widths) == 1 else f"{name}, {width}-layer windows"
                dodge = 0.08 * (r - (len(self.rule_names) - 1) / 2)  # rules side by side: bars do not overlap
                ax.errorbar([slot[w] + dodge for w in chosen], mean[chosen], yerr=None if sem is None else sem[chosen],
                            color=colours[r % len(colours)], linestyle=styles[k % len(styles)],
                            marker=markers[k % len(markers)], capsize=3, label=label)
        ax.axhline(float(self.baseline.mean()), color="k", linestyle="--", linewidth=1, label="no knockout")
        ax.set_xticks(range(len(order)), [_window_label(*self.windows[w]) for w in order],
                      rotation=45 if len(order) > 8 else 0)
        ax.set_xlabel("layers knocked out (window: first-last layer)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.set_title(title)
        band = "error bars: ±1 SEM over the clips" if n_clips > 1 else "one clip: no error bars"
        fig.text(0.01, -0.02, f"Points: mean {ylabel} over {n_clips} clip{'s' * (n_clips != 1)} with the rule in "
                 f"that window; {band}; dashed: the mean without knockout.", fontsize=7, ha="left", va="top",
                 wrap=True)
        return save(fig, path)


def _window_label(first: int, end: int) -> str:
    """A window's tick: the layers it covers, ``"0-3"`` (``"5"`` for one layer)."""
    return str(first) if end - first == 1 else f"{first}-{end - 1}"


def knockout_sweep(
    model: Any,
    batches: Sequence[Any],
    rules: dict[str, Callable[[range], KnockoutRule | Sequence[KnockoutRule]]],
    windows: Sequence[tuple[int, int]],
    score: Callable[[Int[Tensor, " new"], int], float],
    max_new_tokens: int = 32,
    last_prompt_as_generated: bool = False,
    progress: bool = True,
    batch_size: int | None = None,
    distributed: bool | None = None,
    resume: str | os.PathLike | None = None,
    **generate_kwargs: Any,
) -> KnockoutSweep:
    """Generate under every rule x layer window for every clip and score the outputs.

    ``batches`` are prepared inputs, each one clip or a left-padded batch of clips (see
    :func:`hooked_avllm.inputs.concat_inputs`); rows are scored in order as clips 0, 1, ...
    ``rules`` maps a name to a function of the layer range giving the rule(s), e.g.
    ``{"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}``. ``windows`` are
    ``(first, end)`` layer ranges (end exclusive; negative ends count from the end). ``score(new_tokens,
    clip)`` scores one row's generated tokens. ``batch_size`` regroups the clips (one row each) into
    left-padded batches of that many rows first. The progress bar counts clips x conditions (the
    baseline plus rules x windows).

    Everything is checked before the first generation: every window against the model's depth
    (a window list written for a deeper model, a reversed, empty or repeated window raises), and
    the media kinds of the rules against the clips: a rule on a modality no clip holds raises;
    clips that lack it are named in an :class:`~hooked_avllm.analysis.arguments.AnalysisWarning`
    (their scores under that rule equal the baseline).

    The list runs through :func:`hooked_avllm.analysis.runner.run_sweep`. ``distributed`` (see
    :func:`hooked_avllm.parallel.active`): under ``torchrun`` each rank runs a contiguous block of the batches (of the regrouped batches with ``batch_size``, so every batch
    is the one a single process runs) and every rank returns the whole sweep; ``score`` still gets
    the clip's index in the full list. ``False`` runs every batch in every process.

    ``resume``: a results folder (:mod:`~hooked_avllm.analysis.sweep_store`): every batch's scores
    are written there as they come (and its table rows, as Parquet: ``read_table(folder)``), and a
    sweep started again with the same folder reads the batches already done instead of generating
    them, so a crash loses at most the batch in flight. The folder keeps the rule names, windows and
    ``max_new_tokens``; another sweep's folder is refused.

    Example:
        >>> sweep = knockout_sweep(model, batches, {"gen->video": lambda l: KnockoutRule("generated", "video", l)},
        ...                        [(l, l + 4) for l in range(0, 36, 3)], score=audio_correct)  # doctest: +SKIP
        >>> sweep.plot("knockout.png")  # doctest: +SKIP
    """
    ranges = check_windows(model, windows, "knockout_sweep: windows")
    if not isinstance(rules, dict) or not rules:
        raise ValueError(f"rules={rules!r}: pass a dict of at least one name -> function of the layer range, e.g. "
                         "{'gen->video': lambda layers: KnockoutRule('generated', 'video', layers)}")
    edits = [None] + [_as_knockout(make(layers), last_prompt_as_generated, model)
                      for make in rules.values() for layers in ranges]
    _check_sweep_modalities(edits[1:], batches)

    def run_conditions(unit: SweepUnit) -> tuple[np.ndarray, bool]:
        """Every condition on one clip or batch: ``[condition, row]`` scores, from one shared prefill
        and the conditions as one batch where the rules leave the prompt alone, else one generation
        per condition; and whether the prefill was shared."""
        out = np.zeros((len(edits), unit.rows))
        together = _generate_conditions(model, unit.item, edits, max_new_tokens, generate_kwargs)
        for e, edit in enumerate(edits):
            if together is not None:
                n_prompt = unit.item.input_ids.shape[1]
                out[e] = [float(score(row, unit.first + r)) for r, row in enumerate(together[e][:, n_prompt:])]
            else:
                out[e] = _scores_under(model, unit.item, edit, score, unit.first, max_new_tokens, generate_kwargs)
            unit.advance(unit.rows)
        return out, together is not None

    def combine(parts: list[tuple[np.ndarray, bool]]) -> KnockoutSweep:
        table = np.concatenate([scores for scores, _ in parts], axis=1)  # [no rule + rule x window, clip]
        scores = table[1:].reshape(len(rules), len(windows), table.shape[1])
        return KnockoutSweep(scores, table[0], list(rules), [(r.start, r.stop) for r in ranges],
                             sum(shared for _, shared in parts))

    parts = run_sweep(run_conditions, batches, tool="knockout sweep", unit="clips", steps=len(edits),
                      step_name="conditions (batched over one prefill per clip)", rows=batch_rows, batch_size=batch_size,
                      batch=left_padded_batches(model), progress=progress, distributed=distributed, resume=resume,
                      signature={"rules": list(rules), "windows": [(r.start, r.stop) for r in ranges],
                                 "max_new_tokens": max_new_tokens, "last_prompt_as_generated": last_prompt_as_generated},
                      unit_table=lambda part, unit: offset_column(combine([part]).table(), "clip", unit.first))
    return combine(parts)


def _generate_conditions(model: Any, inputs: Any, edits: list[Knockout | None], max_new_tokens: int,
                         generate_kwargs: dict) -> list[Tensor] | None:
    """Every condition's tokens over one shared prefill (:func:`hooked_avllm.decoding.decode_conditions`),
    or ``None`` when it cannot share (the caller generates per condition)."""
    options = dict(generate_kwargs)
    eos, cuda_graph = options.pop("eos_token_id", None), options.pop("cuda_graph", None)
    if options:  # other generate arguments (media, layout...) take the per-condition path
        return None
    llm = decoder_inputs(model, inputs)
    return decode_conditions(model, llm, list(edits), max_new_tokens, model.end_tokens(eos), cuda_graph)


def _check_sweep_modalities(edits: list[Knockout], batches: Any) -> None:
    """The rules' media kinds against every clip of the sweep, once, before it runs (then not again
    per forward). Clips without a layout (bare ids) leave the check to each forward."""
    layouts = [carried_layout(b) for b in batches] if isinstance(batches, (list, tuple)) else []
    if not layouts or any(layout is None for layout in layouts):
        return
    held = [h for layout in layouts for h in held_kinds(layout)]  # one set per clip, in clip order
    checked: set = set()
    for edit in edits:
        for rule in edit.rules:
            if (rule.query, rule.key) not in checked:
                checked.add((rule.query, rule.key))
                Knockout([rule]).check_modalities(held, row_name="clip")
        edit.check_inputs = False


def _scores_under(model: Any, inputs: Any, edit: Knockout | None, score: Callable, first_clip: int,
                  max_new_tokens: int, generate_kwargs: dict) -> list[float]:
    """Generate from ``inputs`` under ``edit`` (none: the baseline) and score each row as clip
    ``first_clip``, ``first_clip + 1``, ..."""
    n_prompt = inputs.input_ids.shape[1]
    if edit is None:
        tokens = model.generate(inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    else:
        with model.edit_attention(edit):
            tokens = model.generate(inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    return [float(score(row, first_clip + r)) for r, row in enumerate(tokens[:, n_prompt:])]
