"""Shared checks of analysis arguments: layers, layer windows and modalities, checked once where a
tool meets the model (its depth) or the inputs (their modalities), with errors that name the
argument, the value and what to do.

Conventions every analysis tool follows (knockout, token dropping, attention share, frame
heatmaps, the logit lens; patching and token shift can import the same functions):

* **Layers** are LLM block indices. A negative index counts from the end, as in Python: ``-1`` is
  the last layer, ``-n_layers`` the first. A bare ``int`` where a list belongs is a ``TypeError``
  (``layers=[-1]``, not ``layers=-1``); so are floats, bools and strings. An empty list, an index
  outside ``-n_layers .. n_layers - 1`` and the same layer named twice (``[1, -1]`` on a 2-layer
  model) are ``ValueError``s naming the model's depth.
* **Windows** are ``(first, end)`` pairs, ``end`` exclusive, as in ``range(first, end)`` and the
  study's (query, key, first layer, end layer) rules; each end may be negative (counted from the
  end), ``end`` may equal the depth. A reversed ``(4, 2)`` or empty ``(3, 3)`` window, or one past
  the model's depth, raises.
* **Modalities**: a tool asked to act on a media kind (``audio``, ``video``, ``image``, ``media``)
  the inputs do not hold would do nothing: :func:`check_modality_present` raises when no row holds
  it, and warns (:class:`AnalysisWarning`, naming the rows) when only some rows lack it, since a
  batch or a sweep may mix clips on purpose. ``text``, ``generated`` and ``any`` are never judged:
  generated positions appear during generation.

Example:
    >>> check_layers(6, [0, -1])
    [0, 5]
    >>> check_window(6, (-2, 6))
    range(4, 6)
    >>> check_layers(2, [7])
    Traceback (most recent call last):
    ValueError: layers=[7]: layer 7 does not exist in this 2-layer model (layers 0..1, or -2..-1 counted from the end); pass layers within that range
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Iterable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_avllm.vocabulary import KINDS, KIND_GROUPS, MEDIA_KINDS, PADDING


class AnalysisWarning(UserWarning):
    """An analysis call that measures nothing for part of its inputs (e.g. a knockout of video on
    clips of which some hold no video). Turn it into an error with
    ``warnings.simplefilter("error", AnalysisWarning)``."""


# ---------------------------------------------------------------------------------------------
# Layers and windows


def model_depth(model: Any) -> int:
    """The number of LLM layers of ``model`` (a model with ``cfg.n_layers``, or the number itself).

    Example:
        >>> model_depth(36)
        36
    """
    if isinstance(model, numbers.Integral) and not isinstance(model, bool):
        return int(model)
    return int(model.cfg.n_layers)


def _index(value: Any, argument: str, what: str = "layer") -> int:
    """One index as an int: ``TypeError`` for bools, floats, strings and other non-integers."""
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument}: {what} indices are ints, got {value!r} ({type(value).__name__})")
    return int(value)


def _depth_words(n_layers: int, what: str = "layer") -> str:
    return f"this {n_layers}-{what} model ({what}s 0..{n_layers - 1}, or -{n_layers}..-1 counted from the end)"


def _bare(argument: str) -> str:
    """The parameter's own name in a labelled argument: ``"attention_share: layers"`` -> ``"layers"``."""
    return argument.rsplit(":", 1)[-1].rsplit(".", 1)[-1].strip()


def _rows(name: str, values: Sequence[Any]) -> str:
    """``"row 1"`` / ``"rows 1, 3"``."""
    return f"{name}{'s' * (len(values) != 1)} {_show(values)}"


