"""BEATs checkpoints -> :class:`hooked_avllm.towers.beats.BEATsTower` parameters.

Two on-disk forms:

* the official ``.pt`` (microsoft/unilm): a ``torch.load`` dict ``{"cfg": {...}, "model":
  state_dict}``, fine-tuned checkpoints adding ``"label_dict"`` and an AudioSet head
  ``predictor.{weight,bias}``;
* VideoLLaMA2's ``audio_tower.bin``: a plain state dict whose keys start ``model.audio_tower.``,
  with no config (VideoLLaMA2 then builds BEATs from its code defaults, which are
  :class:`BEATsConfig`'s).

Names inside BEATs (``encoder.layers.N.self_attn.q_proj.weight``, ...) map to ours as follows;
``q_proj``/``k_proj``/``v_proj`` fill row blocks of the fused ``attn.qkv``. Skipped on purpose
(``[]``): ``predictor.*`` (the classifier head, unused by an encoder) and
``encoder.layers.N.self_attn.relative_attention_bias.weight`` for N >= 1 (one shared module that a
state dict repeats under every layer; layer 0's copy fills ``rel_pos.embedding.weight``, and
:func:`load_official_beats` checks the repeats are equal).

Example:
    >>> from hooked_avllm.towers.beats import BEATsConfig
    >>> beats_targets("encoder.layers.0.self_attn.k_proj.weight", BEATsConfig(), prefix="audio.")
    [Target(param='audio.blocks.0.attn.qkv.weight', rows=(768, 1536), shape=None, index=None)]
"""

from __future__ import annotations

import os
import pickle
import re

import torch
from torch import Tensor

from hooked_avllm.towers.beats import BEATsConfig, BEATsTower
from weights_conversion.targets import Target

VIDEOLLAMA2_PREFIX = "model.audio_tower."

_LAYER_NORMS = {"self_attn_layer_norm": "ln1", "final_layer_norm": "ln2"}
_NORM_LEAVES = {"weight": "w", "bias": "b"}


def beats_targets(name: str, cfg: BEATsConfig, prefix: str = "") -> list[Target] | None:
    """Where BEATs tensor ``name`` (relative to the BEATs root) goes under ``prefix``; ``[]`` for a
    tensor skipped on purpose (see the module docstring), ``None`` for a name that is not BEATs'.

    Example:
        >>> beats_targets("predictor.weight", BEATsConfig()), beats_targets("lm_head.weight", BEATsConfig())
        ([], None)
    """
    if name in ("predictor.weight", "predictor.bias"):
        return []  # AudioSet classifier of fine-tuned checkpoints
    top = {
        "patch_embedding.weight": "patch_embed.weight",
        "layer_norm.weight": "ln_patch.w",
        "layer_norm.bias": "ln_patch.b",
        "encoder.pos_conv.0.weight_g": "pos_conv.weight_g",
        "encoder.pos_conv.0.weight_v": "pos_conv.weight_v",
        "encoder.pos_conv.0.bias": "pos_conv.bias",
        "encoder.layer_norm.weight": "ln_encoder.w",
        "encoder.layer_norm.bias": "ln_encoder.b",
    }
    if cfg.conv_bias:
        top["patch_embedding.bias"] = "patch_embed.bias"
    if cfg.embed_dim != cfg.d_model:  # otherwise the reference has no projection either
        top["post_extract_proj.weight"] = "patch_proj.weight"
        top["post_extract_proj.bias"] = "patch_proj.bias"
    if name in top:
        return [Target(prefix + top[name])]

    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", name)
    if not m or int(m.group(1)) >= cfg.n_layers:
        return None
    layer, leaf = int(m.group(1)), m.group(2)
    block = f"{prefix}blocks.{layer}"
    d = cfg.d_model
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", leaf)
    if m:
        start = "qkv".index(m.group(1)) * d
        return [Target(f"{block}.attn.qkv.{m.group(2)}", rows=(start, start + d))]
    m = re.fullmatch(r"self_attn\.out_proj\.(weight|bias)", leaf)
    if m:
        return [Target(f"{block}.attn.out.{m.group(1)}")]
    m = re.fullmatch(r"(fc1|fc2)\.(weight|bias)", leaf)
    if m:
        return [Target(f"{block}.mlp.{m.group(1)}.{m.group(2)}")]
    m = re.fullmatch(r"(self_attn_layer_norm|final_layer_norm)\.(weight|bias)", leaf)
    if m:
        return [Target(f"{block}.{_LAYER_NORMS[m.group(1)]}.{_NORM_LEAVES[m.group(2)]}")]
    if leaf == "self_attn.relative_attention_bias.weight" and cfg.relative_position_embedding:
        return [Target(f"{prefix}rel_pos.embedding.weight")] if layer == 0 else []  # a repeat of layer 0's
    if cfg.relative_position_embedding and cfg.gru_rel_pos:
        m = re.fullmatch(r"self_attn\.grep_linear\.(weight|bias)", leaf)
        if m:
            return [Target(f"{block}.attn.gate_proj.{m.group(1)}")]
        if leaf == "self_attn.grep_a":  # [1, head, 1, 1] on disk
            return [Target(f"{block}.attn.gate_scale", shape=(cfg.n_heads,))]
    return None


