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

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.analysis.runner import SweepUnit, batch_rows, left_padded_batches, run_sweep
from hooked_avllm.forward_context import ForwardContext
from hooked_avllm.vocabulary import GENERATED, kind_codes

def _codes(kind: str | Sequence[str]) -> tuple[int, ...]:
    """Codes of a rule's kind names (``media`` and ``any`` included); unknown names raise."""
    try:
        return kind_codes(kind)
    except ValueError as error:
        raise ValueError(f"{error} (in a knockout rule)") from None


@dataclass(frozen=True)
class KnockoutRule:
    """Block attention from ``query`` positions to ``key`` positions in ``layers`` (all if ``None``).

    ``layers`` is anything iterable of layer indices (``range(18, 30)``) or a ``(first, end)``
    tuple (end exclusive), as in the study's (query, key, first layer, end layer) rules.

    Example:
        >>> KnockoutRule("generated", "video", layers=(18, 30)).covers(20)
        True
    """

    query: str | tuple[str, ...]
    key: str | tuple[str, ...]
    layers: Any = None

    def __post_init__(self) -> None:
        _codes(self.query), _codes(self.key)  # validate names early
        if isinstance(self.layers, tuple) and len(self.layers) == 2 and all(isinstance(x, int) for x in self.layers):
            object.__setattr__(self, "layers", range(*self.layers))
        if self.layers is not None:
            object.__setattr__(self, "layers", frozenset(int(layer) for layer in self.layers))

    def covers(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers

    def __or__(self, other: "KnockoutRule | Knockout") -> "Knockout":
        return Knockout([self]) | other

    def __str__(self) -> str:
        span = "all layers" if self.layers is None else _span(self.layers)
        return f"{_name(self.query)}->{_name(self.key)} @ {span}"


def _name(kind: str | tuple[str, ...]) -> str:
    return kind if isinstance(kind, str) else "+".join(kind)


def _span(layers: frozenset[int]) -> str:
    ordered = sorted(layers)
    if ordered and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"layers {ordered[0]}-{ordered[-1]}"
    return "layers " + ",".join(map(str, ordered))


class Knockout:
    """A set of knockout rules, usable as an attention edit (``model.edit_attention(knockout)``).

    Example:
        >>> ko = Knockout([KnockoutRule("generated", "audio")], last_prompt_as_generated=True)
        >>> len(ko.rules)
        1
    """

    def __init__(self, rules: KnockoutRule | Sequence[KnockoutRule] = (), last_prompt_as_generated: bool = False):
        self.rules = [rules] if isinstance(rules, KnockoutRule) else list(rules)
        for rule in self.rules:
            if not isinstance(rule, KnockoutRule):
                raise TypeError(f"Knockout takes KnockoutRule objects, got {type(rule).__name__}")
        self.last_prompt_as_generated = last_prompt_as_generated
        self._memo: tuple[Any, tuple[int, ...], Tensor] | None = None  # (forward context, rules, edges)
        self._code_tensors: dict[tuple, Tensor] = {}

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

    def blocked(self, layer: int, context: ForwardContext) -> Bool[Tensor, "batch query key"] | None:
        """Edges removed at ``layer`` in this forward (``None`` when no rule covers it)."""
        covering = tuple(i for i, r in enumerate(self.rules) if r.covers(layer))
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


def _as_knockout(rules: Any, last_prompt_as_generated: bool) -> Knockout:
    if isinstance(rules, Knockout):
        return Knockout(rules.rules, rules.last_prompt_as_generated or last_prompt_as_generated)
    return Knockout(rules, last_prompt_as_generated)


@contextmanager
def knockout(
    model: Any, rules: KnockoutRule | Sequence[KnockoutRule] | Knockout, last_prompt_as_generated: bool = False
) -> Iterator[Knockout]:
    """Apply knockout rules to every forward and generation step inside the ``with`` block.

    Example:
        >>> with knockout(model, KnockoutRule("any", "audio")):  # doctest: +SKIP
        ...     logits = model(inputs)
    """
    edit = _as_knockout(rules, last_prompt_as_generated)
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

    Example:
        >>> tokens = generate_with_knockout(model, inputs, KnockoutRule("generated", "video", (18, 30)))  # doctest: +SKIP
    """
    with knockout(model, rules, last_prompt_as_generated):
        return model.generate(inputs, max_new_tokens=max_new_tokens, **generate_kwargs)


@dataclass
class KnockoutSweep:
    """Scores of a knockout sweep: ``scores[rule, window, clip]`` (``baseline[clip]`` without rules)."""

    scores: np.ndarray
    baseline: np.ndarray
    rule_names: list[str]
    windows: list[tuple[int, int]]

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

    def plot(self, path: Any = None, ylabel: str = "score") -> Any:
        """Mean score per layer window, one line per rule, the no-knockout baseline dashed."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        centres = [(first + end - 1) / 2 for first, end in self.windows]
        for r, name in enumerate(self.rule_names):
            mean = self.scores[r].mean(-1)
            sem = self.scores[r].std(-1) / max(1, self.scores.shape[2]) ** 0.5
            ax.plot(centres, mean, marker="o", label=name)
            ax.fill_between(centres, mean - sem, mean + sem, alpha=0.2)
        ax.axhline(float(self.baseline.mean()), color="k", linestyle="--", label="no knockout")
        ax.set_xlabel("layer window (centre)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.set_title("Attention knockout during generation")
        return save(fig, path)


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
    **generate_kwargs: Any,
) -> KnockoutSweep:
    """Generate under every rule x layer window for every clip and score the outputs.

    ``batches`` are prepared inputs, each one clip or a left-padded batch of clips (see
    :func:`hooked_avllm.inputs.concat_inputs`); rows are scored in order as clips 0, 1, ...
    ``rules`` maps a name to a function of the layer range giving the rule(s), e.g.
    ``{"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}``. ``windows`` are
    ``(first, end)`` layer ranges. ``score(new_tokens, clip)`` scores one row's generated tokens.
    ``batch_size`` regroups the clips (one row each) into left-padded batches of that many rows
    first. The progress bar counts clips x conditions (the baseline plus rules x windows).

    The list runs through :func:`hooked_avllm.analysis.runner.run_sweep`. ``distributed`` (see
    :func:`hooked_avllm.parallel.active`): under ``torchrun`` each rank runs a contiguous block of the batches (of the regrouped batches with ``batch_size``, so every batch
    is the one a single process runs) and every rank returns the whole sweep; ``score`` still gets
    the clip's index in the full list. ``False`` runs every batch in every process.

    Example:
        >>> sweep = knockout_sweep(model, batches, {"gen->video": lambda l: KnockoutRule("generated", "video", l)},
        ...                        [(l, l + 4) for l in range(0, 36, 3)], score=audio_correct)  # doctest: +SKIP
        >>> sweep.plot("knockout.png")  # doctest: +SKIP
    """
    edits = [None] + [_as_knockout(make(range(first, end)), last_prompt_as_generated)
                      for make in rules.values() for first, end in windows]

    def run_conditions(unit: SweepUnit) -> np.ndarray:
        """Every condition on one clip or batch: ``[condition, row]`` scores. One generation per
        condition today; the seam for one prefill per clip shared by the conditions (DESIGN
        "Sweeps share work")."""
        out = np.zeros((len(edits), unit.rows))
        for e, edit in enumerate(edits):
            out[e] = _scores_under(model, unit.item, edit, score, unit.first, max_new_tokens, generate_kwargs)
            unit.advance(unit.rows)
        return out

    parts = run_sweep(run_conditions, batches, tool="knockout sweep", unit="clips", steps=len(edits),
                      step_name="conditions", rows=batch_rows, batch_size=batch_size, batch=left_padded_batches(model),
                      progress=progress, distributed=distributed)
    table = np.concatenate(parts, axis=1)  # [no rule + rule x window, clip]
    scores = table[1:].reshape(len(rules), len(windows), table.shape[1])
    return KnockoutSweep(scores, table[0], list(rules), [tuple(w) for w in windows])


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
