"""From a hub id or a local folder to a HookedAVLLM: resolve, read config, pick the converter,
stream the safetensors shards tensor by tensor into the parameters, check nothing is missing.

Every input is checked here, where it enters, before any weight is read: the folder (or hub id),
``config.json`` (valid JSON, an object, every key the family's parser needs, numbers where numbers
belong: :func:`parse_config`), the index (``weight_map``), the shards (a tensor defined in two
files, or two names filling one parameter, is refused rather than letting one silently win; a
shard the index does not list is not read, with a warning), ``dtype`` (a ``torch.dtype`` or a name
torch knows: :func:`resolve_dtype`) and ``device``. Weights come only from safetensors; a state
dict a family keeps beside them goes through ``torch.load(weights_only=True)``.

Example:
    >>> resolve_dtype("bfloat16"), resolve_dtype("torch.float16")
    (torch.bfloat16, torch.float16)
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.registry import architecture_for
from hooked_avllm.config import AVLLMConfig, config_problems
from hooked_avllm.device_map import check_device, dispatch, materialize, plan_device_map
from hooked_avllm.inputs.tokenizer import load_tokenizer
from weights_conversion.targets import Target

CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
INDEX = "model.safetensors.index.json"
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "float", "half", "double", "auto")


class CheckpointKeyError(KeyError, ValueError):
    """A key a checkpoint file must have is missing (a ``KeyError`` and a ``ValueError``, whose
    message prints as written, not quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a hub id fetched (or found in the offline cache) by
    ``huggingface_hub.snapshot_download`` (``HF_HUB_OFFLINE=1`` is honoured)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path={name_or_path!r} is a {type(name_or_path).__name__}; pass a checkpoint folder or a hub id "
            "('owner/name'; hooked_avllm.architectures.supported() lists known ones)"
        )
    if not str(name_or_path).strip():
        raise ValueError("name_or_path is empty; pass a checkpoint folder or a hub id ('owner/name')")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the checkpoint folder that holds config.json")
    from huggingface_hub import snapshot_download

    # HF_HUB_OFFLINE read now, not when huggingface_hub was first imported (a notebook may set it later)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=CHECKPOINT_PATTERNS, local_files_only=offline))
    except Exception as err:  # network, auth, not found, or not in the offline cache
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:400]  # one line: hub errors span several
        raise ValueError(
            f"could not find {name_or_path!r} as a local folder or a hub checkpoint ({reason}). "
            f"Pass a folder with config.json and *.safetensors, or download it first with `hf download {name_or_path}` "
            "(huggingface-hub's command line; `pip install -U huggingface_hub` provides it)"
        ) from err


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; invalid JSON raises a ``ValueError`` naming the file, line and column."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); fix the file or download "
            "it again"
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file ({err.reason}); it should be JSON: download it again") from None


def read_config(folder: Path) -> dict:
    """``folder/config.json`` as a dict with a ``model_type`` (errors name the file and what is wrong)."""
    config_file = folder / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{folder} has no config.json; is it a Hugging Face checkpoint folder?")
    config_json = read_json(config_file)
    if not isinstance(config_json, dict):
        raise TypeError(f"{config_file} holds a JSON {type(config_json).__name__}, not an object of settings; "
                        "it is not a model's config.json")
    if "model_type" not in config_json:
        raise CheckpointKeyError(
            f"{config_file} has no 'model_type', which names the architecture; add it "
            "(hooked_avllm.architectures.supported() lists the model types)"
        )
    return config_json


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# keys that hold a count, a size or an id in every family's config.json (a whole number)
WHOLE_NUMBER_KEY = re.compile(r"(^|_)(num|n|d|max)_|_(size|layers|heads|dim|id|index|step|frames|num|nums)$|^depth$")
FLAG_KEY = re.compile(r"^(use|is|do|tie|add|return|output|has|enable|init)_")  # switches (use_image_id), not ids


