"""From a hub id or a local folder to a HookedAVLLM: resolve, read config, pick the converter,
stream the safetensors shards tensor by tensor into the parameters, check nothing is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.registry import architecture_for
from hooked_avllm.device_map import dispatch, materialize, plan_device_map
from hooked_avllm.inputs.tokenizer import load_tokenizer
from weights_conversion.targets import Target

CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a hub id fetched (or found in the offline cache) by
    ``huggingface_hub.snapshot_download`` (``HF_HUB_OFFLINE=1`` is honoured)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the checkpoint folder that holds config.json")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=CHECKPOINT_PATTERNS))
    except Exception as err:  # network, auth, not found, or not in the offline cache
        raise ValueError(
            f"could not find {name_or_path!r} as a local folder or a hub checkpoint ({type(err).__name__}: {err}). "
            "Pass a folder with config.json and *.safetensors, or download it first with `huggingface-cli download`"
        ) from err


def read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValueError(f"{folder} has no config.json; is it a Hugging Face checkpoint folder?")
    return json.loads(config_file.read_text())


def pick_architecture(config_json: dict) -> Architecture:
    """The family of a ``config.json`` (by its ``model_type``), from the architecture registry."""
    return architecture_for(config_json.get("model_type"))


def pick_converter(config_json: dict):
    """The weight converter of a ``config.json``'s family (``weights_conversion/<family>.py``)."""
    return pick_architecture(config_json).converter


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise ValueError(f"shards listed in {index.name} are missing from {folder}: {missing}")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise ValueError(
                f"{folder} holds only pickle checkpoints (*.bin/*.pt); we load safetensors only, since unpickling "
                "can run code. Convert them with transformers' `save_pretrained(..., safe_serialization=True)`"
            )
        raise ValueError(f"{folder} has no *.safetensors weights")
    return files


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

    def fill(self, source: str, tensor: torch.Tensor, target: Target) -> None:
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
        if tuple(tensor.shape) != tuple(destination.shape):
            raise ValueError(
                f"tensor {source} has shape {tuple(tensor.shape)} but the config implies {tuple(destination.shape)} "
                f"(for {name}); the checkpoint does not match its config.json"
            )
        destination.copy_(tensor.to(dtype=param.dtype))
        written[start:stop] = True

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
    family = pick_architecture(config_json)
    converter = family.converter
    cfg = family.config_from_checkpoint(config_json, folder)
    files = safetensors_files(folder)

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
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as shard:
                for key in shard.keys():
                    targets = converter.tensor_targets(key, cfg)
                    if targets is None:
                        unexpected.append(key)
                        continue
                    if not targets:
                        continue
                    tensor = shard.get_tensor(key)
                    for target in targets:
                        filler.fill(key, tensor, target)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(
                f"could not read {file}: {err}. The file is truncated or corrupt; download it again"
            ) from err
    for name in getattr(converter, "extra_weight_files", lambda _: [])(config_json):
        for key, tensor in read_pickled_state_dict(folder / name).items():
            targets = converter.tensor_targets(key, cfg)
            if targets is None:
                unexpected.append(f"{name}:{key}")
            for target in targets or ():
                filler.fill(f"{name}:{key}", tensor, target)
    finish(filler, converter, cfg, unexpected, folder)

    if plan is not None:
        model = dispatch(model, plan, offload_dir=offload_dir)
    model.eval()  # as Hugging Face's from_pretrained: analysis (TransformerLens's patching) needs eval mode
    model.checkpoint_folder = folder
    if load_tokenizer:
        model.tokenizer = family.load_tokenizer(folder)
    return model


def read_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.bin`` state dict a family keeps beside its shards (VideoLLaMA2's ``audio_tower.bin``),
    read with ``torch.load(weights_only=True)``: tensors only, no code runs; ``{}`` if absent."""
    if not path.exists():
        return {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error names what the file tried to load
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({type(err).__name__}: {err}); it must be a "
            "plain state dict of tensors. Re-save it from a trusted environment (or as safetensors)"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors ({type(state).__name__}); re-save it as one")
    return state


def load_tokenizer_from(folder: Path):
    """The checkpoint's tokenizer, if the folder has one (remote code is never run)."""
    return load_tokenizer(folder)