def _show(values: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def check_layers(
    model: Any,
    layers: Iterable[int] | None,
    argument: str = "layers",
    *,
    what: str = "layer",
) -> list[int]:
    """``layers`` checked against the model's depth, as non-negative ints in the given order.

    ``None`` gives every layer. Negative indices count from the end. Raises ``TypeError`` for a
    bare int (``[-1]`` is meant), a string or non-integer entries, and ``ValueError`` for an empty
    selection, an index outside the model, or a layer named twice (after counting from the end).
    ``argument`` is how the caller's parameter is named in messages (``"windows[2]"``,
    ``"KnockoutRule('generated', 'video').layers"``); ``what`` = ``"head"`` checks head indices
    the same way (``model`` then gives the number of heads).

    Example:
        >>> check_layers(4, range(2, 4)), check_layers(4, None), check_layers(4, [-1, 0])
        ([2, 3], [0, 1, 2, 3], [3, 0])
        >>> check_layers(4, -1)
        Traceback (most recent call last):
        TypeError: layers=-1 is a single int; pass a list of layers (layers=[-1]) or a range
    """
    n_layers = model_depth(model)
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, Tensor) and layers.ndim == 0:
        layers = layers.item()
    if isinstance(layers, numbers.Number):
        raise TypeError(f"{argument}={layers!r} is a single {type(layers).__name__}; pass a list of {what}s "
                        f"({_bare(argument)}=[{layers!r}]) or a range")
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"{argument}={layers!r}: pass a list of {what} indices (ints) or a range, "
                        f"not a {type(layers).__name__}")
    given = list(layers.tolist() if isinstance(layers, Tensor) else layers)
    spelled = _spelled(layers, given)
    indices = [_index(value, f"{argument}={spelled}", what) for value in given]
    if not indices:
        raise ValueError(f"{argument}={spelled} selects no {what}; pass at least one {what} of "
                         f"{_depth_words(n_layers, what)}")
    outside = [i for i in indices if not -n_layers <= i < n_layers]
    if outside:
        nouns = f"{what} {outside[0]} does not" if len(outside) == 1 else f"{what}s {_show(outside)} do not"
        raise ValueError(f"{argument}={spelled}: {nouns} exist in {_depth_words(n_layers, what)}; "
                         f"pass {what}s within that range")
    resolved = [i % n_layers for i in indices]
    twice = sorted({i for i in resolved if resolved.count(i) > 1})
    if twice:
        aliases = sorted({(i, i % n_layers) for i in indices if i < 0 and i % n_layers in twice})
        note = "; ".join(f"{i} is {what} {j} of this {n_layers}-{what} model" for i, j in aliases)
        raise ValueError(f"{argument}={spelled} names {what} {_show(twice)} more than once"
                         f"{f' ({note})' if note else ''}; name each {what} once")
    return resolved


def _spelled(layers: Any, given: list) -> str:
    """How to show the user's value in a message: ranges and tuples as written, others as a list."""
    if isinstance(layers, (range, tuple, list)):
        return repr(layers)
    return repr(given)


def check_window(model: Any, window: Any, argument: str = "window") -> range:
    """A ``(first, end)`` layer window (``end`` exclusive; a ``range`` of step 1 is one too) checked
    against the model's depth: ``range(first, end)`` with both ends counted from the end when
    negative. Raises ``TypeError`` for anything but two ints, ``ValueError`` for a reversed, empty
    or out-of-range window.

    Example:
        >>> check_window(36, (18, 30)), check_window(36, (-6, 36))
        (range(18, 30), range(30, 36))
        >>> check_window(6, (4, 2))
        Traceback (most recent call last):
        ValueError: window=(4, 2) is reversed: a window is (first, end) with end exclusive and first < end, e.g. (2, 4); this model has 6 layers
    """
    n_layers = model_depth(model)
    if isinstance(window, range):
        if window.step != 1:
            raise ValueError(f"{argument}={window!r}: a window is a range of step 1 (first, end); pass a list of "
                             "layers for other selections")
        pair: Any = (window.start, window.stop)
    else:
        pair = window
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise TypeError(f"{argument}={window!r}: a window is a (first, end) pair of ints with end exclusive, "
                        "e.g. (18, 30) for layers 18..29")
    first, end = (_index(v, f"{argument}={window!r}") for v in pair)
    bad = [v for v in (first, end) if not -n_layers <= v <= n_layers]
    if bad:
        raise ValueError(f"{argument}={window!r} lies outside this {n_layers}-layer model: a window (first, end) "
                         f"needs 0 <= first < end <= {n_layers} (negative ends count from the end); pass a window "
                         f"within the model's {n_layers} layers")
    start, stop = (v + n_layers if v < 0 else v for v in (first, end))
    if stop < start and end == 0 and first < 0:
        raise ValueError(f"{argument}={window!r} is reversed: end 0 is layer 0, not the end of the model; to reach "
                         f"the last layer write ({first}, {n_layers}) (end is exclusive)")
    if stop < start:
        raise ValueError(f"{argument}={window!r} is reversed: a window is (first, end) with end exclusive and "
                         f"first < end, e.g. {(end, first)}; this model has {n_layers} layers")
    if stop == start:
        raise ValueError(f"{argument}={window!r} is empty: it covers no layer (end is exclusive; "
                         f"({first}, {first + 1}) is layer {first} alone); this model has {n_layers} layers")
    if start == n_layers:
        raise ValueError(f"{argument}={window!r} starts after the last layer of this {n_layers}-layer model")
    return range(start, stop)


