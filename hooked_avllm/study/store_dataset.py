"""Reading an audio-visual activation store: the folder :func:`hooked_avllm.study.store.write_activation_store`
writes, opened lazily as a torch ``Dataset`` of token rows, read shard by shard, and exported in
the format SAELens trains from.

The format (``manifest.json`` says which version):

- ``shard-00000.safetensors``, ... : rows are tokens. One tensor per hook, ``[rows, d]`` in the
  store's dtype (an activation with several trailing axes, e.g. ``hook_z``'s ``[head, d_head]``, is
  flattened; ``ActivationStore.hook_shape`` gives the original axes). Hooks whose rows are the same
  tokens form a *group*: every LLM hook is in group ``"llm"`` (its rows are the chosen positions of
  the LLM sequence); each tower hook is its own group (its rows are that tower's own tokens). Each
  group carries one metadata tensor per field, named ``meta/{group}/{field}``:
  ``clip`` (index into the manifest's ``clip_ids``), ``position`` (LLM rows: the position among the
  clip's real tokens, padding not counted; tower rows: the row in the tower's sequence),
  ``modality`` (the code of :data:`hooked_avllm.vocabulary.KIND_CODE`), ``time`` (seconds from the
  clip start of an audio token, or of a video token's frame group; ``-1`` where undefined),
  ``frame_group``, ``row``, ``col`` (the video/image token grid; ``-1`` elsewhere) and ``token_id``
  (the input id at an LLM position; ``-1`` for tower rows).
- ``pending/part-*.safetensors``: the same layout, one file per finished batch not yet merged
  into a shard (a store that is still being written, or was stopped, is readable as it stands).
- ``manifest.json``: hooks (group, width, shape), modalities, dtype, the shards and parts with
  their clips and row counts (per modality code), every clip id and the ones done, the model's
  name and config hash, the library version.

Example:
    >>> import tempfile, torch
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> from hooked_avllm.study.store import write_activation_store
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> clips = [model.to_inputs(torch.tensor([[1, 2, 3, 4]])), model.to_inputs(torch.tensor([[5, 6]]))]
    >>> store = write_activation_store(model, clips, tempfile.mkdtemp(), hooks="blocks.*.hook_resid_post",
    ...                                modalities="text", progress=False)
    >>> dataset = store.dataset("blocks.1.hook_resid_post")
    >>> len(dataset), dataset[4]["blocks.1.hook_resid_post"].shape, dataset[4]["clip"], dataset[4]["position"]
    (6, torch.Size([64]), 1, 0)
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from hooked_avllm.components.hook_checks import unknown_hook_name
from hooked_avllm.vocabulary import KIND_CODE, KINDS

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LLM_GROUP", "MANIFEST", "META_FIELDS", "ActivationStore", "SAELensExport", "StoreDataset",
    "export_sae_lens", "meta_key",
]

FORMAT = "hooked_avllm.activation_store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LLM_GROUP = "llm"  # the group of every LLM hook: rows are chosen positions of the LLM sequence
# per-row metadata: name -> dtype (-1 where a field is undefined for the row)
META_FIELDS: dict[str, torch.dtype] = {
    "clip": torch.int32, "position": torch.int32, "modality": torch.int8, "time": torch.float32,
    "frame_group": torch.int32, "row": torch.int32, "col": torch.int32, "token_id": torch.int32,
}
STORE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# datasets' extension type for fixed-shape 2D arrays: SAELens's cached activations are a column of it
DATASETS_ARRAY2D = "datasets.features.features.Array2DExtensionType"


def meta_key(group: str, field: str) -> str:
    """The shard tensor holding metadata ``field`` of ``group``'s rows.

    Example:
        >>> meta_key("llm", "time")
        'meta/llm/time'
    """
    return f"meta/{group}/{field}"


def modality_codes(modalities: str | Sequence[str] | None) -> tuple[int, ...] | None:
    """Kind codes of modality names (``None``: no filter); an unknown name raises, naming the known ones.

    Example:
        >>> modality_codes(["video", "audio"])
        (1, 2)
    """
    if modalities is None:
        return None
    names = [modalities] if isinstance(modalities, str) else list(modalities)
    unknown = [name for name in names if name not in KIND_CODE or name in ("generated", "padding")]
    if unknown or not names:
        raise ValueError(f"modalities={modalities!r}: use some of 'text', 'audio', 'video', 'image' (a store holds "
                         "prompt positions and tower tokens)")
    return tuple(sorted({KIND_CODE[name] for name in names}))


class ActivationStore:
    """An activation store on disk, read through its manifest; nothing else is read until asked.

    ``store.hooks``, ``store.groups``, ``store.dtype``, ``store.clip_ids``, ``store.n_rows(hook,
    modalities)`` come from the manifest; :meth:`dataset` is a lazy torch ``Dataset`` of token
    rows, :meth:`iter_shards` reads shard by shard, :meth:`read` loads one hook whole (small
    stores), :meth:`export_sae_lens` writes SAELens's cached-activations format.

    Example:
        >>> store = ActivationStore("acts/")  # doctest: +SKIP
        >>> store.read("blocks.3.hook_resid_post", modalities="audio").shape  # [audio rows, d_model]  # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.path} holds no activation store ({MANIFEST} is missing); write one with "
                                    "hooked_avllm.study.store.write_activation_store(model, clips, path, hooks=...)")
        self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest} is not a version-{FORMAT_VERSION} {FORMAT} manifest (format "
                             f"{self.manifest.get('format')!r}, version {self.manifest.get('format_version')!r})")

    # ------------------------------------------------------------------ what the manifest says
    @property
    def hooks(self) -> list[str]:
        """The stored hooks, in the model's order (towers first, then the LLM)."""
        return list(self.manifest["hooks"])

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> its hooks (hooks of a group share rows and metadata)."""
        groups: dict[str, list[str]] = {}
        for hook, info in self.manifest["hooks"].items():
            groups.setdefault(info["group"], []).append(hook)
        return groups

    @property
    def dtype(self) -> torch.dtype:
        return STORE_DTYPES[self.manifest["dtype"]]

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["modalities"])

    @property
    def clip_ids(self) -> list[Any]:
        """The id of every clip of the run, in order (``clip`` metadata indexes this list)."""
        return list(self.manifest["clip_ids"])

    @property
    def complete(self) -> bool:
        """Whether every clip was written (a stopped run reads as it stands; rerun the writer to finish it)."""
        return bool(self.manifest["complete"])

    def d(self, hook: str) -> int:
        """Width of ``hook``'s rows (the product of its trailing axes)."""
        return int(self._hook(hook)["d"])

    def hook_shape(self, hook: str) -> tuple[int, ...]:
        """The trailing axes of ``hook``'s activation (``(d_model,)``; ``(head, d_head)`` for ``hook_z``)."""
        return tuple(self._hook(hook)["shape"])

    def group_of(self, hook: str) -> str:
        return self._hook(hook)["group"]

    def files(self) -> list[dict[str, Any]]:
        """The manifest's entries of the written files, in clip order: shards, then pending parts."""
        return list(self.manifest["shards"]) + list(self.manifest["pending"])

    def n_rows(self, hook: str, modalities: str | Sequence[str] | None = None) -> int:
        """Rows of ``hook`` (of those modalities), counted from the manifest."""
        group, codes = self.group_of(hook), modality_codes(modalities)
        return sum(_count(entry, group, codes) for entry in self.files())

    def nbytes(self) -> int:
        """Bytes of the written files (shards and parts)."""
        return sum(int(entry["bytes"]) for entry in self.files())

    def _hook(self, hook: str) -> dict[str, Any]:
        if hook not in self.manifest["hooks"]:
            raise unknown_hook_name(hook, self.hooks, where="this store holds no hook",
                                    listing=f"store.hooks lists the {len(self.hooks)} stored")
        return self.manifest["hooks"][hook]

    def _group(self, hooks: str | Sequence[str] | None) -> tuple[str, list[str]]:
        """The group of ``hooks`` (all must share one; ``None``: the only group's hooks)."""
        if hooks is None:
            if len(self.groups) > 1:
                raise ValueError(f"this store holds {len(self.groups)} row groups ({sorted(self.groups)}); hooks of "
                                 "different groups are different tokens: pass hooks= of one group")
            group = next(iter(self.groups))
            return group, self.groups[group]
        names = [hooks] if isinstance(hooks, str) else list(hooks)
        if not names:
            raise ValueError("hooks=[] selects nothing; pass hook names (store.hooks lists them)")
        groups = {self.group_of(name) for name in names}
        if len(groups) > 1:
            raise ValueError(f"hooks={names} come from different row groups {sorted(groups)} (LLM positions vs a tower's "
                             "own tokens): their rows are different tokens; read each group separately")
        return groups.pop(), names

    # ------------------------------------------------------------------ reading
    def dataset(self, hooks: str | Sequence[str] | None = None, modalities: str | Sequence[str] | None = None,
                max_open_shards: int = 4) -> "StoreDataset":
        """A lazy torch ``Dataset`` of the token rows of ``hooks`` (one group) at ``modalities``."""
        return StoreDataset(self, hooks, modalities, max_open_shards=max_open_shards)

    def iter_shards(self, hooks: str | Sequence[str] | None = None, modalities: str | Sequence[str] | None = None,
                    ) -> Iterator[dict[str, Tensor]]:
        """Shard by shard (clip order): ``{hook: [rows, d], field: [rows] ...}`` of the rows of
        ``modalities`` (every metadata field of :data:`META_FIELDS`), one shard in memory at a time."""
        group, names = self._group(hooks)
        codes = modality_codes(modalities)
        for entry in self.files():
            if _count(entry, group, codes) == 0:
                continue
            with safe_open(str(self.path / entry["file"]), framework="pt") as shard:
                meta = {field: shard.get_tensor(meta_key(group, field)) for field in META_FIELDS}
                keep = None if codes is None else torch.isin(meta["modality"], torch.tensor(codes, dtype=torch.int8))
                rows = {name: shard.get_tensor(name) for name in names}
            rows.update(meta)
            yield rows if keep is None else {name: t[keep] for name, t in rows.items()}

    def read(self, hook: str, modalities: str | Sequence[str] | None = None, with_metadata: bool = False,
             ) -> Float[Tensor, "rows d"] | tuple[Tensor, dict[str, Tensor]]:
        """Every row of ``hook`` (of ``modalities``) in one tensor ``[rows, d]`` (and, with
        ``with_metadata``, the metadata fields ``[rows]``): for stores that fit in memory."""
        parts = list(self.iter_shards(hook, modalities))
        if not parts:
            raise ValueError(f"the store holds no rows of {hook} at modalities={modalities!r} "
                             f"(rows by modality: {self.rows_by_modality(hook)})")
        values = torch.cat([part[hook] for part in parts])
        if not with_metadata:
            return values
        return values, {field: torch.cat([part[field] for part in parts]) for field in META_FIELDS}

    def rows_by_modality(self, hook: str) -> dict[str, int]:
        """``{"audio": n, ...}``: rows of ``hook`` per modality, from the manifest."""
        group = self.group_of(hook)
        totals: dict[str, int] = {}
        for entry in self.files():
            for code, n in entry["rows_by_modality"].get(group, {}).items():
                totals[KINDS[int(code)]] = totals.get(KINDS[int(code)], 0) + int(n)
        return totals

    def export_sae_lens(self, out: str | Path, hooks: str | Sequence[str], context_size: int = 128,
                        modalities: str | Sequence[str] | None = None, **kwargs: Any) -> "SAELensExport":
        """:func:`export_sae_lens` of this store."""
        return export_sae_lens(self, out, hooks, context_size=context_size, modalities=modalities, **kwargs)

    def __repr__(self) -> str:
        done = len(self.manifest["clips_done"])
        return (f"ActivationStore({str(self.path)!r}, {len(self.hooks)} hooks, modalities={self.modalities}, "
                f"dtype={self.manifest['dtype']}, clips {done}/{len(self.clip_ids)}, {len(self.files())} files, "
                f"{self.nbytes() / 2**20:.1f} MiB)")


