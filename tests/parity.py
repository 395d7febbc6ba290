"""The one parity harness: a reference we did not write, saved in the released checkpoint layout
and loaded through our ``from_pretrained``, compared stage by stage.

* :func:`save_released` / :func:`load_ours` / :func:`reference_pair`: the reference written to a
  folder as the release lays it out (transformers' ``save_pretrained``, sharded safetensors with
  ``max_shard_size``; or the reference's own ``save_checkpoint`` for references assembled from
  public parts), and our model loaded from that folder.
* :func:`assert_close`: one named stage within an absolute tolerance (at the real positions when
  given a mask); :func:`assert_stages` several at once, every failing stage in one message;
  :func:`assert_rows_close` when the two sides pad differently (each row's real positions);
  :func:`assert_equal` for exact stages (chosen experts, position ids); :func:`assert_same_tokens`
  for greedy generations. A failure names the stage, the max absolute difference, the tolerance and
  the reference's scale (its max absolute value), so a miss of 2e-4 on values of 30 reads differently
  from one on values of 1e-3.

Example:
    >>> import torch
    >>> assert_close(torch.ones(2, 3), torch.ones(2, 3) + 1e-6, "logits")
    >>> assert_close(torch.ones(2, 3), torch.ones(2, 3) + 1e-3, "logits")
    Traceback (most recent call last):
    AssertionError: logits: max abs diff 0.001 >= tolerance 0.0001 (reference scale 1, shape (2, 3))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from hooked_avllm import HookedAVLLM

TOL = 1e-4  # fp32 logits and stages, absolute (DESIGN.md: "logits within 1e-4 absolute of the reference")


# ----------------------------------------------------------------------------- checkpoints


def save_released(reference: Any, folder: str | Path, *, max_shard_size: str | None = None) -> Path:
    """Write ``reference`` to ``folder`` as the release lays it out: a reference with its own
    ``save_checkpoint`` (one assembled from public parts) writes that layout; a transformers model
    is saved with ``save_pretrained`` (safetensors; ``max_shard_size`` such as ``"100KB"`` splits it
    into several shards, so the index and the streaming across files are exercised)."""
    folder = Path(folder)
    if hasattr(reference, "save_checkpoint"):
        if max_shard_size is not None:
            raise ValueError("this reference writes its own shards (save_checkpoint); give no max_shard_size")
        return Path(reference.save_checkpoint(folder))
    if max_shard_size is None:
        reference.save_pretrained(folder)
    else:
        reference.save_pretrained(folder, max_shard_size=max_shard_size)
    return folder


def load_ours(folder: str | Path, **from_pretrained_kwargs: Any) -> HookedAVLLM:
    """Our model, loaded from the reference's folder through the public ``from_pretrained``."""
    return HookedAVLLM.from_pretrained(folder, **from_pretrained_kwargs)


def reference_pair(reference: Any, folder: str | Path, *, max_shard_size: str | None = None,
                   **from_pretrained_kwargs: Any) -> tuple[Any, HookedAVLLM]:
    """``(reference, ours)``: the reference saved to ``folder`` (:func:`save_released`) and our
    model loaded from it (:func:`load_ours`)."""
    folder = save_released(reference, folder, max_shard_size=max_shard_size)
    return reference, load_ours(folder, **from_pretrained_kwargs)


# ----------------------------------------------------------------------------- comparisons