def json_value_problems(value: Any, path: str = "") -> list[tuple[str, Any, str]]:
    """``(key path, value, what is wrong)`` for values of a ``config.json`` no family reads as meant:
    a number in quotes, and a fraction or a boolean where a count, size or id belongs. Keys naming a
    version or starting with ``_`` are free text.

    Example:
        >>> json_value_problems({"text_config": {"hidden_size": "64", "hidden_act": "silu", "num_hidden_layers": 2.5}})
        [('text_config.hidden_size', '64', 'a number in quotes'), ('text_config.num_hidden_layers', 2.5, 'not a whole number')]
    """
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in json_value_problems(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in json_value_problems(v, f"{path}[{i}]")]
    key = re.sub(r"\[\d+\]$", "", path).rpartition(".")[2]
    if key.startswith("_") or key.endswith("version"):
        return []
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return [(path, value, "a number in quotes")]
    if WHOLE_NUMBER_KEY.search(key) and not FLAG_KEY.match(key):
        if isinstance(value, (bool, float)):
            return [(path, value, "not a whole number")]
        if isinstance(value, str) and not key.endswith(("_id", "_index")):  # ids may be names in odd configs
            return [(path, value, "a word")]
    return []


def json_paths_of(value: Any, tree: Any, path: str = "") -> list[str]:
    """The key paths in a JSON ``tree`` whose value is ``value`` (same type).

    Example:
        >>> json_paths_of(3, {"text_config": {"num_key_value_heads": 3, "rms_norm_eps": 3.0}, "depth": 3})
        ['text_config.num_key_value_heads', 'depth']
    """
    if isinstance(tree, dict):
        return [hit for k, v in tree.items() for hit in json_paths_of(value, v, f"{path}.{k}" if path else str(k))]
    if isinstance(tree, list) and not (isinstance(value, list) and tree == value):
        return [hit for i, v in enumerate(tree) for hit in json_paths_of(value, v, f"{path}[{i}]")]
    return [path] if type(tree) is type(value) and tree == value else []


def parse_config(family: Architecture, config_json: dict, folder: Path) -> AVLLMConfig:
    """The family's parse of ``config.json``, with every failure naming the file and the key: a
    missing key, a number in quotes or of the wrong kind, a value the family refuses."""
    config_file = folder / "config.json"
    for key, value, wrong in json_value_problems(config_json):
        if wrong == "a number in quotes":
            raise TypeError(f"{config_file}: {key} is the string {value!r}, a number in quotes; write it without quotes "
                            f"({value.strip()})")
        raise TypeError(f"{config_file}: {key} is {value!r} ({wrong}), but it counts or identifies something; "
                        "write a whole number")
    try:
        cfg = family.config_from_checkpoint(config_json, folder)
    except KeyError as err:
        key = err.args[0] if err.args else "?"
        example = f" (compare the released {family.hub_ids[0]}'s config.json)" if family.hub_ids else ""
        raise CheckpointKeyError(
            f"{config_file} has no key {key!r}, which the {family.name} config needs{example}; add it, or download the "
            "config.json again"
        ) from None
    except (TypeError, ValueError, NotImplementedError) as err:
        broken = _broken_json(folder)
        if broken:
            raise ValueError(f"{broken[0]} is not valid JSON ({broken[1]}); the {family.name} config reads it: fix it") from None
        if isinstance(err, TypeError):
            raise TypeError(f"{config_file}: a value has the wrong type for the {family.name} config ({err}); "
                            "compare it with the released config.json") from err
        kind = type(err) if type(err) in (ValueError, NotImplementedError) else ValueError  # subclasses may take other arguments
        raise kind(f"{config_file}: {err}") from err
    problems = config_problems(cfg)
    if problems:
        field, value, wanted = problems[0]
        key = _source_key(family, config_json, folder, field, value)
        where = f"{key} is {value!r}" if key else f"{field} would be {value!r}"
        error = ValueError if "positive" in wanted or "divisor" in wanted else TypeError
        raise error(f"{config_file}: {where} ({type(value).__name__}) but {field} must be {wanted}; "
                    "correct that key of config.json")
    return cfg


