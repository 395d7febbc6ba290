"""Writing an audio-visual activation store: run a clip set once and keep chosen hooks at chosen
modalities on disk, as sharded safetensors with per-token metadata (the format:
:mod:`hooked_avllm.study.store_dataset`, which also reads it, as a torch ``Dataset`` or for SAELens).

:func:`write_activation_store` runs the clips in batches (through the one sweep driver,
:func:`hooked_avllm.analysis.runner.run_sweep`: its list checks and its progress bar). In each
forward only the requested hook points are watched, each hook keeps only the requested positions
(LLM hooks: the positions of ``modalities`` in the layout; tower hooks: the tower's own tokens)
and copies them to the host in the store's ``dtype``; the forward stops as soon as the last
requested hook has fired (a store of layers 0-11 of a 36-layer model runs 12 layers). The values
are those of ``model.run_with_cache(..., names_filter=hooks, cache_dtype=dtype)`` on the same batch
under ``torch.no_grad()``, bit for bit (the store runs without autograd, for memory; with autograd
recording, PyTorch may pick another attention kernel, e.g. in VideoLLaMA2's BEATs blocks). What one
batch captured is written at once as a part file, and parts are merged into a shard when they
reach ``shard_mb``: memory holds one batch and at most one shard, never the whole set.

A run that stops (an exception, a killed process) is resumed by calling the function again with
the same arguments: finished batches are kept, the batch in flight is redone, and the shards come
out byte for byte as an uninterrupted run writes them (same batches, same merge points). Other
arguments on an existing store are refused (``overwrite=True`` starts again). Under ``torchrun``
the batches are split over the ranks, each writing a store of its own in a subfolder, joined by
rank 0's manifest (``distributed=``).

Positions and tokens:

- LLM hooks (``blocks.{l}.*``, ``hook_embed``, ``ln_final.*``): rows are the positions whose kind
  is in ``modalities`` (``"audio"``, ``"video"``, ``"image"``, ``"text"``), clip by clip, in sequence
  order; ``position`` counts the clip's real tokens (left padding of a batch not counted).
- Tower hooks (``audio.*``, ``audio_proj.*``, ``vision.*``, ``vision_proj.*``): rows are the tower's
  tokens (the activation's first two axes flattened: ``[1, tokens, ...]`` for a packed tower,
  ``[items, tokens, ...]`` for a batched one); they need ``batch_size=1`` (a packed tower mixes the
  clips of a batch in one row). Where a clip's rows are one per LLM placeholder of the tower's
  modality (projector outputs, ``audio_proj.hook_out``), they carry that placeholder's time and
  grid cell; elsewhere (``audio.blocks.{l}.*``, before pooling) ``time`` and the grid are ``-1``.
- Activations with several trailing axes (``hook_z``: ``[head, d_head]``) are flattened to one row;
  attention patterns and scores (``[batch, head, query, key]``) are refused, as are integer
  activations (``hook_expert_indices``).

An empty selection raises: an unknown hook name or a pattern matching none (before anything is
written), a modality that prepared clips lack (before anything is written), and, after a run, a
hook or modality that got no row (the message says what the store holds).

Example:
    >>> import tempfile, torch
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> clips = [model.to_inputs(torch.tensor([[1, 2, 3]])), model.to_inputs(torch.tensor([[4, 5]]))]
    >>> store = write_activation_store(model, clips, tempfile.mkdtemp(), hooks=["hook_embed", "blocks.*.hook_resid_post"],
    ...                                modalities="text", dtype=torch.bfloat16, progress=False)
    >>> store.hooks, store.n_rows("blocks.0.hook_resid_post"), store.dtype
    (['hook_embed', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'], 5, torch.bfloat16)
    >>> _, cache = model.run_with_cache(clips[1], cache_dtype=torch.bfloat16)
    >>> torch.equal(store.read("blocks.1.hook_resid_post")[3:], cache["blocks.1.hook_resid_post"][0])
    True

    On a real model (each clip an AudioCaps video, ``prepare`` the model's own):

    >>> store = write_activation_store(model, paths, "acts/", hooks="blocks.*.hook_resid_post",  # doctest: +SKIP
    ...     modalities="audio", prepare=lambda path: model.prepare(prompt="Describe what you hear.", video=path),
    ...     batch_size=8, dtype=torch.bfloat16, shard_mb=512)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Bool
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

import hooked_avllm
from hooked_avllm import parallel
from hooked_avllm.analysis.arguments import AnalysisWarning
from hooked_avllm.analysis.runner import SweepUnit, check_batch_size, left_padded_batches, run_sweep
from hooked_avllm.cache import QUERY_KEY_HOOKS
from hooked_avllm.components.hook_checks import unknown_hook_name
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.model_inputs import ModelInputs
from hooked_avllm.study.store_dataset import (
    FORMAT, FORMAT_VERSION, LLM_GROUP, MANIFEST, META_FIELDS, STORE_DTYPES, ActivationStore, meta_key, modality_codes,
)
from hooked_avllm.vocabulary import AUDIO, ENCODER_PREFIXES, KIND_CODE, KINDS, VIDEO

__all__ = ["StoreError", "resolve_hooks", "write_activation_store"]

TOWER_KINDS = {"audio": ("audio",), "audio_proj": ("audio",),  # the position kinds a tower's tokens become
               "vision": ("video", "image"), "vision_proj": ("video", "image")}
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


class StoreError(ValueError):
    """A store that would hold nothing of what was asked (a hook or a modality without a row)."""


class _Done(Exception):
    """Raised inside the last requested hook: the rest of the forward is not needed."""


# ---------------------------------------------------------------------------------------------
# arguments


def resolve_hooks(model: Any, hooks: str | Sequence[str]) -> list[str]:
    """The hook points ``hooks`` names, in the model's order: exact names, or fnmatch patterns
    (``"blocks.*.hook_resid_post"``, ``"audio.blocks.*.hook_resid_post"``). A name or pattern that
    matches no hook point raises (with the closest names); patterns and scores are refused.

    Example:
        >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
        >>> resolve_hooks(HookedAVLLM.from_config(AVLLMConfig.tiny()), "blocks.*.hook_resid_post")
        ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
    """
    patterns = [hooks] if isinstance(hooks, str) else hooks
    if not isinstance(patterns, Sequence) or not patterns:
        raise ValueError(f"hooks={hooks!r} names no hook; pass hook names or patterns, e.g. 'blocks.*.hook_resid_post'")
    names = list(model.hook_dict)
    chosen: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"hooks holds {pattern!r} ({type(pattern).__name__}); pass hook names or patterns (strings)")
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)] if any(c in pattern for c in "*?[") else (
            [pattern] if pattern in model.hook_dict else [])
        if not matched:
            raise unknown_hook_name(pattern, names, where="hooks: the model has no hook point matching",
                                    listing="model.hook_dict lists them all; 'blocks.*.hook_resid_post' matches every layer")
        chosen.update(matched)
    refused = sorted(n for n in chosen if n.endswith(QUERY_KEY_HOOKS))
    if refused:
        raise ValueError(f"hooks: {refused[0]} is [batch, head, query, key], not one row per token; a store keeps "
                         "position-major activations (store attn.hook_z or the residual stream, or reduce patterns with "
                         "hooked_avllm.analysis.attention_share)")
    return [n for n in names if n in chosen]


def _store_dtype(dtype: torch.dtype | str | None, model: Any) -> torch.dtype:
    if dtype is None:
        dtype = model.cfg.dtype
    if isinstance(dtype, str):
        name = DTYPE_NAMES.get(dtype, dtype.removeprefix("torch."))
        if name not in STORE_DTYPES:
            raise ValueError(f"dtype={dtype!r}: store in one of {sorted(STORE_DTYPES)} (or a torch dtype of these)")
        return STORE_DTYPES[name]
    if dtype not in STORE_DTYPES.values():
        raise ValueError(f"dtype={dtype!r}: store in torch.float32, torch.bfloat16 or torch.float16")
    return dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in STORE_DTYPES.items() if value == dtype)


def _tower(name: str) -> str | None:
    """The tower slot of a hook name (``"audio"``, ``"vision_proj"`` ...), ``None`` for the LLM."""
    return name.split(".")[0] if name.startswith(ENCODER_PREFIXES) else None


def model_fingerprint(model: Any) -> dict[str, str]:
    """The model's name, family and a hash of its config (what a resumed run must match).

    Example:
        >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
        >>> sorted(model_fingerprint(HookedAVLLM.from_config(AVLLMConfig.tiny())))
        ['architecture', 'config_sha256', 'name']
    """
    cfg = model.cfg
    as_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
    text = json.dumps(as_dict, sort_keys=True, default=str)
    return {"name": str(getattr(cfg, "model_name", "")), "architecture": str(getattr(cfg, "architecture", "")),
            "config_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _clip_ids(clip_ids: Sequence[Any] | None, n: int) -> list[Any]:
    if clip_ids is None:
        return list(range(n))
    ids = list(clip_ids)
    if len(ids) != n:
        raise ValueError(f"clip_ids has {len(ids)} ids for {n} clips; pass one id per clip (or None: their positions)")
    wrong = [i for i in ids if isinstance(i, bool) or not isinstance(i, (str, int))]
    if wrong:
        raise TypeError(f"clip_ids must be strings or ints (they go into manifest.json), got {wrong[0]!r}")
    seen: set[Any] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"clip_ids holds {i!r} twice; every clip needs its own id")
        seen.add(i)
    return ids


# ---------------------------------------------------------------------------------------------
# one batch


def _llm_metadata(layout: TokenLayout, mask: Bool[Tensor, "batch pos"], first: int) -> dict[str, Tensor]:
    """The metadata of the LLM rows ``mask`` selects (row-major: clip by clip, in sequence order)."""
    layout = layout.to("cpu")
    b, _ = torch.nonzero(mask, as_tuple=True)
    codes = layout.kind_codes()[mask]
    time = torch.where(codes == AUDIO, layout.audio_time[mask],
                       torch.where(codes == VIDEO, layout.video_time[mask], torch.tensor(float("nan"))))
    real_index = layout.attention_mask.cumsum(-1) - 1  # position among the row's real tokens
    return {
        "clip": (first + b).to(torch.int32),
        "position": real_index[mask].to(torch.int32),
        "modality": codes.to(torch.int8),
        "time": torch.nan_to_num(time.float(), nan=-1.0),
        "frame_group": layout.frame_group[mask].to(torch.int32),
        "row": layout.row[mask].to(torch.int32),
        "col": layout.col[mask].to(torch.int32),
        "token_id": layout.input_ids[:, : mask.shape[1]][mask].to(torch.int32),
    }


def _tower_kind(layout: TokenLayout, slot: str, clip: int) -> str | None:
    """The modality of a tower's tokens in a one-clip batch (``None`` when the clip has none)."""
    if TOWER_KINDS[slot] == ("audio",):
        return "audio" if bool(layout.audio.any()) else None
    video, image = bool(layout.video.any()), bool(layout.image.any())
    if video and image:
        raise ValueError(f"clip {clip} holds both images and a video: the vision tower's tokens of the two cannot be told "
                         "apart here; store its vision tower hooks from clips with one kind of picture")
    return "video" if video else "image" if image else None


