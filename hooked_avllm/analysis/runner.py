"""One sweep driver under every sweep: the list, the batching, the progress bar, the split over
ranks and the ordered gather, so that a tool only says what one clip (or batch, or pair) costs.

A sweep is a list of *items* (prepared clips, batches of clips, or (source, target) pairs) and a
*unit function* the tool writes. :func:`run_sweep` hands the unit function one :class:`SweepUnit`
at a time (an item, or consecutive single clips regrouped into one left-padded batch) and the unit
function runs every condition of the sweep on it (baseline + rules x windows of a knockout sweep,
the (component, layer) cells of a patching sweep, ...) and returns that unit's result. The driver
does the rest, for every tool alike:

- refuses an empty list and a bad ``batch_size`` with errors that name them;
- with ``batch_size``, regroups consecutive single clips into batches of that many rows (the last
  one may be shorter), each built on the rank that runs it;
- under ``torchrun`` splits the units over the ranks (contiguous blocks; ``distributed`` as in
  :func:`hooked_avllm.parallel.active`);
- shows ONE progress bar, on rank 0, counted in what the user asked for (clips x conditions,
  pairs x cells): a unit advances it with :meth:`SweepUnit.advance` as its conditions finish, and
  whatever it does not advance is added when the unit returns;
- gathers the units' results (tensors moved to the CPU) back in the original order on every rank
  and returns them, one per unit; when a unit raises on one rank, every rank raises.

Where shared work goes (DESIGN "Sweeps share work"; issue "generation at the speed of the
hardware"). A unit holds a clip (or a batch) together with ALL its conditions, so the sharing the
study needs lives inside a unit function and changes nothing here: one prefill of the clip reused
by every knockout that edits generated-token queries only, the conditions of a clip run as one
batch over a shared prefix (see ``knockout.run_conditions``). The same holds for a resume store:
a unit's result depends on the unit alone, so results can be keyed by ``SweepUnit.index``.

Example:
    >>> def double(unit: SweepUnit) -> int:
    ...     return 2 * unit.item
    >>> run_sweep(double, [1, 2, 3], tool="doubling", progress=False)
    [2, 4, 6]
    >>> run_sweep(lambda unit: unit.members, list("abcde"), tool="pairs", batch_size=2, batch="".join,
    ...           progress=False)
    [(0, 1), (2, 3), (4,)]
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hooked_avllm import parallel
from hooked_avllm.analysis.sweep_store import SweepStore, fingerprint
from hooked_avllm.inputs.batching import concat_inputs

__all__ = ["SweepUnit", "batch_rows", "check_batch_size", "left_padded_batches", "offset_column", "run_sweep"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class SweepUnit(Generic[T]):
    """What a unit function gets: one item of the sweep, or several single clips in one batch.

    ``index`` numbers the units of the whole sweep (also under ``torchrun``), ``members`` are the
    indices of the items it holds in the list given, ``first`` the number of its first clip (row)
    or pair over the whole list (what a score function is told), ``rows`` how many it holds, and
    ``item`` the item itself or the members batched together.

    Example:
        >>> unit = SweepUnit(index=0, members=(0, 1), first=0, rows=2, item="ab")
        >>> unit.advance(2)  # two clips through one condition (no bar attached: nothing shown)
    """

    index: int
    members: tuple[int, ...]
    first: int
    rows: int
    item: T
    _bar: Any = field(default=None, repr=False, compare=False)
    _steps: int = field(default=0, repr=False, compare=False)
    _advanced: int = field(default=0, repr=False, compare=False)

    def advance(self, n: int = 1) -> None:
        """Move the sweep's bar ``n`` steps (rows x conditions, pairs x cells) for this unit."""
        n = min(n, self._steps - self._advanced)  # never past what the unit announced
        if n > 0 and self._bar is not None:
            self._bar.update(n)
        self._advanced += max(n, 0)

    def _finish(self) -> None:
        self.advance(self._steps - self._advanced)


def input_ids_of(inputs: Any) -> Any:
    """The token ids of prepared inputs, of a dict of a processor's tensors, or the ids themselves.

    Example:
        >>> import torch
        >>> input_ids_of({"input_ids": torch.zeros(1, 3)}).shape
        torch.Size([1, 3])
    """
    return inputs.get("input_ids") if isinstance(inputs, dict) else getattr(inputs, "input_ids", inputs)


