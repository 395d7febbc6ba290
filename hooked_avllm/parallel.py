"""Data-parallel sweeps: split a list of clips over the ranks of a ``torch.distributed`` group, run
each rank's share, gather the results back in the original order on every rank.

One process per GPU (``torchrun`` or ``accelerate launch`` start them and set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``), one model copy per process. The tools that take a list of
clips (:func:`~hooked_avllm.analysis.knockout.knockout_sweep`, ``attention_share`` and
``token_shift`` of lists, ``patching_sweep`` / ``attribution_patching`` over (source, target)
pairs) all run through one driver, :func:`hooked_avllm.analysis.runner.run_sweep`, and take
``distributed=None``: they shard by themselves when a process group of more than one rank is
initialised, and return on every rank the object one process returns for the whole list (same clip
order, same values). ``distributed=False`` runs the whole list in every process. In a single
process everything here is the identity, so the same script runs with or without ``torchrun``.

The split is contiguous: with ``n`` items and ``w`` ranks, rank ``r`` gets one block of consecutive
items, the first ``n % w`` ranks one more than the others (``0 1 2 | 3 4 5 | 6 7`` for 8 items on
3 ranks), so the blocks in rank order are the list, and a rank's clips are numbered from its
block's first clip. A rank whose block is empty (more ranks than items) runs nothing and still
takes part in the gather. A tool that takes one input at a time (``logit_lens``) maps over clips
with :func:`map_sharded`.

torchrun's environment is checked before any rendezvous (:func:`check_env`): a ``RANK`` outside
``0..WORLD_SIZE - 1``, a ``WORLD_SIZE`` below 1 or a variable that is not an integer raises a
``ValueError`` naming the variables and their values, where the group would otherwise wait forever.

Example (``torchrun --nproc_per_node=2 sweep.py``; ``python sweep.py`` runs the same):
    >>> from hooked_avllm import parallel                                                # doctest: +SKIP
    >>> parallel.init_from_env()                      # no-op without torchrun's env     # doctest: +SKIP
    >>> model = load_model(device=parallel.device_for_rank())                           # doctest: +SKIP
    >>> sweep = knockout_sweep(model, clips, rules, windows, score)  # sharded, gathered  # doctest: +SKIP
    >>> lenses = parallel.map_sharded(lambda i, clip: logit_lens(model, clip), clips)    # doctest: +SKIP
    >>> if parallel.is_main(): sweep.table().to_csv("knockout.csv")                      # doctest: +SKIP
    >>> parallel.finish()                             # barrier, then destroy the group   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "active",
    "barrier",
    "check_env",
    "device_for_rank",
    "finish",
    "gather",
    "init_from_env",
    "is_main",
    "local_indices",
    "map_sharded",
    "progress_bar",
    "shard",
    "shard_indices",
    "to_cpu",
    "world",
]

T = TypeVar("T")
R = TypeVar("R")


# ------------------------------------------------------------------------------------ the group


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, ``(0, 1)`` without one.

    Example:
        >>> world()  # a plain process
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that saves and plots.

    Example:
        >>> is_main()
        True
    """
    return world()[0] == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; torchrun sets it to one") from None


def check_env() -> None:
    """Raise a ``ValueError`` naming the variables and their values when torchrun's environment
    cannot describe one process of a group (a rendezvous would then wait forever): ``WORLD_SIZE`` at
    least 1, ``0 <= RANK < WORLD_SIZE``, ``0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE``, a
    ``MASTER_PORT`` in 1..65535. Unset variables are not checked (a plain process sets none).

    Example:
        >>> check_env()  # a plain process
    """
    size = _env_int("WORLD_SIZE", 1)
    if size < 1:
        raise ValueError(f"WORLD_SIZE={size} in the environment; it counts the processes, so it must be at least 1 "
                         "(torchrun sets it from --nproc_per_node and --nnodes)")
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    local_bound = "LOCAL_WORLD_SIZE" if "LOCAL_WORLD_SIZE" in os.environ else "WORLD_SIZE"
    checks = (("RANK", size, "WORLD_SIZE"), ("LOCAL_RANK", local_size, local_bound))
    for name, bound, bound_name in checks:
        if name not in os.environ or bound_name not in os.environ:
            continue  # a lone RANK (or LOCAL_RANK) describes no group; init_from_env does nothing then
        rank = _env_int(name, 0)
        if not 0 <= rank < bound:
            raise ValueError(
                f"{name}={rank} with {bound_name}={bound} in the environment: ranks run from 0 to {bound_name} - 1, so "
                f"no process group could form (the rendezvous would wait forever); launch with torchrun, or set {name} "
                f"in 0..{bound - 1}"
            )
    if not 1 <= local_size <= size:
        raise ValueError(f"LOCAL_WORLD_SIZE={local_size} with WORLD_SIZE={size} in the environment: a host runs at least "
                         "one and at most WORLD_SIZE processes; launch with torchrun")
    if "MASTER_PORT" in os.environ and not 1 <= _env_int("MASTER_PORT", 0) <= 65535:
        raise ValueError(f"MASTER_PORT={os.environ['MASTER_PORT']!r} in the environment is not a port (1..65535); "
                         "set a free one, e.g. 29500")