def _count(entry: dict[str, Any], group: str, codes: tuple[int, ...] | None) -> int:
    """Rows of ``group`` in a file entry of the manifest, at ``codes`` (all when ``None``)."""
    by_code = entry["rows_by_modality"].get(group, {})
    return sum(int(n) for code, n in by_code.items() if codes is None or int(code) in codes)


class StoreDataset(torch.utils.data.Dataset):
    """The token rows of some hooks of one group, at some modalities, as a torch ``Dataset``.

    Construction reads only the manifest (row counts per file and modality). ``dataset[i]`` opens
    the file holding row ``i`` (memory-mapped by safetensors' ``safe_open``; at most
    ``max_open_shards`` stay open), reads that file's metadata columns once (29 bytes a row) and
    that row of each hook alone. Rows come in clip order.

    ``dataset[i]`` is a dict: ``{hook: [d] (the store's dtype), "clip": index, "clip_id": id,
    "position", "modality": name, "time" (s, -1 where undefined), "frame_group", "row", "col",
    "token_id"}``; torch's default ``collate`` batches it (a ``DataLoader`` with ``shuffle=True``
    reads rows from all over the store: fine for a few open shards, slow for many; iterate
    :meth:`ActivationStore.iter_shards` for throughput).

    Example:
        >>> dataset = ActivationStore("acts/").dataset("blocks.3.hook_resid_post", modalities="audio")  # doctest: +SKIP
        >>> row = dataset[0]; row["blocks.3.hook_resid_post"].shape, row["time"]  # doctest: +SKIP
    """

    def __init__(self, store: ActivationStore, hooks: str | Sequence[str] | None = None,
                 modalities: str | Sequence[str] | None = None, max_open_shards: int = 4):
        if not isinstance(max_open_shards, int) or max_open_shards < 1:
            raise ValueError(f"max_open_shards must be an int >= 1, got {max_open_shards!r}")
        self.store = store
        self.group, self.hooks = store._group(hooks)
        self.codes = modality_codes(modalities)
        self.entries = [entry for entry in store.files() if _count(entry, self.group, self.codes)]
        counts = [_count(entry, self.group, self.codes) for entry in self.entries]
        self.starts = [0]
        for n in counts:
            self.starts.append(self.starts[-1] + n)
        if self.starts[-1] == 0:
            raise ValueError(f"the store holds no rows of {self.hooks} at modalities={modalities!r} "
                             f"(rows by modality: {store.rows_by_modality(self.hooks[0])})")
        self.max_open = max_open_shards
        # open files: index -> (safe_open handle, its rows of the chosen modalities, its metadata columns)
        self._open: OrderedDict[int, tuple[Any, Tensor | None, dict[str, Tensor]]] = OrderedDict()
        self._clip_ids = store.clip_ids

    def __getstate__(self) -> dict[str, Any]:
        """Without the open files (DataLoader workers open their own)."""
        return {**self.__dict__, "_open": OrderedDict()}

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def opened_files(self) -> list[str]:
        """The files open now (what laziness tests read)."""
        return [self.entries[k]["file"] for k in self._open]

    def _file(self, k: int) -> tuple[Any, Tensor | None, dict[str, Tensor]]:
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        handle = safe_open(str(self.store.path / self.entries[k]["file"]), framework="pt")
        meta = {field: handle.get_tensor(meta_key(self.group, field)) for field in META_FIELDS}  # 29 bytes a row
        local = None
        entry = self.entries[k]
        if self.codes is not None and _count(entry, self.group, None) != _count(entry, self.group, self.codes):
            local = torch.nonzero(torch.isin(meta["modality"], torch.tensor(self.codes, dtype=torch.int8))).flatten()
        self._open[k] = (handle, local, meta)
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)  # safe_open handles close when dropped
        return self._open[k]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, int) and not (isinstance(index, Tensor) and index.ndim == 0):
            raise TypeError(f"a StoreDataset is indexed by one int row, got {index!r}")
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {index} is out of range: this dataset has {len(self)} rows")
        k = bisect.bisect_right(self.starts, i) - 1
        handle, local, columns = self._file(k)
        j = i - self.starts[k]
        j = int(local[j]) if local is not None else j
        row: dict[str, Any] = {hook: handle.get_slice(hook)[j : j + 1][0] for hook in self.hooks}
        meta = {field: column[j].item() for field, column in columns.items()}
        row.update(meta)
        row["clip_id"] = self._clip_ids[meta["clip"]]
        row["modality"] = KINDS[meta["modality"]]
        return row