def batch_rows(inputs: Any) -> int:
    """Clips (batch rows) in prepared inputs, or in a tensor of token ids ``[batch, pos]``.

    Example:
        >>> import torch
        >>> batch_rows(torch.zeros(3, 7, dtype=torch.long))
        3
    """
    shape = getattr(input_ids_of(inputs), "shape", None)
    if not shape:
        raise TypeError(f"expected prepared inputs (model.prepare) or token ids [batch, pos], got {type(inputs).__name__}")
    return int(shape[0])


def one_each(_: Any) -> int:
    """Every item counts once (a (source, target) pair is one pair whatever its rows)."""
    return 1


def check_batch_size(batch_size: Any) -> None:
    """Raise unless ``batch_size`` is None or an int >= 1, naming the argument and the value.

    Example:
        >>> check_batch_size(None), check_batch_size(4)
        (None, None)
        >>> check_batch_size(0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an int >= 1 (rows per batch), or None to run the inputs as given; got 0
    """
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int >= 1 (rows per batch), or None to run the inputs as given; "
                        f"got {batch_size!r} ({type(batch_size).__name__})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (rows per batch), or None to run the inputs as given; got {batch_size}")


def left_padded_batches(model: Any) -> Callable[[list[Any]], Any]:
    """The batch maker of clip sweeps: prepared one-row inputs into one left-padded batch (as
    ``generate`` needs), padded with the model's pad id (any id does: padding is masked).

    Example:
        >>> batch = left_padded_batches(model)([clip_a, clip_b])  # doctest: +SKIP
    """
    pad = model.cfg.tokens.pad if model.cfg.tokens.pad is not None else 0

    def batch(rows: list[Any]) -> Any:
        return concat_inputs(rows, pad_id=pad)

    return batch


def _plural(n: int, plural: str) -> str:
    return f"{n} {plural[:-1] if n == 1 and plural.endswith('s') else plural}"


def _description(tool: str, local: int, total: int, unit: str, steps: int, step_name: str) -> str:
    """``"knockout sweep: 5 clips x 5 conditions"`` (``"..., rank 0 of 2: 3 of 5 clips x ..."`` when split)."""
    rank, size = parallel.world()
    count = _plural(total, unit) if local == total else f"{local} of {_plural(total, unit)}"
    where = f" (rank {rank} of {size})" if size > 1 else ""
    per = f" x {_plural(steps, step_name)}" if step_name else ""
    return f"{tool}{where}: {count}{per}"


def _groups(n: int, batch_size: int | None) -> list[tuple[int, ...]]:
    """The items of each unit: one each, or ``batch_size`` consecutive ones."""
    step = batch_size or 1
    return [tuple(range(i, min(i + step, n))) for i in range(0, n, step)]