def _source_key(family: Architecture, config_json: dict, folder: Path, field: str, value: Any) -> str | None:
    """The key path of ``config.json`` that gives config ``field`` (``"AVLLMConfig.text.n_layers"``)
    its ``value``: each key holding that value is set to a marker and the config parsed again (no
    weights are involved), until the field shows the marker."""
    candidates = [path for path in json_paths_of(value, config_json) if "[" not in path]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    marker = 987654321 if isinstance(value, int) else "marker-987654321"
    for path in candidates:
        trial = copy.deepcopy(config_json)
        *parents, leaf = path.split(".")
        section = trial
        for name in parents:
            section = section[name]
        section[leaf] = marker
        try:
            parsed: Any = family.config_from_checkpoint(trial, folder)
        except Exception:  # noqa: BLE001, S112 - a marker the parser refuses is simply not the source
            continue
        for name in field.split(".")[1:]:
            parsed = getattr(parsed, name, None)
        if parsed == marker:
            return path
    return None


def _broken_json(folder: Path) -> tuple[Path, str] | None:
    """The first ``*.json`` of ``folder`` that does not parse (what a family's parser stumbled on)."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return path, str(err)
    return None


def resolve_dtype(dtype: Any, config_json: dict | None = None) -> torch.dtype:
    """A floating ``torch.dtype`` from a dtype or its name (``"bfloat16"``, ``"torch.float16"``;
    ``"auto"``: the checkpoint's ``torch_dtype``, else float32).

    Example:
        >>> resolve_dtype(torch.float16), resolve_dtype("auto", {"torch_dtype": "bfloat16"})
        (torch.float16, torch.bfloat16)
    """
    original = dtype
    if isinstance(dtype, str):
        name = dtype.strip().removeprefix("torch.")
        if name == "auto":
            saved = (config_json or {}).get("torch_dtype") or (config_json or {}).get("dtype") or "float32"
            try:
                return resolve_dtype(saved) if saved != "auto" else torch.float32
            except (TypeError, ValueError):
                raise ValueError(f"dtype='auto' reads config.json's torch_dtype={saved!r}, which is not a floating dtype "
                                 "torch knows; pass dtype=torch.bfloat16 (or float16, float32) instead") from None
        dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise (ValueError if isinstance(original, str) else TypeError)(
            f"dtype={original!r} is not a dtype torch knows; pass torch.bfloat16 / torch.float16 / torch.float32 or "
            f"one of the names {list(DTYPE_NAMES)}"
        )
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={original!r} is not a floating-point dtype; the weights need one of torch.bfloat16, "
                         "torch.float16, torch.float32 (quantized loading is not supported)")
    return dtype


def pick_architecture(config_json: dict) -> Architecture:
    """The family of a ``config.json`` (by its ``model_type``), from the architecture registry."""
    return architecture_for(config_json.get("model_type"))


def pick_converter(config_json: dict):
    """The weight converter of a ``config.json``'s family (``weights_conversion/<family>.py``)."""
    return pick_architecture(config_json).converter


def safetensors_files(folder: Path, extra: list[str] = ()) -> list[Path]:
    """The shards to read: those ``model.safetensors.index.json`` lists (a ``*.safetensors`` file
    it does not list is not read, with a warning naming it), or every ``*.safetensors`` file;
    ``extra`` files (a family's separate state dicts) are read on their own, not as shards."""
    index = folder / INDEX
    if index.exists():
        names = sorted(set(index_weight_map(index).values()))
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise FileNotFoundError(f"shards listed in {index} are missing from {folder}: {missing}; download them")
        unlisted = sorted(p.name for p in folder.glob("*.safetensors") if p.name not in names and p.name not in extra)
        if unlisted:
            warnings.warn(
                f"{unlisted} in {folder} {'is' if len(unlisted) == 1 else 'are'} not listed in {INDEX} and not read; "
                "delete leftover files (or add their tensors to the index's weight_map)",
                UserWarning, stacklevel=4,
            )
        return [folder / n for n in names]
    files = sorted(p for p in folder.glob("*.safetensors") if p.name not in extra)
    if not files:
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise ValueError(
                f"{folder} holds only pickle checkpoints (*.bin/*.pt); we load safetensors only, since unpickling "
                "can run code. Convert them with transformers' `save_pretrained(..., safe_serialization=True)`"
            )
        raise FileNotFoundError(
            f"{folder} has no *.safetensors weights; download them too (`hf download <hub id> --include '*.safetensors'`)"
        )
    return files


def index_weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file) of a ``model.safetensors.index.json``."""
    content = read_json(index)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if weight_map is None:
        raise CheckpointKeyError(
            f"{index} has no 'weight_map' (tensor name -> shard file); download the index again, or delete it to read "
            "every *.safetensors file of the folder"
        )
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise TypeError(f"{index}: 'weight_map' must map tensor names to shard file names; download the index again")
    return weight_map


class WeightFiller:
    """Copies checkpoint tensors into parameter slices and remembers which rows were written."""

    def __init__(self, model: torch.nn.Module):
        self.params = dict(model.named_parameters())  # tied weights appear once, under their first name
        self.aliases = {name: name for name in self.params}
        for name, param in model.named_parameters(remove_duplicate=False):
            first = next(n for n, p in self.params.items() if p is param)
            self.aliases[name] = first
        # rows written per parameter: over dim 0, or over (dim 0, dim 1) of stacked [expert, ...] parameters
        self.written = {name: torch.zeros(tuple(p.shape[:2]) if p.ndim >= 3 else (p.shape[0] if p.ndim else 1), dtype=torch.bool)
                        for name, p in self.params.items()}
        self.sources: dict[str, list[tuple[Target, str]]] = {}  # who filled each parameter (named on a conflict)

    def fill(self, source: str, tensor: torch.Tensor, target: Target, file: str | None = None) -> None:
        """Copy ``tensor`` (checkpoint name ``source``, from ``file``) into ``target``; a slice that
        another tensor already filled raises, naming both (one would silently override the other)."""
        name = self.aliases.get(target.param)
        if name is None:
            raise ValueError(f"converter bug: {source} maps to {target.param}, which the model does not have")
        param = self.params[name]
        data, written = param.data, self.written[name]
        if target.index is not None:
            if param.ndim < 3 or not 0 <= target.index < param.shape[0]:
                raise ValueError(f"converter bug: {source} maps to slice {target.index} of {name} {tuple(param.shape)}")
            data, written = data[target.index], written[target.index]
        start, stop = target.rows if target.rows is not None else (0, data.shape[0] if data.ndim else 1)
        destination = data[start:stop] if data.ndim else data
        if target.shape is not None and tensor.numel() == destination.numel():
            tensor = tensor.reshape(target.shape)
        where = f" in {file}" if file else ""
        if tuple(tensor.shape) != tuple(destination.shape):
            raise ValueError(
                f"tensor {source} has shape {tuple(tensor.shape)} but the config implies {tuple(destination.shape)} "
                f"(for {name}){where}; the checkpoint does not match its config.json"
            )
        if bool(written[start:stop].any()):
            earlier = next((s for t, s in self.sources.get(name, []) if t.index == target.index), "another tensor")
            raise ValueError(
                f"{source}{where} and {earlier} both fill {name}: a tensor is defined twice and one would silently "
                "override the other; remove the stray file or tensor"
            )
        destination.copy_(tensor.to(dtype=param.dtype))
        written[start:stop] = True
        self.sources.setdefault(name, []).append((target, f"{source}{where}"))

    def zero(self, target: Target) -> None:
        name = self.aliases[target.param]
        start, stop = target.rows
        self.params[name].data[start:stop].zero_()
        self.written[name][start:stop] = True

    def unwritten(self) -> list[str]:
        return [name for name, rows in self.written.items() if not bool(rows.all())]


def fill_from_named_tensors(model, converter, named_tensors, source: str = "state dict") -> None:
    """Fill ``model`` from ``(name, tensor)`` pairs in Hugging Face naming (a checkpoint's or a
    live reference model's ``named_parameters()``), with the same checks as ``from_pretrained``."""
    cfg = model.cfg
    filler = WeightFiller(model)
    unexpected = []
    for key, tensor in named_tensors:
        targets = converter.tensor_targets(key, cfg)
        if targets is None:
            unexpected.append(key)
            continue
        for target in targets:
            filler.fill(key, tensor, target)
    finish(filler, converter, cfg, unexpected, source)


def finish(filler: "WeightFiller", converter, cfg, unexpected: list[str], source) -> None:
    if unexpected:
        shown = ", ".join(unexpected[:10]) + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else "")
        raise ValueError(
            f"unexpected tensors in {source}: {shown}. They have no place in a {cfg.architecture} model with this "
            "config.json; the checkpoint and config disagree (or this is another architecture)"
        )
    for target in converter.implicit_zeros(cfg):
        filler.zero(target)
    missing = filler.unwritten()
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ValueError(f"missing tensors in {source}: no checkpoint tensor filled {shown}")