def check_windows(model: Any, windows: Any, argument: str = "windows") -> list[range]:
    """A non-empty list of distinct ``(first, end)`` windows, each checked by :func:`check_window`.

    Example:
        >>> check_windows(4, [(0, 2), (2, 4)])
        [range(0, 2), range(2, 4)]
    """
    if isinstance(windows, (str, bytes, range)) or not isinstance(windows, Sequence):
        raise TypeError(f"{argument}={windows!r}: pass a list of (first, end) layer windows, e.g. [(0, 4), (4, 8)]")
    if len(windows) == 2 and all(isinstance(v, numbers.Integral) for v in windows):
        raise TypeError(f"{argument}={windows!r} is one window; pass a list of windows: "
                        f"{_bare(argument)}=[{tuple(windows)!r}]")
    if not windows:
        raise ValueError(f"{argument}=[] is empty: pass at least one (first, end) layer window of this "
                         f"{model_depth(model)}-layer model")
    n_layers = model_depth(model)
    outside = [w for w in windows if _past_depth(w, n_layers)]
    if len(outside) > 1:  # e.g. a window list written for a deeper model: name them all at once
        raise ValueError(f"{argument} {_show([tuple(w) if not isinstance(w, range) else w for w in outside])} "
                         f"lie outside this {n_layers}-layer model (a window (first, end) needs 0 <= first < end <= "
                         f"{n_layers}); was the list written for a deeper model? Build it from model.cfg.n_layers")
    ranges = [check_window(model, w, f"{argument}[{i}]") for i, w in enumerate(windows)]
    seen: dict[range, int] = {}
    for i, r in enumerate(ranges):
        if r in seen:
            raise ValueError(f"{argument}[{i}]={windows[i]!r} repeats {argument}[{seen[r]}]={windows[seen[r]]!r} "
                             f"(layers {r.start}..{r.stop - 1}); list each window once")
        seen[r] = i
    return ranges


def _past_depth(window: Any, n_layers: int) -> bool:
    """Whether a well-formed window has an end outside ``-n_layers .. n_layers`` (others: not judged here)."""
    pair = (window.start, window.stop) if isinstance(window, range) else window
    try:
        return any(isinstance(v, numbers.Integral) and not -n_layers <= v <= n_layers for v in pair)
    except TypeError:
        return False


def describe_layers(layers: Sequence[int], n_layers: int | None = None) -> str:
    """Layers in words for titles and captions: ``"layers 0-3"``, ``"layers 0, 2, 5"``, ``"all 36 layers"``.

    Example:
        >>> describe_layers([4, 5, 6]), describe_layers(range(36), 36), describe_layers([7])
        ('layers 4-6', 'all 36 layers', 'layer 7')
    """
    ordered = sorted(set(int(l) for l in layers))
    if n_layers is not None and ordered == list(range(n_layers)):
        return f"all {n_layers} layers"
    if len(ordered) == 1:
        return f"layer {ordered[0]}"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"layers {ordered[0]}-{ordered[-1]}"
    return "layers " + ", ".join(map(str, ordered))


# ---------------------------------------------------------------------------------------------
# Modalities


def held_kinds(source: Any) -> list[frozenset[str]]:
    """The kinds each row holds (padding left out): from a ``TokenLayout``, prepared inputs or a
    cache carrying one, or kind codes ``[batch, seq]`` (a forward's ``context.kinds``).

    Example:
        >>> [sorted(row) for row in held_kinds(torch.tensor([[0, 1, 1], [0, 0, 5]]))]
        [['audio', 'text'], ['text']]
    """
    codes = _kind_codes(source)
    present = torch.nn.functional.one_hot(codes.long().clamp_min(0), len(KINDS)).any(1).cpu()  # [batch, kind]
    return [frozenset(KINDS[k] for k in range(len(KINDS)) if row[k] and k != PADDING) for row in present]