def _gpu_per_rank() -> bool:
    """Whether each process of this host can have a GPU of its own."""
    local_world = _env_int("LOCAL_WORLD_SIZE", _env_int("WORLD_SIZE", 1))
    return torch.cuda.is_available() and torch.cuda.device_count() >= local_world


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; returns :func:`world`.

    Does nothing when ``WORLD_SIZE`` is unset or 1, or when a group is already initialised (e.g.
    by accelerate's ``PartialState()``). ``backend`` defaults to ``nccl`` when CUDA is available
    and every local rank has a GPU (then ``torch.cuda.set_device(LOCAL_RANK)``), else ``gloo``.

    Example:
        >>> init_from_env()  # no torchrun environment: nothing to do
        (0, 1)
    """
    check_env()  # before any rendezvous: a rank outside the world would wait for its peers forever
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or not dist.is_available() or dist.is_initialized():
        return world()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={size} but {', '.join(missing)} unset: launch with torchrun / accelerate launch, or set them"
        )
    if backend is None:
        backend = "nccl" if _gpu_per_rank() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    dist.init_process_group(backend)
    return world()


def finish() -> None:
    """At the end of a script: wait for every rank, then destroy the default process group (a
    no-op without one), so that no rank tears its connections down while another still uses them.

    Example:
        >>> finish()  # a plain process: nothing to do
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank of the group gets here (a no-op in a single process).

    Example:
        >>> barrier()  # a plain process: nothing to wait for
    """
    if world()[1] > 1:
        dist.barrier()


def device_for_rank() -> torch.device:
    """``cuda:LOCAL_RANK`` when this process has that GPU, else ``cpu``: where this rank's model copy goes.

    Example:
        >>> device_for_rank().type in ("cpu", "cuda")
        True
    """
    local = _env_int("LOCAL_RANK", 0)
    if local < 0:
        raise ValueError(f"LOCAL_RANK={local} in the environment is negative; local ranks run from 0 (torchrun sets them)")
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        return torch.device("cuda", local)
    return torch.device("cpu")


def active(distributed: bool | None = None) -> bool:
    """Whether a driver called with ``distributed`` shards its list over the ranks.

    ``None``: when a group of more than one rank is initialised. ``False``: never (every process
    runs the whole list). ``True``: over the group, which needs one when the environment announces
    several ranks (``WORLD_SIZE>1``); a plain single process holds the whole list either way.

    Example:
        >>> active(None), active(False), active(True)  # a plain process
        (False, False, False)
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True, False or None, got {distributed!r}")
    if distributed is False:
        return False
    if world()[1] > 1:
        return True
    announced = _env_int("WORLD_SIZE", 1)
    if announced > 1:
        message = (
            f"WORLD_SIZE={announced} in the environment but no torch.distributed process group is initialised, so "
            "every rank would run the whole list; call hooked_avllm.parallel.init_from_env() (or accelerate's "
            "PartialState()) at the start of the script"
        )
        if distributed:
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=3)
    return False


# ------------------------------------------------------------------------------- shard / gather