def load_pretrained(cls, name_or_path, dtype=torch.float32, device="cpu", load_tokenizer=True,
                    device_map=None, max_memory=None, offload_dir=None):
    folder = resolve_checkpoint(name_or_path)
    config_json = read_config(folder)
    try:
        family = pick_architecture(config_json)
    except ValueError as err:
        raise ValueError(f"{folder / 'config.json'}: {err}") from None
    converter = family.converter
    cfg = parse_config(family, config_json, folder)
    dtype = resolve_dtype(dtype, config_json)
    if device_map is None:
        check_device(device, what="device")
    elif device is not None and str(device) != "cpu":
        raise ValueError(f"device={device!r} and device_map={device_map!r} both place the model; pass only one")
    extra_files = list(getattr(converter, "extra_weight_files", lambda _: [])(config_json))
    files = safetensors_files(folder, extra_files)

    with torch.device("meta"):
        model = cls(cfg)
    plan = None
    if device_map is not None:  # every tensor is written straight into its device's storage
        plan = plan_device_map(model, device_map, max_memory=max_memory, dtype=dtype)
        materialize(model, plan, dtype)
    else:
        model.to_empty(device=device)
        model.to(dtype)
    model.tie_weights()
    filler = WeightFiller(model)
    unexpected: list[str] = []
    defined_in: dict[str, str] = {}  # tensor name -> the file that defined it first
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as shard:
                for key in shard.keys():
                    _once(key, file.name, defined_in, folder)
                    targets = converter.tensor_targets(key, cfg)
                    if targets is None:
                        unexpected.append(key)
                        continue
                    if not targets:
                        continue
                    tensor = shard.get_tensor(key)
                    for target in targets:
                        filler.fill(key, tensor, target, file=file.name)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(
                f"could not read {file}: {err}. The file is truncated or corrupt; download it again"
            ) from err
    for name in extra_files:
        for key, tensor in read_extra_weights(folder / name).items():
            _once(key, name, defined_in, folder)
            targets = converter.tensor_targets(key, cfg)
            if targets is None:
                unexpected.append(f"{name}:{key}")
            for target in targets or ():
                filler.fill(key, tensor, target, file=name)
    finish(filler, converter, cfg, unexpected, folder)

    if plan is not None:
        model = dispatch(model, plan, offload_dir=offload_dir)
    model.eval()  # as Hugging Face's from_pretrained: analysis (TransformerLens's patching) needs eval mode
    model.checkpoint_folder = folder
    if load_tokenizer:
        model.tokenizer = family.load_tokenizer(folder)
    return model