def _kind_codes(source: Any) -> Int[Tensor, "batch seq"]:
    if isinstance(source, Tensor):
        return source if source.ndim == 2 else source[None]
    layout = source if hasattr(source, "kind_codes") else getattr(source, "layout", None)
    if layout is None or not hasattr(layout, "kind_codes"):
        raise TypeError(f"held_kinds needs a TokenLayout, inputs or a cache carrying one, or kind codes; "
                        f"got {type(source).__name__}")
    return layout.kind_codes()


def judged_media(kinds: str | Sequence[str]) -> frozenset[str]:
    """The media kinds a kind name (or list of names) stands for, when it stands for media only
    (``"video"``, ``"media"``, ``("audio", "video")``); empty when it also names text, generated
    or ``"any"`` positions, or position words such as ``"last"`` (nothing to judge).

    Example:
        >>> sorted(judged_media("media")), sorted(judged_media(("text", "video")))
        (['audio', 'image', 'video'], [])
    """
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    media: set[str] = set()
    for name in names:
        expanded = KIND_GROUPS.get(name, (name,))
        if not all(k in MEDIA_KINDS for k in expanded):
            return frozenset()
        media.update(expanded)
    return frozenset(media)


def _words(kinds: Iterable[str]) -> str:
    ordered = [k for k in KINDS if k in set(kinds)]
    return ", ".join(ordered) if ordered else "nothing"


def check_modality_present(
    source: Any,
    kinds: str | Sequence[str],
    tool: str,
    argument: str | None = "kinds",
    *,
    row_name: str = "row",
    rows: Sequence[Any] | None = None,
) -> None:
    """Raise when no row of ``source`` holds the media ``kinds`` name (the tool would do nothing),
    warn (:class:`AnalysisWarning`) naming the rows that lack it when only some do.

    ``source`` is anything :func:`held_kinds` reads, or its result (one set of kinds per row,
    e.g. gathered over the clips of a sweep). ``tool`` and ``argument`` say who asked
    (``"knockout rule generated->video"``, ``"key"``; ``argument=None`` for a tool that reads
    the kind whatever its arguments, e.g. ``attention_to_video``); ``row_name`` / ``rows`` name the rows in
    messages (``"clip"``, the clips' indices). Kinds that are not media only (``text``,
    ``generated``, ``any``, ``last``) are not judged.

    Example:
        >>> check_modality_present(torch.tensor([[0, 1, 1]]), "video", "drop_tokens")
        Traceback (most recent call last):
        ValueError: drop_tokens: kinds='video' names video tokens, but the inputs hold none (they hold text, audio): the call would change nothing. Pass inputs with video, or leave video out
    """
    media = judged_media(kinds)
    if not media:
        return
    held = source if isinstance(source, list) and all(isinstance(h, frozenset) for h in source) else held_kinds(source)
    rows = list(range(len(held))) if rows is None else list(rows)
    lacking = [r for r, h in zip(rows, held) if not media & h]
    if not lacking:
        return
    wanted = " or ".join(k for k in MEDIA_KINDS if k in media)
    asks = f"{argument}={kinds!r} names {wanted} tokens" if argument else f"it reads {wanted} tokens"
    holds = _words(set().union(*held)) if held else "nothing"
    if len(lacking) == len(held):
        raise ValueError(f"{tool}: {asks}, but the inputs hold none (they hold {holds}): the call would "
                         f"{'change' if argument else 'measure'} nothing. Pass inputs with {wanted}"
                         + (f", or leave {wanted} out" if argument else ""))
    lacking_held = _words(set().union(*(h for r, h in zip(rows, held) if r in lacking)))
    verb = "holds" if len(lacking) == 1 else "hold"
    warnings.warn(f"{tool}: {asks}, but {_rows(row_name, lacking)} of {len(held)} {verb} none (only "
                  f"{lacking_held}): there the call {'changes' if argument else 'measures'} nothing",
                  AnalysisWarning, stacklevel=3)


__all__ = [
    "AnalysisWarning", "check_layers", "check_modality_present", "check_window", "check_windows", "describe_layers",
    "held_kinds", "judged_media", "model_depth",
]