def _tower_metadata(layout: TokenLayout, kind: str, n: int, clip: int) -> dict[str, Tensor]:
    """Metadata of a tower's ``n`` rows of one clip: origin copied from the LLM placeholders of
    ``kind`` where there is exactly one row per placeholder, ``-1`` otherwise."""
    layout = layout.to("cpu")
    spots = getattr(layout, kind)[0]
    minus = torch.full((n,), -1, dtype=torch.int32)
    meta = {"clip": torch.full((n,), clip, dtype=torch.int32), "position": torch.arange(n, dtype=torch.int32),
            "modality": torch.full((n,), KIND_CODE[kind], dtype=torch.int8), "time": torch.full((n,), -1.0),
            "frame_group": minus, "row": minus.clone(), "col": minus.clone(), "token_id": minus.clone()}
    if int(spots.sum()) == n:  # one row per placeholder, in their order (the order they are scattered in)
        time = layout.audio_time[0, spots] if kind == "audio" else layout.video_time[0, spots]
        meta["time"] = torch.nan_to_num(time.float(), nan=-1.0)
        for field in ("frame_group", "row", "col"):
            meta[field] = getattr(layout, field)[0, spots].to(torch.int32)
    return meta


class _Capture:
    """Forward hooks that keep the chosen rows of each requested hook, on the host, in ``dtype``."""

    def __init__(self, llm: list[str], towers: list[str], mask: Tensor, dtype: torch.dtype, stop_at_embed: bool):
        self.llm, self.towers, self.mask, self.dtype = set(llm), set(towers), mask, dtype
        self.rows: dict[str, list[Tensor]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.stop_at_embed = stop_at_embed
        self.masks: dict[torch.device, Tensor] = {}

    def hooks(self) -> list[tuple[str, Callable]]:
        names = sorted(self.llm | self.towers)
        if self.stop_at_embed:
            names.append("hook_embed")
        return [(name, self._save) for name in dict.fromkeys(names)]

    def _save(self, act: Tensor, hook: Any) -> None:
        name = hook.name
        if name in self.llm or name in self.towers:
            if not act.is_floating_point():
                raise TypeError(f"hooks: {name} holds {act.dtype} values ({tuple(act.shape)}); a store keeps floating "
                                "activations (store the routing weights, not the indices)")
            if name in self.llm:
                if name in self.rows:
                    raise RuntimeError(f"{name} fired twice in one forward; a store takes one activation per LLM hook")
                if act.ndim < 2 or tuple(act.shape[:2]) != tuple(self.mask.shape):
                    raise ValueError(f"hooks: {name} has shape {tuple(act.shape)}, not [batch, pos, ...] of the inputs' "
                                     f"{tuple(self.mask.shape)}; store position-major activations")
                if act.device not in self.masks:
                    self.masks[act.device] = self.mask.to(act.device)
                rows, trailing = act.detach()[self.masks[act.device]], tuple(act.shape[2:])
            else:
                if act.ndim < 2:
                    raise ValueError(f"hooks: {name} has shape {tuple(act.shape)}; a store needs [tokens, ...] rows")
                flat = act.detach().flatten(0, 1) if act.ndim > 2 else act.detach()
                rows, trailing = flat, tuple(act.shape[2:] if act.ndim > 2 else act.shape[1:])
            # a copy: a tower's rows are a view of its activation, which the forward may still change in place
            rows = rows.reshape(rows.shape[0], -1).to(device="cpu", dtype=self.dtype, copy=name in self.towers)
            self.rows.setdefault(name, []).append(rows)
            self.shapes[name] = trailing
        done_llm = self.llm and self.llm <= set(self.rows)
        if done_llm or (self.stop_at_embed and name == "hook_embed"):
            raise _Done


# ---------------------------------------------------------------------------------------------
# the writer


def _signature(model: Any, hooks: list[str], modalities: list[str], dtype: torch.dtype, batch_size: int,
               shard_mb: float, clip_ids: list[Any]) -> dict[str, Any]:
    """What a store's manifest records of the arguments that wrote it (a resume must repeat them)."""
    return {"hooks": hooks, "modalities": modalities, "dtype": _dtype_name(dtype), "batch_size": batch_size,
            "shard_mb": shard_mb, "clip_ids": clip_ids, "model": model_fingerprint(model)}


def _check_same_arguments(path: Path, manifest: dict[str, Any], signature: dict[str, Any]) -> None:
    """Raise, naming each difference, when the store at ``path`` was written with other arguments."""
    stored = {**manifest, "hooks": list(manifest.get("hooks", {}))}  # the manifest's hooks map each to its shape
    differ = [key for key, value in signature.items() if stored.get(key) != value]
    if manifest.get("format_version") != FORMAT_VERSION:
        differ.insert(0, "format_version")
    if differ:
        shown = "; ".join(f"{key}: stored {_short(stored.get(key))}, asked {_short(signature.get(key))}" for key in differ)
        raise ValueError(f"{path} holds a store written with other arguments ({shown}); resume it with the same arguments, "
                         "write to a new path, or pass overwrite=True to start again")


class _StoreWriter:
    """One store folder: its manifest, its files, the batches still to run."""

    def __init__(self, model: Any, path: Path, hooks: list[str], modalities: list[str], dtype: torch.dtype,
                 batch_size: int, shard_mb: float, clip_ids: list[Any], overwrite: bool, extra: dict | None = None):
        self.model, self.path, self.hooks, self.modalities = model, path, hooks, modalities
        self.dtype, self.batch_size, self.shard_bytes = dtype, batch_size, int(shard_mb * 2**20)
        self.llm = [h for h in hooks if _tower(h) is None]
        self.towers = [h for h in hooks if _tower(h) is not None]
        self.codes = modality_codes(modalities)
        self.signature = {**_signature(model, hooks, modalities, dtype, batch_size, shard_mb, clip_ids), **(extra or {})}
        self.manifest = self._open(overwrite)

    # ------------------------------------------------------------------ the folder
    def _open(self, overwrite: bool) -> dict[str, Any]:
        manifest_path = self.path / MANIFEST
        if manifest_path.is_file() and overwrite:
            self._clear()
        elif manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            _check_same_arguments(self.path, manifest, self.signature)
            self._forget_unlisted(manifest)
            return manifest
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f"{self.path} exists and holds no activation store; pass a new (or empty) folder")
        self.path.mkdir(parents=True, exist_ok=True)
        groups = {h: (LLM_GROUP if _tower(h) is None else h) for h in self.hooks}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": hooked_avllm.__version__,
            **self.signature,
            "hooks": {h: {"group": groups[h], "rows": "llm positions" if _tower(h) is None else "tower tokens",
                          "d": None, "shape": None} for h in self.hooks},
            "metadata_fields": {field: str(dtype).removeprefix("torch.") for field, dtype in META_FIELDS.items()},
            "shards": [], "pending": [], "clips_done": [], "complete": False,
        }
        self._write_manifest(manifest)
        return manifest

    def _clear(self) -> None:
        for item in [self.path / MANIFEST, *self.path.glob("shard-*.safetensors"), *self.path.glob("*.tmp")]:
            item.unlink()
        shutil.rmtree(self.path / "pending", ignore_errors=True)

    def _forget_unlisted(self, manifest: dict[str, Any]) -> None:
        """Delete what a stopped run left that the manifest does not list (a part or shard written
        but not recorded, a half-written temporary file): that work is redone."""
        listed = {entry["file"] for entry in manifest["shards"] + manifest["pending"]}
        for item in [*self.path.glob("shard-*.safetensors"), *self.path.glob("pending/*.safetensors"),
                     *self.path.glob("*.tmp"), *self.path.glob("pending/*.tmp")]:
            if str(item.relative_to(self.path)) not in listed:
                item.unlink()
        missing = [name for name in listed if not (self.path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.path / MANIFEST} lists {missing[0]}, which is gone; the store is damaged: "
                                    "write it again (overwrite=True)")

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        temporary = self.path / (MANIFEST + ".tmp")
        temporary.write_text(json.dumps(manifest, indent=1))
        os.replace(temporary, self.path / MANIFEST)

    def _save(self, tensors: dict[str, Tensor], relative: str) -> int:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        save_file({name: t.contiguous() for name, t in tensors.items()}, str(temporary), metadata={"format": "pt"})
        os.replace(temporary, target)
        return target.stat().st_size

    # ------------------------------------------------------------------ a batch
    def capture(self, batch: ModelInputs, first: int) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
        """Run one batch; return ``{hook: rows}`` and ``{group: metadata}`` (empty groups left out)."""
        layout = batch.layout
        mask = torch.zeros(layout.shape, dtype=torch.bool)
        for kind in self.modalities:
            mask |= getattr(layout, kind).to("cpu")
        capture = _Capture(self.llm, self.towers, mask, self.dtype, stop_at_embed=not self.llm)
        return_type = "normalized" if any(h.startswith("ln_final.") for h in self.llm) else None
        try:
            with torch.no_grad(), self.model.hooks(fwd_hooks=capture.hooks()):
                self.model(batch, return_type=return_type)
        except _Done:
            pass
        unfired = [h for h in self.llm if h not in capture.rows]
        if unfired:
            raise ValueError(f"hooks: {unfired[0]} did not fire in the forward (e.g. attn.hook_result fires only after "
                             "model.set_use_attn_result(True)); drop it or switch it on")
        values: dict[str, Tensor] = {}
        meta: dict[str, dict[str, Tensor]] = {}
        if self.llm and bool(mask.any()):
            meta[LLM_GROUP] = _llm_metadata(layout, mask, first)
            values.update({h: torch.cat(capture.rows[h]) for h in self.llm})
        for hook in self.towers:
            if hook not in capture.rows:
                continue  # this clip has no media for that tower
            kind = _tower_kind(layout, _tower(hook), first)
            if kind is None or KIND_CODE[kind] not in self.codes:
                continue
            rows = torch.cat(capture.rows[hook])
            values[hook] = rows
            meta[hook] = _tower_metadata(layout, kind, rows.shape[0], first)
        for hook, shape in capture.shapes.items():
            self._check_width(hook, shape, first)
        return values, meta

    def _check_width(self, hook: str, shape: tuple[int, ...], clip: int) -> None:
        info = self.manifest["hooks"][hook]
        if info["shape"] is None:
            info["shape"] = list(shape)
            info["d"] = int(torch.Size(shape).numel())
        elif list(shape) != info["shape"]:
            raise ValueError(f"{hook} has trailing shape {tuple(shape)} at clip {clip} but {tuple(info['shape'])} before; "
                             "its rows must have one width (is it a channel-first activation?)")

    def commit(self, members: tuple[int, ...], values: dict[str, Tensor], meta: dict[str, dict[str, Tensor]],
               clip_ids: list[Any]) -> None:
        """Write one batch's rows as a part file, record it, and merge the parts into a shard once
        they reach the shard size."""
        tensors = dict(values)
        for group, fields in meta.items():
            tensors.update({meta_key(group, field): fields[field] for field in META_FIELDS})
        relative = f"pending/part-{members[0]:08d}.safetensors"
        size = self._save(tensors, relative) if tensors else 0
        entry = {"file": relative, "clips": [members[0], members[-1] + 1],
                 "rows": {group: int(fields["clip"].shape[0]) for group, fields in meta.items()},
                 "rows_by_modality": {group: _by_code(fields["modality"]) for group, fields in meta.items()},
                 "bytes": size}
        if tensors:
            self.manifest["pending"].append(entry)
        self.manifest["clips_done"] += [clip_ids[i] for i in members]
        self._write_manifest(self.manifest)
        if sum(e["bytes"] for e in self.manifest["pending"]) >= self.shard_bytes:
            self.merge()

    def merge(self) -> None:
        """The pending parts, in clip order, as the next shard."""
        parts = self.manifest["pending"]
        if not parts:
            return
        relative = f"shard-{len(self.manifest['shards']):05d}.safetensors"
        if len(parts) == 1 and self._link(parts[0]["file"], relative):
            size = (self.path / relative).stat().st_size  # a batch as large as a shard: the part is the shard
        else:
            chunks: dict[str, list[Tensor]] = {}
            for entry in parts:
                with safe_open(str(self.path / entry["file"]), framework="pt") as part:
                    for name in part.keys():
                        chunks.setdefault(name, []).append(part.get_tensor(name))
            size = self._save({name: torch.cat(pieces) for name, pieces in chunks.items()}, relative)
        rows: dict[str, int] = {}
        by_modality: dict[str, dict[str, int]] = {}
        for entry in parts:
            for group, n in entry["rows"].items():
                rows[group] = rows.get(group, 0) + n
            for group, counts in entry["rows_by_modality"].items():
                for code, n in counts.items():
                    by_modality.setdefault(group, {})[code] = by_modality.get(group, {}).get(code, 0) + n
        self.manifest["shards"].append({"file": relative, "clips": [parts[0]["clips"][0], parts[-1]["clips"][1]],
                                        "rows": rows, "rows_by_modality": by_modality, "bytes": size})
        self.manifest["pending"] = []
        self._write_manifest(self.manifest)
        for entry in parts:
            (self.path / entry["file"]).unlink(missing_ok=True)

    def _link(self, part: str, shard: str) -> bool:
        """Give the part file the shard's name too (a hard link: the part stays until the manifest
        says the shard holds it, so a stop in between loses nothing); False where links fail."""
        target = self.path / shard
        target.unlink(missing_ok=True)
        try:
            os.link(self.path / part, target)
        except OSError:
            return False
        return True

    def finish(self) -> None:
        self.merge()
        self.manifest["complete"] = True
        self._write_manifest(self.manifest)