# ---------------------------------------------------------------------------------------------
# SAELens's cached activations


@dataclass
class SAELensExport:
    """What :func:`export_sae_lens` wrote: the dataset folder, its column(s), ``context_size``
    (SAELens's ``context_size`` must equal it), the rows written and the rows left over (fewer
    than one sequence at the end), and the settings to train from it.

    Example:
        >>> SAELensExport("out", ["blocks.0.hook_resid_post"], 2, 4, 8, 1, 64).config_kwargs()["context_size"]
        2
    """

    path: str
    hooks: list[str]
    context_size: int
    sequences: int
    rows: int
    rows_dropped: int
    d_in: int

    def config_kwargs(self, hook: str | None = None) -> dict[str, Any]:
        """The keyword arguments of SAELens's ``LanguageModelSAERunnerConfig`` that read this export."""
        hook = hook or self.hooks[0]
        return {"hook_name": hook, "use_cached_activations": True, "cached_activations_path": self.path,
                "context_size": self.context_size, "dtype": "float32"}


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as error:  # pragma: no cover - pyarrow is in the study extra
        raise ImportError("exporting for SAELens needs pyarrow: pip install 'hooked-avllm[study]' "
                          "(or pip install pyarrow)") from error
    return pyarrow


def _array2d_type(pa: Any, context_size: int, d: int) -> Any:
    """An Arrow extension type named and serialised as ``datasets``' ``Array2D(shape, "float32")``,
    so ``datasets.load_from_disk`` reads the column as that feature (``datasets`` is not imported)."""

    class Array2DForDatasets(pa.ExtensionType):
        def __init__(self) -> None:
            super().__init__(pa.list_(pa.list_(pa.float32())), DATASETS_ARRAY2D)

        def __arrow_ext_serialize__(self) -> bytes:
            return json.dumps(((context_size, d), "float32")).encode()

        @classmethod
        def __arrow_ext_deserialize__(cls, storage_type: Any, serialized: bytes) -> Any:  # pragma: no cover
            raise TypeError("written by hooked_avllm for datasets; read it with datasets.load_from_disk")

    return Array2DForDatasets()