def real(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` ``[batch, pos, ...]`` at the real (non-padding) positions of ``mask``."""
    return x[mask.bool()]


def _mismatch(ours: torch.Tensor, theirs: torch.Tensor, stage: str, tol: float) -> str | None:
    """``None`` when within ``tol``, else what went wrong (shape, or max abs diff and scale)."""
    if tuple(ours.shape) != tuple(theirs.shape):
        return f"{stage}: shape {tuple(ours.shape)} vs the reference's {tuple(theirs.shape)}"
    diff = float((ours - theirs).abs().max())
    if diff < tol:  # NaN fails
        return None
    scale = float(theirs.abs().max())
    return f"{stage}: max abs diff {diff:.3g} >= tolerance {tol:g} (reference scale {scale:.3g}, shape {tuple(theirs.shape)})"


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, stage: str, tol: float = TOL, *,
                 mask: torch.Tensor | None = None) -> None:
    """``max |ours - theirs| < tol`` for one named stage (at ``mask``'s real positions if given;
    both sides must then share the padding)."""
    if mask is not None:
        ours, theirs = real(ours, mask), real(theirs, mask)
    problem = _mismatch(ours, theirs, stage, tol)
    assert problem is None, problem


def assert_stages(stages: Mapping[str, tuple[torch.Tensor, torch.Tensor]], tol: float = TOL, *,
                  mask: torch.Tensor | None = None) -> None:
    """:func:`assert_close` on every ``name -> (ours, theirs)``; one failure lists every stage that
    misses (the first one usually tells where the two implementations part)."""
    problems = []
    for stage, (ours, theirs) in stages.items():
        if mask is not None:
            ours, theirs = real(ours, mask), real(theirs, mask)
        problem = _mismatch(ours, theirs, stage, tol)
        if problem is not None:
            problems.append(problem)
    assert not problems, "stages differ from the reference:\n  " + "\n  ".join(problems)


def assert_rows_close(ours: torch.Tensor, mask: torch.Tensor, theirs: torch.Tensor, their_mask: torch.Tensor,
                      stage: str = "logits", tol: float = TOL) -> None:
    """Row by row, ``ours`` at ``mask``'s real positions against ``theirs`` at ``their_mask``'s (the
    two sides may pad differently: ours on the left, a reference on the right)."""
    assert ours.shape[0] == theirs.shape[0], f"{stage}: {ours.shape[0]} rows vs the reference's {theirs.shape[0]}"
    problems = []
    for r in range(ours.shape[0]):
        a, b = ours[r][mask[r].bool()], theirs[r][their_mask[r].bool()]
        assert a.shape == b.shape, f"{stage} row {r}: {a.shape[0]} positions vs the reference's {b.shape[0]}"
        problem = _mismatch(a, b, f"{stage} row {r}", tol)
        if problem is not None:
            problems.append(problem)
    assert not problems, "\n".join(problems)


def assert_equal(ours: torch.Tensor, theirs: torch.Tensor, stage: str) -> None:
    """Exactly equal (integer stages: chosen experts, position ids)."""
    if torch.equal(ours, theirs):
        return
    if tuple(ours.shape) != tuple(theirs.shape):
        raise AssertionError(f"{stage}: shape {tuple(ours.shape)} vs the reference's {tuple(theirs.shape)}")
    where = torch.nonzero(ours != theirs)
    first = tuple(where[0].tolist())
    raise AssertionError(f"{stage}: {len(where)} entries differ, first at {first}: {ours[first].item()} vs "
                         f"the reference's {theirs[first].item()}")


def assert_same_tokens(ours: torch.Tensor, theirs: torch.Tensor, what: str = "greedy tokens") -> None:
    """Token for token (``[batch, pos]`` or a list); a failure shows the first differing row and position."""
    ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
    if torch.equal(ours, theirs):
        return
    if ours.shape != theirs.shape:
        raise AssertionError(f"{what}: shape {tuple(ours.shape)} vs the reference's {tuple(theirs.shape)}")
    first = tuple(torch.nonzero(ours != theirs)[0].tolist())
    row = first[0] if ours.ndim > 1 else slice(None)
    raise AssertionError(f"{what} differ first at {first}:\n  ours      {ours[row].tolist()}\n  reference {theirs[row].tolist()}")


__all__ = ["TOL", "assert_close", "assert_equal", "assert_rows_close", "assert_same_tokens", "assert_stages",
           "load_ours", "real", "reference_pair", "save_released"]