def _sharded_manifest(top: Path) -> dict[str, Any] | None:
    """The manifest of a finished store written by several ranks at ``top``; ``None`` where there is
    none yet (a new or empty folder, or one holding the ranks' parts of an unfinished run)."""
    manifest_path = top / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if "ranks" not in manifest:
            raise ValueError(f"{top} holds a store written by a single process; write to a new path, resume it "
                             "without torch.distributed (distributed=False), or pass overwrite=True to start again")
        return manifest
    if top.exists() and (not top.is_dir() or any(not p.name.startswith("rank-") for p in top.iterdir())):
        raise FileExistsError(f"{top} exists and holds no activation store; pass a new (or empty) folder")
    return None


def _clear_sharded(top: Path) -> None:
    """What a store (of one process or of several ranks) left at ``top``: gone."""
    for item in [top / MANIFEST, *top.glob("shard-*.safetensors"), *top.glob("*.tmp")]:
        item.unlink(missing_ok=True)
    for folder in [top / "pending", *top.glob("rank-*-of-*")]:
        shutil.rmtree(folder, ignore_errors=True)


def _join_ranks(top: Path, world_size: int, signature: dict[str, Any]) -> None:
    """``top``'s manifest: the ranks' shards in rank order (= clip order), their clips, one width per hook."""
    parts = [json.loads((top / rank_folder(r, world_size) / MANIFEST).read_text()) for r in range(world_size)]
    first = parts[0]
    hooks = {}
    for hook, info in first["hooks"].items():
        shaped = [p["hooks"][hook] for p in parts if p["hooks"][hook]["shape"] is not None]
        hooks[hook] = shaped[0] if shaped else info
    manifest = {
        **{key: first[key] for key in ("format", "format_version", "library_version", "metadata_fields")},
        **signature, "hooks": hooks,
        "shards": [{**entry, "file": f"{rank_folder(r, world_size)}/{entry['file']}"}
                   for r, part in enumerate(parts) for entry in part["shards"]],
        "pending": [], "clips_done": [clip for part in parts for clip in part["clips_done"]], "complete": True,
    }
    temporary = top / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, top / MANIFEST)