def _sequence_column(pa: Any, kind: Any, rows: Float[Tensor, "sequences context d"]) -> Any:
    """``[sequences, context, d]`` float32 as the extension array of ``kind`` (lists of lists)."""
    n, context, d = rows.shape
    values = pa.array(rows.reshape(-1).numpy(), type=pa.float32())
    inner = pa.ListArray.from_arrays(pa.array(range(0, n * context * d + 1, d), type=pa.int32()), values)
    outer = pa.ListArray.from_arrays(pa.array(range(0, n * context + 1, context), type=pa.int32()), inner)
    return pa.ExtensionArray.from_storage(kind, outer)


def export_sae_lens(
    store: ActivationStore | str | Path,
    out: str | Path,
    hooks: str | Sequence[str],
    context_size: int = 128,
    modalities: str | Sequence[str] | None = None,
    max_file_mb: float = 500.0,
    overwrite: bool = False,
) -> SAELensExport:
    """Write rows of a store as SAELens's cached activations: a Hugging Face ``datasets`` dataset
    saved to disk (``Dataset.save_to_disk``'s layout: Arrow stream files, ``dataset_info.json``,
    ``state.json``) with one column per hook, named by the hook, of feature
    ``Array2D(shape=(context_size, d), dtype="float32")``: each dataset row is ``context_size``
    consecutive token rows of the store (clip order), which is what SAELens's
    ``ActivationsStore.load_cached_activation_dataset`` reads (``use_cached_activations=True,
    cached_activations_path=out``, ``context_size=context_size``, ``d_in=d``). Written with pyarrow
    alone; ``datasets.load_from_disk(out)`` reads it.

    Rows are stored as float32 (a bf16 store converts exactly). The last ``rows % context_size``
    rows do not fill a sequence and are left out (the result says how many). No ``token_ids``
    column is written: the token id of every audio row is the audio placeholder, which SAELens's
    ``exclude_special_tokens`` would drop. Tokens keep the store's order (clip by clip); SAELens
    mixes them in its buffer.

    Args:
        store: the store (or its folder).
        out: a new folder (``overwrite=True`` replaces a dataset there).
        hooks: one hook, or several of one group (one column each).
        context_size: token rows per dataset row.
        modalities: only rows of these modalities (default: every stored row).
        max_file_mb: the size at which a new Arrow file is started.

    Example:
        >>> export = store.export_sae_lens("acts_sae", "blocks.3.hook_resid_post", context_size=128)  # doctest: +SKIP
        >>> cfg = LanguageModelSAERunnerConfig(**export.config_kwargs(), sae=StandardTrainingSAEConfig(  # doctest: +SKIP
        ...     d_in=export.d_in, d_sae=16 * export.d_in), ...)
    """
    pa = _pyarrow()
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    group, names = store._group(hooks)
    if isinstance(context_size, bool) or not isinstance(context_size, int) or context_size < 1:
        raise ValueError(f"context_size must be an int >= 1 (token rows per SAELens sequence), got {context_size!r}")
    total = sum(store.n_rows(name, modalities) for name in names[:1])
    if total < context_size:
        raise ValueError(f"the store holds {total} rows of {names[0]} at modalities={modalities!r}, fewer than one sequence "
                         f"of context_size={context_size}; pass a smaller context_size")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass a new folder or overwrite=True")
        for stale in out.glob("data-*.arrow"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    widths = {name: store.d(name) for name in names}
    kinds = {name: _array2d_type(pa, context_size, widths[name]) for name in names}
    features = {name: {"shape": [context_size, widths[name]], "dtype": "float32", "_type": "Array2D"} for name in names}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    schema = pa.schema([pa.field(name, kinds[name]) for name in names], metadata=metadata)
    bytes_per_sequence = context_size * sum(widths.values()) * 4
    per_file = max(1, int(max_file_mb * 2**20 // bytes_per_sequence))
    files: list[Path] = []
    writer, in_file, digest = None, 0, hashlib.sha256()
    carry: dict[str, Tensor] = {name: torch.empty(0, widths[name]) for name in names}
    sequences = 0
    try:
        for part in store.iter_shards(names, modalities):
            block = {name: torch.cat([carry[name], part[name].float()]) for name in names}
            n = block[names[0]].shape[0] // context_size
            carry = {name: t[n * context_size :] for name, t in block.items()}
            at = 0
            while at < n:
                if writer is None or in_file == per_file:
                    if writer is not None:
                        writer.close()
                    files.append(out / f"data-{len(files):05d}.arrow")
                    writer, in_file = pa.ipc.new_stream(str(files[-1]), schema), 0
                take = min(n - at, per_file - in_file)
                chunk = {name: t[at * context_size : (at + take) * context_size].reshape(take, context_size, -1)
                         for name, t in block.items()}
                for name in names:
                    digest.update(chunk[name].numpy().tobytes())
                writer.write_batch(pa.record_batch([_sequence_column(pa, kinds[name], chunk[name]) for name in names],
                                                   schema=schema))
                at, in_file, sequences = at + take, in_file + take, sequences + take
    finally:
        if writer is not None:
            writer.close()
    named = []
    for k, path in enumerate(files):  # datasets names its files data-0000k-of-0000n.arrow
        final = out / f"data-{k:05d}-of-{len(files):05d}.arrow"
        path.replace(final)
        named.append({"filename": final.name})
    info = {"citation": "", "description": f"hooked_avllm activation store {store.path} ({group} rows)",
            "features": features, "homepage": "", "license": ""}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2))
    state = {"_data_files": named, "_fingerprint": digest.hexdigest()[:16], "_format_columns": None,
             "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
    (out / "state.json").write_text(json.dumps(state, indent=2))
    rows = sequences * context_size
    return SAELensExport(str(out), names, context_size, sequences, rows, total - rows, widths[names[0]])