def run_sweep(
    unit_fn: Callable[[SweepUnit[T]], R],
    items: Sequence[T],
    *,
    tool: str,
    unit: str = "clips",
    steps: int = 1,
    step_name: str = "",
    rows: Callable[[T], int] = one_each,
    batch_size: int | None = None,
    batch: Callable[[list[T]], T] | None = None,
    progress: bool = True,
    distributed: bool | None = None,
    resume: str | os.PathLike | None = None,
    signature: dict[str, Any] | None = None,
    unit_table: Callable[[R, SweepUnit[T]], Any] | None = None,
) -> list[R]:
    """``[unit_fn(unit) for unit in units]`` over the units of ``items``, split over the ranks
    under ``torchrun`` and gathered in order on every rank (see the module docstring).

    Args:
        unit_fn: the tool's function of one :class:`SweepUnit`; it may call ``unit.advance(n)``.
        items: the list the user passed (clips, batches, pairs); an empty one is refused.
        tool: the tool's name, for the bar and the errors (``"knockout sweep"``).
        unit, steps, step_name: what the bar counts: ``rows(item)`` items of kind ``unit``
            (``"clips"``, ``"pairs"``) times ``steps`` ``step_name`` each (``5 "conditions"``).
        rows: how many ``unit`` an item holds (:func:`batch_rows` for clips and batches of clips;
            by default 1 each). ``SweepUnit.first`` counts them over the whole list.
        batch_size: regroup consecutive single-row items into batches of that many rows, made by
            ``batch`` (e.g. :func:`left_padded_batches`); ``None`` runs the items as given.
        progress: show the bar (rank 0 only).
        distributed: ``None`` splits over an initialised group of several ranks, ``False`` runs
            everything in every process, ``True`` insists on the group (see ``parallel.active``).
        resume: a results folder (:mod:`~hooked_avllm.analysis.sweep_store`): each unit's result
            is written there when it is done, and units already there are read instead of run.
        signature: the sweep's parameters, JSON-able, kept in the folder: a later call with other
            parameters is refused instead of mixing results.
        unit_table: the tool's table rows of one unit's result (a DataFrame), written beside it as
            Parquet (``read_table(folder)`` shows them while the sweep runs).

    Returns:
        One result per unit, in the order of ``items``, on every rank.

    Example:
        >>> run_sweep(lambda unit: (unit.first, unit.rows), [[1, 2], [3]], tool="lengths", rows=len, progress=False)
        [(0, 2), (2, 1)]
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{tool} takes a list of {unit}, got {type(items).__name__}; wrap a single one in a list: [x]")
    if len(items) == 0:
        raise ValueError(f"{tool} got an empty list of {unit}: pass at least one (nothing would be measured)")
    check_batch_size(batch_size)
    counts = [int(rows(item)) for item in items]
    if batch_size is not None:
        if batch is None:
            raise TypeError(f"{tool}: batch_size={batch_size} needs a batch maker (batch=left_padded_batches(model))")
        several = [i for i, count in enumerate(counts) if count != 1]
        if several:
            raise ValueError(
                f"batch_size={batch_size} regroups single {unit}, but item {several[0]} holds {counts[several[0]]} rows; "
                f"pass the {unit} one by one, or batch_size=None to run the batches as given"
            )
    firsts = [0, *itertools.accumulate(counts)]
    groups = _groups(len(items), batch_size)
    sharded = parallel.active(distributed)
    local = parallel.local_indices(len(groups), sharded)
    local_count = sum(counts[i] for g in local for i in groups[g])
    description = _description(tool, local_count, firsts[-1], unit, steps, step_name)
    bar = parallel.progress_bar(local_count * steps, description, enable=progress)

    store = None
    if resume is not None:
        store = SweepStore(resume, tool, len(groups), {"items": len(items), "rows": firsts[-1], "batch_size": batch_size,
                                                       "steps": steps, **(signature or {})})

    def run_unit(index: int, members: tuple[int, ...]) -> R:
        n_rows = sum(counts[i] for i in members)
        if store is not None:
            printed = fingerprint([items[i] for i in members])
            if store.done(index, printed):  # finished by an earlier run: read, not recomputed
                SweepUnit(index, members, firsts[members[0]], n_rows, None, bar, n_rows * steps)._finish()
                return store.load(index)
        item = items[members[0]] if batch_size is None else batch([items[i] for i in members])
        sweep_unit = SweepUnit(index, members, firsts[members[0]], n_rows, item, bar, n_rows * steps)
        result = unit_fn(sweep_unit)
        if store is not None:
            store.save(index, result, printed, unit_table(result, sweep_unit) if unit_table else None)
            result = store.load(index)  # what a resumed run gets (tensors on the CPU), so both runs return the same
        sweep_unit._finish()
        return result

    what = f"batches of {batch_size} {unit}" if batch_size else unit
    try:
        return parallel.map_sharded(run_unit, groups, distributed=sharded, what=what)
    finally:
        bar.close()


def offset_column(table: Any, column: str, first: int) -> Any:
    """``table`` with ``first`` added to its ``column`` (a unit's clip or pair numbers, counted from
    0 within the unit, become numbers over the whole list).

    Example:
        >>> import pandas as pd
        >>> offset_column(pd.DataFrame({"clip": [0, 1]}), "clip", 5)["clip"].tolist()
        [5, 6]
    """
    table[column] = table[column] + first
    return table