def read_official_beats(
    path: str | os.PathLike, prefix: str = VIDEOLLAMA2_PREFIX, cfg: BEATsConfig | None = None
) -> tuple[BEATsConfig, dict[str, Tensor]]:
    """Read a BEATs checkpoint: the official ``{"cfg", "model"}`` dict, or a plain state dict.

    A plain state dict (VideoLLaMA2's ``audio_tower.bin``) keeps only the keys under ``prefix``,
    stripped of it (pass ``prefix=""`` for bare BEATs names); other keys are ignored, as
    VideoLLaMA2's loader ignores them. Without a stored config the tower takes ``cfg`` if given,
    else :class:`BEATsConfig`'s defaults (VideoLLaMA2's). A stored config wins over ``cfg``. Only
    ``torch.load(weights_only=True)`` is used: a file that needs arbitrary unpickling is refused.

    Returns:
        the config and the state dict in BEATs names.

    Example:
        >>> cfg, state = read_official_beats("BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")  # doctest: +SKIP
        >>> cfg.n_layers, state["patch_embedding.weight"].shape  # doctest: +SKIP
        (12, torch.Size([512, 1, 16, 16]))
    """
    cfg, state, _ = _read(os.fspath(path), prefix, cfg)
    return cfg, state


def _read(path: str, prefix: str, cfg: BEATsConfig | None) -> tuple[BEATsConfig, dict[str, Tensor], bool]:
    """:func:`read_official_beats`, also saying whether the file stored its config."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({type(err).__name__}: {err}); a BEATs "
            "checkpoint is a dict of tensors and plain config values. Re-save it as {'cfg': dict, 'model': "
            "state_dict} from a trusted environment"
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"{path} holds a {type(ckpt).__name__}, not a dict; expected the official BEATs checkpoint "
            "{'cfg': dict, 'model': state_dict} or a plain state dict (VideoLLaMA2's audio_tower.bin)"
        )
    stored = False
    if "model" in ckpt and not isinstance(ckpt["model"], Tensor):
        state = ckpt["model"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: 'model' must be a state dict; got {type(state).__name__}")
        if ckpt.get("cfg") is not None:
            cfg, stored = BEATsConfig.from_official(ckpt["cfg"]), True
    else:  # a plain state dict
        state = {key[len(prefix) :]: value for key, value in ckpt.items() if isinstance(key, str) and key.startswith(prefix)}
        if not state:
            shown = ", ".join(sorted(map(str, ckpt))[:5])
            raise ValueError(
                f"{path} is neither an official BEATs checkpoint (no 'cfg'/'model') nor a state dict with keys under "
                f"prefix={prefix!r} (first keys: {shown}); pass the prefix its BEATs keys have (prefix='' for bare names)"
            )
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: state dict entries that are not tensors: {not_tensors[:5]}")
    return (cfg if cfg is not None else BEATsConfig()), state, stored


def load_official_beats(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    prefix: str = VIDEOLLAMA2_PREFIX,
    cfg: BEATsConfig | None = None,
) -> BEATsTower:
    """Build a :class:`BEATsTower` from a BEATs checkpoint (see :func:`read_official_beats`) and fill
    every parameter; unknown tensors, unfilled parameters, shape mismatches and unequal repeats
    of the shared relative position bias raise ``ValueError``.

    Example:
        >>> tower = load_official_beats("BEATs_iter3_plus_AS2M.pt", dtype=torch.bfloat16, device="cuda")  # doctest: +SKIP
    """
    path = os.fspath(path)
    cfg, state, stored = _read(path, prefix, cfg)
    tower = BEATsTower(cfg)
    params = dict(tower.named_parameters())
    written = {name: torch.zeros(p.shape[0] if p.ndim else 1, dtype=torch.bool) for name, p in params.items()}
    unexpected = []
    for key, tensor in state.items():
        targets = beats_targets(key, cfg)
        if targets is None:
            unexpected.append(key)
        for target in targets or ():
            param = params[target.param]
            start, stop = target.rows or (0, param.shape[0])
            destination = param.data[start:stop]
            source = tensor
            if target.shape is not None and tensor.numel() == destination.numel():
                source = tensor.reshape(target.shape)
            if tuple(source.shape) != tuple(destination.shape):
                hint = "" if stored else "; no config is stored in the file, so pass cfg=BEATsConfig(...) with its shape"
                raise ValueError(
                    f"{path}: tensor {key} has shape {tuple(tensor.shape)} but the config implies "
                    f"{tuple(destination.shape)} (for {target.param}){hint}"
                )
            destination.copy_(source.to(param.dtype))
            written[target.param][start:stop] = True
    if unexpected:
        shown = ", ".join(unexpected[:10]) + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else "")
        raise ValueError(f"{path}: unexpected tensors {shown}: they have no place in BEATs with this config")
    missing = [name for name, rows in written.items() if not bool(rows.all())]
    if missing:
        raise ValueError(f"{path}: missing tensors: no checkpoint tensor filled {missing[:10]}")
    shared = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    for key, tensor in state.items():
        if key.endswith(".self_attn.relative_attention_bias.weight") and key != shared and not torch.equal(tensor, state[shared]):
            raise ValueError(
                f"{path}: {key} differs from {shared}; BEATs shares one relative position bias across layers "
                "(the official loader would keep the last copy), so the checkpoint is inconsistent"
            )
    return tower.to(device=device, dtype=dtype)