def _by_code(codes: Tensor) -> dict[str, int]:
    values, counts = torch.unique(codes, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _present(layouts: list[TokenLayout]) -> set[str]:
    """The position kinds some layout holds."""
    return {kind for layout in layouts for kind in ("text", "audio", "video", "image") if bool(getattr(layout, kind).any())}


def _check_selection(store: ActivationStore, hooks: list[str], modalities: list[str]) -> None:
    """Raise :class:`StoreError` when a requested hook or modality got no row."""
    empty_hooks = [h for h in hooks if store.n_rows(h) == 0]
    llm = [h for h in hooks if _tower(h) is None]
    missing = [m for m in modalities if llm and store.n_rows(llm[0], m) == 0]
    if empty_hooks or missing:
        held = {h: store.rows_by_modality(h) for h in hooks[:4]}
        what = (f"no row of {empty_hooks}" if empty_hooks else "") + (" and " if empty_hooks and missing else "") + (
            f"no {missing} position in the LLM" if missing else "")
        raise StoreError(f"the store at {store.path} holds {what}: the clips have none of it (rows by modality: {held}); "
                         "drop it from hooks/modalities, or check the clips and prepare")


def write_activation_store(
    model: Any,
    clips: Sequence[Any],
    path: str | os.PathLike,
    *,
    hooks: str | Sequence[str],
    modalities: str | Sequence[str] = "audio",
    prepare: Callable[[Any], ModelInputs] | None = None,
    clip_ids: Sequence[str | int] | None = None,
    batch_size: int = 1,
    dtype: torch.dtype | str | None = None,
    shard_mb: float = 256.0,
    progress: bool = True,
    overwrite: bool = False,
    distributed: bool | None = None,
) -> ActivationStore:
    """Run ``clips`` through ``model`` once and write ``hooks`` at ``modalities`` to ``path`` (see
    the module docstring); return the store, opened for reading.

    Args:
        model: a :class:`~hooked_avllm.HookedAVLLM`.
        clips: prepared one-row inputs (``model.prepare(...)``), or anything ``prepare`` turns into them.
        path: a new or empty folder, or a store written by an earlier call with the same arguments
            (it is resumed: finished batches are kept).
        hooks: hook names or fnmatch patterns (``"blocks.*.hook_resid_post"``).
        modalities: the position kinds kept at LLM hooks, and the tower tokens kept at tower hooks.
        prepare: ``clip -> model.prepare(...)``, called in the batch that runs the clip.
        clip_ids: one id (str or int) per clip, written to the manifest (default: their positions).
        batch_size: clips per forward (left-padded batch); tower hooks need 1.
        dtype: ``torch.bfloat16``, ``torch.float32`` or ``torch.float16`` (default: the model's).
        shard_mb: pending rows are merged into a shard once they reach this many MiB.
        progress: a progress bar over the clips (tqdm).
        overwrite: discard a store already at ``path`` and start again.
        distributed: split the batches over the ranks of a ``torch.distributed`` group (``None``:
            when one of more than one rank is initialised, see :func:`hooked_avllm.parallel.active`).
            Every rank writes its contiguous block of batches to a store of its own,
            ``path/rank-{r}-of-{w}/`` (resumable as above), then rank 0 writes ``path``'s manifest,
            which lists their shards in clip order: the store reads back as one process writes it,
            row for row (the batches are the same). Every rank returns it.

    Raises:
        KeyError: a hook name or pattern that matches no hook point.
        StoreError: a hook or modality of which the clips hold nothing.
    """
    hook_names = resolve_hooks(model, hooks)
    codes = modality_codes(modalities)
    if codes is None:
        raise ValueError("modalities=None: name the modalities to keep, e.g. 'audio' or ['audio', 'video']")
    wanted = [KINDS[code] for code in codes]
    for hook in hook_names:
        slot = _tower(hook)
        if slot is not None and not set(TOWER_KINDS[slot]) & set(wanted):
            raise ValueError(f"hooks: {hook} holds the {slot} tower's {'/'.join(TOWER_KINDS[slot])} tokens, but "
                             f"modalities={wanted} keeps none of them; add {TOWER_KINDS[slot][0]!r} to modalities")
    check_batch_size(batch_size)
    towers = [h for h in hook_names if _tower(h) is not None]
    if towers and batch_size != 1:
        raise ValueError(f"hooks: {towers[0]} is a tower hook, whose tokens a batch packs together; pass batch_size=1 "
                         f"(got {batch_size}), or store tower hooks in a store of their own")
    if prepare is not None and not callable(prepare):
        raise TypeError(f"prepare={prepare!r} is not callable; pass clip -> model.prepare(...) or None")
    if isinstance(clips, (str, bytes, ModelInputs)) or not isinstance(clips, Sequence):
        raise TypeError(f"clips must be a list of clips, got {type(clips).__name__}; wrap a single one in a list")
    if not isinstance(shard_mb, (int, float)) or isinstance(shard_mb, bool) or not shard_mb > 0:
        raise ValueError(f"shard_mb must be a number of MiB > 0, got {shard_mb!r}")
    store_dtype = _store_dtype(dtype, model)
    ids = _clip_ids(clip_ids, len(clips))
    if prepare is None and len(clips):
        for i, clip in enumerate(clips):
            _check_prepared(clip, i, prepared=False)
        present = _present([clip.layout for clip in clips])
        lacking = [m for m in wanted if m not in present]
        if lacking and any(_tower(h) is None for h in hook_names):
            raise StoreError(f"modalities={wanted}: none of the {len(clips)} clips holds {lacking} positions (they hold "
                             f"{sorted(present)}); nothing would be stored for them")
    if len(clips) == 0:
        raise ValueError("clips is empty: pass at least one clip (nothing would be stored)")

    if parallel.active(distributed):
        return _write_sharded(model, clips, Path(path), hook_names, wanted, store_dtype, batch_size, float(shard_mb), ids,
                              overwrite, prepare, progress)
    writer = _StoreWriter(model, Path(path), hook_names, wanted, store_dtype, batch_size, float(shard_mb), ids, overwrite)
    start = len(writer.manifest["clips_done"])
    batches = [tuple(range(i, min(i + batch_size, len(clips)))) for i in range(start, len(clips), batch_size)]
    one_batch = _batch_runner(model, clips, prepare, writer, wanted, hook_names, ids)
    if batches:
        run_sweep(one_batch, batches, tool="activation store", unit="clips", rows=len, progress=progress,
                  distributed=False)
    if not writer.manifest["complete"]:
        writer.finish()
    store = ActivationStore(writer.path)
    _check_selection(store, hook_names, wanted)
    return store


def _batch_runner(model: Any, clips: Sequence[Any], prepare: Callable[[Any], ModelInputs] | None, writer: _StoreWriter,
                  wanted: list[str], hook_names: list[str], ids: list[Any]) -> Callable[[Any], None]:
    """The work of one batch (a sweep unit whose item is its clips' indices): prepare, capture, commit."""
    make_batch = left_padded_batches(model)
    warned: list[bool] = []

    def one_batch(unit: SweepUnit[tuple[int, ...]]) -> None:
        members = unit.item
        prepared = []
        for i in members:
            item = clips[i] if prepare is None else prepare(clips[i])
            _check_prepared(item, i, prepared=prepare is not None)
            prepared.append(item)
        batch = prepared[0] if len(prepared) == 1 else make_batch(prepared)
        # clips prepared on the host (the usual case for a store of many) go to the model's device here
        batch = batch.to(model.embed.weight.device, model.embed.weight.dtype)
        values, meta = writer.capture(batch, members[0])
        if not warned:
            warned.append(True)
            _warn_first_batch(batch.layout, wanted, hook_names)
        writer.commit(members, values, meta, ids)

    return one_batch


def rank_folder(rank: int, world_size: int) -> str:
    """The folder of a rank's part of a store written by ``world_size`` ranks.

    Example:
        >>> rank_folder(1, 4)
        'rank-001-of-004'
    """
    return f"rank-{rank:03d}-of-{world_size:03d}"


def _write_sharded(model: Any, clips: Sequence[Any], top: Path, hook_names: list[str], wanted: list[str],
                   dtype: torch.dtype, batch_size: int, shard_mb: float, ids: list[Any], overwrite: bool,
                   prepare: Callable[[Any], ModelInputs] | None, progress: bool) -> ActivationStore:
    """:func:`write_activation_store` over the ranks of a process group (see its ``distributed``)."""
    rank, world_size = parallel.world()
    parallel._check_same_length(len(clips), "clips")  # every rank raises alike: none waits at a barrier
    if rank == 0 and overwrite:
        _clear_sharded(top)
    parallel.barrier()  # every rank sees the folder after rank 0 cleared it
    signature = {**_signature(model, hook_names, wanted, dtype, batch_size, shard_mb, ids), "ranks": world_size}
    written = _sharded_manifest(top)
    if written is not None:  # a finished store: every rank read the same manifest, so all return or all raise
        _check_same_arguments(top, written, signature)
    else:
        writer = _StoreWriter(model, top / rank_folder(rank, world_size), hook_names, wanted, dtype, batch_size, shard_mb,
                              ids, False, extra={"ranks": world_size, "rank": rank})
        finished = [len(writer.manifest["clips_done"])]  # this rank's first clips, done by an earlier run
        batches = [tuple(range(i, min(i + batch_size, len(clips)))) for i in range(0, len(clips), batch_size)]
        one_batch = _batch_runner(model, clips, prepare, writer, wanted, hook_names, ids)

        def run(index: int, members: tuple[int, ...]) -> None:
            if finished[0] >= len(members):  # a resumed rank skips its finished batches (they come first)
                finished[0] -= len(members)
                return
            one_batch(SweepUnit(index, (index,), members[0], len(members), members))

        parallel.map_sharded(run, batches, distributed=True, progress=progress, desc="activation store", what="batches")
        if not writer.manifest["complete"]:
            writer.finish()
        parallel.barrier()
        if rank == 0:
            _join_ranks(top, world_size, signature)
        parallel.barrier()  # rank 0's manifest is written before any rank opens the store
    store = ActivationStore(top)
    _check_selection(store, hook_names, wanted)
    return store


def _check_prepared(item: Any, index: int, prepared: bool) -> None:
    """``item`` must be one row of prepared inputs (``prepared``: it came from ``prepare``)."""
    where = f"prepare(clips[{index}]) returned" if prepared else f"clips[{index}] is"
    if not isinstance(item, ModelInputs):
        raise TypeError(f"{where} a {type(item).__name__}, not prepared inputs; pass what model.prepare(...) returns, "
                        "or prepare=clip -> model.prepare(...)")
    if item.input_ids.shape[0] != 1:
        raise ValueError(f"{where} {item.input_ids.shape[0]} rows of inputs; pass one clip per item "
                         "(batch_size= batches them)")


def _warn_first_batch(layout: TokenLayout, wanted: list[str], hooks: list[str]) -> None:
    lacking = [m for m in wanted if not bool(getattr(layout, m).any())]
    if lacking and any(_tower(h) is None for h in hooks):
        warnings.warn(f"the first batch of clips holds no {lacking} positions; if no clip does, the run ends with a "
                      "StoreError (check modalities and prepare)", AnalysisWarning, stacklevel=3)
