"""A sweep's results folder: each unit's result written the moment it is done, so a sweep that
crashed (or was stopped) resumes where it was and loses at most the unit in flight.

Every tool that runs through :func:`~hooked_avllm.analysis.runner.run_sweep` takes ``resume=FOLDER``
(``knockout_sweep``, ``attention_share`` over a list, ``token_shift`` over a list,
``patching_sweep``, ``attribution_patching``). The folder holds:

- ``sweep.json``: the tool, the number of units and the sweep's parameters. A folder of another
  sweep (other parameters, another tool) is refused with the differences named, never mixed in.
- ``unit-000007.safetensors``: unit 7's exact result (:mod:`~hooked_avllm.analysis.result_codec`:
  tensors in safetensors, the structure in its metadata, no pickle) and a fingerprint of its clips.
  A unit whose clips changed since (another clip at that place in the list) is refused.
- ``unit-000007.parquet``: unit 7's rows of the tool's table, written as they come, so
  :func:`read_table` shows a sweep's results while it runs (the clip/pair column counts over
  the whole list).

A resumed sweep returns exactly what an uninterrupted one returns (tested for every tool, in one
process and over two ranks: under ``torchrun`` every rank writes its own units into the one folder).

Example:
    >>> sweep = knockout_sweep(model, clips, rules, windows, score, resume="runs/knockout")  # doctest: +SKIP
    >>> read_table("runs/knockout")  # the rows so far, from another process   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from hooked_avllm.analysis.result_codec import decode, encode

__all__ = ["SweepStore", "fingerprint", "read_table"]

FORMAT = 1
SAMPLE = 1 << 16  # elements of a large tensor that enter its fingerprint (strided over the whole tensor)


class SweepStore:
    """The results folder of one sweep (see the module docstring).

    Example:
        >>> import tempfile
        >>> store = SweepStore(tempfile.mkdtemp(), "doubling", units=2, signature={"factor": 2})
        >>> store.save(0, {"value": 2}, fingerprint=[1])
        >>> store.done(0, fingerprint=[1]), store.done(1, fingerprint=[2])
        (True, False)
        >>> store.load(0)
        {'value': 2}
    """

    def __init__(self, folder: str | os.PathLike, tool: str, units: int, signature: dict[str, Any]):
        self.folder, self.tool = Path(folder), tool
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"resume={str(folder)!r} is a file; pass a folder (it is created if missing)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest = {"format": FORMAT, "tool": tool, "units": units, "signature": _jsonable(signature, "signature")}
        path = self.folder / "sweep.json"
        if path.exists():
            self._check(json.loads(path.read_text()))
        else:
            _atomic_write_text(path, json.dumps(self.manifest, indent=1, sort_keys=True))

    def _check(self, found: dict) -> None:
        differ = [key for key in ("format", "tool", "units") if found.get(key) != self.manifest[key]]
        theirs, ours = found.get("signature", {}), self.manifest["signature"]
        differ += [f"signature.{k}" for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
        if differ:
            detail = "; ".join(f"{k}: folder {_get(found, k)!r}, now {_get(self.manifest, k)!r}" for k in differ)
            raise ValueError(f"resume={str(self.folder)!r} holds the results of another sweep ({detail}); pass a new "
                             "folder, or delete this one to start over")

    def _unit(self, index: int, suffix: str) -> Path:
        return self.folder / f"unit-{index:06d}.{suffix}"

    def done(self, index: int, fingerprint: Any) -> bool:
        """Whether unit ``index`` is in the folder; raises if it was computed from other clips."""
        path = self._unit(index, "safetensors")
        if not path.exists():
            return False
        with safe_open(str(path), framework="pt") as f:
            found = (f.metadata() or {}).get("fingerprint")
        if found != json.dumps(fingerprint):
            raise ValueError(f"resume={str(self.folder)!r}: unit {index} was computed from other clips than the ones "
                             f"at its place in the list now; pass the same list in the same order, or a new folder")
        return True

    def load(self, index: int) -> Any:
        """Unit ``index``'s result, as it was returned."""
        path = self._unit(index, "safetensors")
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            skeleton = json.loads(f.metadata()["skeleton"])
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        return decode(tensors, skeleton)

    def save(self, index: int, result: Any, fingerprint: Any, table: Any = None) -> None:
        """Write unit ``index``: its table rows (if any) first, then its result, which marks it done."""
        tensors, skeleton = encode(result)
        if table is not None:
            tmp = self._unit(index, f"parquet.tmp{os.getpid()}")
            table.to_parquet(tmp, index=False)
            os.replace(tmp, self._unit(index, "parquet"))
        tmp = self._unit(index, f"safetensors.tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"skeleton": json.dumps(skeleton), "fingerprint": json.dumps(fingerprint),
                                               "format": str(FORMAT)})
        os.replace(tmp, self._unit(index, "safetensors"))


def read_table(folder: str | os.PathLike) -> Any:
    """The tool's table rows of every finished unit of a results folder, in the order of the list
    (a sweep still running shows what it has so far).

    Example:
        >>> read_table("runs/knockout").groupby("rule").score.mean()  # doctest: +SKIP
    """
    import pandas as pd

    folder = Path(folder)
    if not (folder / "sweep.json").exists():
        raise FileNotFoundError(f"{str(folder)!r} is not a sweep's results folder (no sweep.json); pass the resume= folder")
    parts = [p for p in sorted(folder.glob("unit-*.parquet")) if p.with_suffix(".safetensors").exists()]
    if not parts:
        raise ValueError(f"{str(folder)!r} holds no finished unit with a table yet")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def fingerprint(items: list[Any]) -> str:
    """A short hash of the clips (or pairs) of a unit: their token ids and media tensors (large
    tensors through a strided sample of :data:`SAMPLE` elements), their strings and numbers."""
    digest = hashlib.sha1()
    for item in items:
        _feed(digest, item, depth=0)
    return digest.hexdigest()[:20]


def _feed(digest: Any, obj: Any, depth: int) -> None:
    if depth > 6:
        return
    if isinstance(obj, Tensor):
        flat = obj.detach().reshape(-1)
        if flat.numel() > SAMPLE:
            flat = flat[:: -(-flat.numel() // SAMPLE)]
        digest.update(f"{tuple(obj.shape)}{obj.dtype}".encode())
        digest.update(flat.to("cpu", torch.float64 if flat.is_floating_point() else torch.int64).numpy().tobytes())
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        digest.update(repr(obj).encode())
    elif isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, obj[key], depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _feed(digest, value, depth + 1)
    elif hasattr(obj, "__dict__"):
        _feed(digest, {k: v for k, v in vars(obj).items() if not callable(v)}, depth + 1)
    else:
        digest.update(type(obj).__qualname__.encode())


def _jsonable(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, default=repr))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where} of a sweep must be JSON-able: {error}") from None


def _get(manifest: dict, key: str) -> Any:
    node: Any = manifest
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)

