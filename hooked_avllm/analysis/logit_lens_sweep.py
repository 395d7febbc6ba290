"""The logit lens over a list of clips, on the one sweep driver: a progress bar over the clips,
``torchrun`` sharding, and ``resume=`` (results written as they come, read back after a crash).

Example:
    >>> lenses = logit_lens_sweep(model, clips, positions="audio", apply_final_norm=False,
    ...                           resume="runs/lens")                                   # doctest: +SKIP
    >>> read_table("runs/lens").query("rank == 0")                                     # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from hooked_avllm.analysis.logit_lens import LogitLensResult, logit_lens
from hooked_avllm.analysis.runner import SweepUnit, batch_rows, run_sweep

__all__ = ["logit_lens_sweep"]


def logit_lens_sweep(
    model: Any,
    clips: Sequence[Any],
    *,
    progress: bool = True,
    distributed: bool | None = None,
    resume: str | os.PathLike | None = None,
    **lens_kwargs: Any,
) -> list[LogitLensResult]:
    """:func:`~hooked_avllm.analysis.logit_lens.logit_lens` of every input of ``clips`` (prepared
    inputs, one clip or batch each; ``lens_kwargs`` as there), one result per input.

    Runs through :func:`~hooked_avllm.analysis.runner.run_sweep`: a bar over the clips, under
    ``torchrun`` a contiguous block per rank and every result on every rank (``distributed``), and
    with ``resume`` a results folder where each input's result and its table rows (a ``clip``
    column counted over the whole list beside the lens's own columns) are written as they come.
    """
    positions = lens_kwargs.get("positions", "audio")
    if not isinstance(positions, str) and resume is not None:
        raise ValueError("logit_lens_sweep: resume= keeps the positions in its folder by name; select them by name "
                         "('audio', 'last'...) or leave resume=None")

    def one(unit: SweepUnit) -> LogitLensResult:
        return logit_lens(model, unit.item, progress=False, **lens_kwargs)

    def unit_table(result: LogitLensResult, unit: SweepUnit) -> Any:
        table = result.table()
        table.insert(0, "clip", table["batch"] + unit.first)
        return table

    signature = {name: value if isinstance(value, (str, int, float, bool, type(None), list, tuple)) else repr(value)
                 for name, value in sorted(lens_kwargs.items())}
    return run_sweep(one, clips, tool="logit lens", unit="clips", rows=batch_rows, progress=progress,
                     distributed=distributed, resume=resume, signature=signature, unit_table=unit_table)