def _once(key: str, file: str, defined_in: dict[str, str], folder: Path) -> None:
    """Refuse a tensor name that a second file defines again (which one would win is arbitrary)."""
    first = defined_in.setdefault(key, file)
    if first != file:
        raise ValueError(
            f"tensor {key} is defined in both {first} and {file} (in {folder}); one would silently override the other. "
            "A folder holds one checkpoint: delete the stray file (or the duplicate tensors)"
        )


def read_extra_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict a family keeps beside its shards: safetensors as such, anything else through
    :func:`read_pickled_state_dict`; ``{}`` if absent."""
    if path.suffix != ".safetensors" or not path.exists():
        return read_pickled_state_dict(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safe_open is no dict
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"could not read {path}: {err}. The file is truncated or corrupt; download it again") from err


def read_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.bin`` state dict a family keeps beside its shards (VideoLLaMA2's ``audio_tower.bin``),
    read with ``torch.load(weights_only=True)``: tensors only, no code runs; ``{}`` if absent."""
    if not path.exists():
        return {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error names what the file tried to load
        lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
        detail = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True), which reads tensors and runs no code: it must "
            "be a plain state dict of tensors. Re-save it from a trusted environment (or as safetensors). "
            f"torch: {type(err).__name__}: {detail[:300]}"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors ({type(state).__name__}); re-save it as one")
    return state


def load_tokenizer_from(folder: Path):
    """The checkpoint's tokenizer, if the folder has one (remote code is never run)."""
    return load_tokenizer(folder)