def _all_gather_object(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (one ``all_gather_object``)."""
    out: list[Any] = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out


def shard_indices(n: int) -> range:
    """This rank's contiguous block of ``range(n)`` (the first ``n % world_size`` ranks get one more).

    Example:
        >>> shard_indices(5)  # a single process holds everything
        range(0, 5)
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n={n!r} must be an int (the number of items), not a {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rank, size = world()
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def local_indices(n: int, distributed: bool | None = None) -> range:
    """The indices of ``n`` items a driver called with ``distributed`` runs on this rank.

    Example:
        >>> local_indices(3, distributed=False)
        range(0, 3)
    """
    return shard_indices(n) if active(distributed) else range(n)


def _check_same_length(n: int, what: str) -> None:
    counts = _all_gather_object(n)
    if len(set(counts)) > 1:
        per_rank = ", ".join(f"rank {r}: {c}" for r, c in enumerate(counts))
        raise ValueError(
            f"the ranks passed different numbers of {what} ({per_rank}); pass every rank the same full list "
            "(it is split by rank), or distributed=False to run a different list on each rank"
        )


def shard(items: Sequence[T], what: str = "items") -> tuple[list[int], list[T]]:
    """``(indices, items)`` of this rank's block (see the module docstring); the identity in one process.

    With several ranks, first checks over the group that every rank passed as many items
    (``what`` names them in the error).

    Example:
        >>> shard(["a", "b", "c"])
        ([0, 1, 2], ['a', 'b', 'c'])
    """
    if world()[1] > 1:
        _check_same_length(len(items), what)
    indices = list(shard_indices(len(items)))
    return indices, [items[i] for i in indices]


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (through lists, tuples, dicts and dataclasses).

    Example:
        >>> to_cpu({"x": [torch.ones(2)]})["x"][0].device.type
        'cpu'
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(to_cpu(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: to_cpu(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def _merge(payloads: Sequence[tuple[Sequence[int], Sequence[Any]]]) -> list[Any]:
    """Per-rank ``(indices, results)`` placed back in index order; every index exactly once."""
    total = sum(len(indices) for indices, _ in payloads)
    out: list[Any] = [None] * total
    seen = [False] * total
    for rank, (indices, results) in enumerate(payloads):
        if len(indices) != len(results):
            raise ValueError(f"rank {rank} gathered {len(results)} results for {len(indices)} indices; give one result per index")
        for i, result in zip(indices, results):
            if not 0 <= i < total or seen[i]:
                raise ValueError(
                    f"rank {rank} sent index {i}, {'twice' if 0 <= i < total else f'outside 0..{total - 1}'}: "
                    "the ranks' indices must split range(n) (use the indices that shard() returned)"
                )
            seen[i] = True
            out[i] = result
    return out


def gather(local_results: Sequence[R], indices: Sequence[int]) -> list[R]:
    """Every rank's results in the original order, on every rank (``all_gather_object``; tensors
    are moved to the CPU first). ``indices`` are this rank's, as :func:`shard` returned them.

    Example:
        >>> indices, mine = shard([1, 2, 3])
        >>> gather([x * 10 for x in mine], indices)
        [10, 20, 30]
    """
    payload = (list(indices), to_cpu(list(local_results)))
    if world()[1] == 1:
        return _merge([payload])
    return _merge(_all_gather_object(payload))


# ------------------------------------------------------------------------------------ map


def progress_bar(total: int, desc: str, enable: bool = True) -> Any:
    """A tqdm bar shown on rank 0 only (and only when ``enable``).

    Example:
        >>> bar = progress_bar(3, "sweep", enable=False); bar.update(1); bar.close()
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enable or not is_main())


def map_sharded(
    fn: Callable[[int, T], R],
    items: Sequence[T],
    *,
    distributed: bool | None = None,
    progress: bool = False,
    desc: str | None = None,
    what: str = "items",
) -> list[R]:
    """``[fn(i, items[i]) for i in range(len(items))]``, each rank computing its block (see
    :func:`active` for ``distributed``); every rank returns the whole list, in order.

    ``fn`` gets the item's index in the full list. When ``fn`` raises on one rank, every rank
    raises after the gather (that rank its own error, the others a RuntimeError naming it), so
    none waits forever. ``progress`` shows a bar over this rank's items on rank 0.

    Example:
        >>> map_sharded(lambda i, clip: (i, clip.upper()), ["a", "b"])
        [(0, 'A'), (1, 'B')]
    """
    if not isinstance(items, Sequence):
        raise TypeError(
            f"items must be a list (or another sequence) of {what}, got a {type(items).__name__}; every rank needs the "
            "whole list to take its block: pass list(items)"
        )
    if not callable(fn):
        raise TypeError(f"fn={fn!r} is not callable; pass fn(index, item) -> result")
    sharded = active(distributed)
    if sharded:
        indices, mine = shard(items, what)
    else:
        indices, mine = list(range(len(items))), list(items)
    bar = progress_bar(len(mine), desc or "map", enable=len(items) > 1) if progress else None
    results: list[R] = []
    failure: tuple[int, Exception] | None = None
    try:
        for i, item in zip(indices, mine):
            results.append(fn(i, item))
            if bar is not None:
                bar.update(1)
    except Exception as error:  # every rank must reach the gather, or the others hang
        if not sharded:
            raise
        failure = (indices[len(results)], error)
    finally:
        if bar is not None:
            bar.close()
    if not sharded:
        return results
    payload = (indices[: len(results)] if failure is None else [], to_cpu(results) if failure is None else [],
               None if failure is None else f"{type(failure[1]).__name__} on item {failure[0]}: {failure[1]}")
    payloads = _all_gather_object(payload)
    failed = [(rank, p[2]) for rank, p in enumerate(payloads) if p[2] is not None]
    if failure is not None:
        raise failure[1]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"rank {rank} failed ({message}); every rank stops (see rank {rank}'s traceback)")
    return _merge([(p[0], p[1]) for p in payloads])

