"""Save a HookedAVLLM as a Hugging Face checkpoint folder (the inverse of ``weights_conversion``).

The tensor names are not mapped by a second hand-written table: :func:`hf_tensor_shapes` lists
the Hugging Face names and shapes an architecture has, and each name's place in our state dict
comes from the converter's own ``tensor_targets``, so loading and saving cannot drift apart.
:func:`save_pretrained` also reloads what it wrote through ``HookedAVLLM.from_pretrained`` and
checks every parameter comes back bit for bit.

Example:
    >>> model = HookedAVLLM.from_config(toy_config("omni"))                # doctest: +SKIP
    >>> save_pretrained(model, "out/omni")                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from hooked_avllm.architectures.registry import architecture_for
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.toy.data import FRAME_SIZE, preprocessor_config
from hooked_avllm.toy.tokenizer import (
    EOS_ID,
    PAD_ID,
    SPECIAL_IDS,
    VOCAB_SIZE,
    save_tokenizer,
    vocabulary,
)
from hooked_avllm.model import HookedAVLLM

HF_MODEL_TYPE = {"qwen2_5_omni_thinker": "qwen2_5_omni_thinker", "qwen2_5_vl": "qwen2_5_vl"}


# ------------------------------------------------------------------------------------ config.json

def hf_config(cfg: AVLLMConfig, dtype: str = "float32") -> dict:
    """The Hugging Face ``config.json`` of a Qwen2.5-Omni thinker or a Qwen2.5-VL (transformers 5.x layout)."""
    t, v = cfg.text, cfg.vision
    text = {
        "vocab_size": t.vocab_size,
        "hidden_size": t.d_model,
        "intermediate_size": t.d_mlp,
        "num_hidden_layers": t.n_layers,
        "num_attention_heads": t.n_heads,
        "num_key_value_heads": t.n_kv_heads,
        "head_dim": t.d_head,
        "hidden_act": t.act,
        "max_position_embeddings": t.max_position_embeddings,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta, "mrope_section": list(t.mrope_section)},
        "tie_word_embeddings": t.tie_word_embeddings,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    }
    vision = {
        "depth": v.depth,
        "hidden_size": v.d_model,
        "intermediate_size": v.d_mlp,
        "num_heads": v.n_heads,
        "out_hidden_size": v.out_dim,
        "patch_size": v.patch_size,
        "temporal_patch_size": v.temporal_patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "window_size": v.window_size,
        "fullatt_block_indexes": list(v.fullatt_block_indexes),
        "in_channels": v.in_channels,
        "hidden_act": v.act,
        "initializer_range": 0.02,
    }
    tokens = cfg.tokens
    if cfg.architecture == "qwen2_5_vl":
        text["model_type"] = "qwen2_5_vl_text"
        vision.update(model_type="qwen2_5_vl_vision", tokens_per_second=int(cfg.position_id_per_second))
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            "text_config": text,
            "vision_config": vision,
            "image_token_id": tokens.image,
            "video_token_id": tokens.video,
            "vision_start_token_id": tokens.vision_start,
            "vision_end_token_id": tokens.vision_end,
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID,
            "tie_word_embeddings": t.tie_word_embeddings,
            "dtype": dtype,
        }
    a = cfg.audio
    text["model_type"] = "qwen2_5_omni_text"
    vision["model_type"] = "qwen2_5_omni_vision_encoder"
    audio = {
        "model_type": "qwen2_5_omni_audio_encoder",
        "num_mel_bins": a.n_mels,
        "d_model": a.d_model,
        "encoder_layers": a.n_layers,
        "encoder_attention_heads": a.n_heads,
        "encoder_ffn_dim": a.d_mlp,
        "output_dim": a.out_dim,
        "n_window": a.n_window,
        "max_source_positions": a.max_source_positions,
        "activation_function": a.act,
        "scale_embedding": False,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "initializer_range": 0.02,
    }
    return {
        "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"],
        "model_type": "qwen2_5_omni_thinker",
        "text_config": text,
        "vision_config": vision,
        "audio_config": audio,
        "audio_token_index": tokens.audio,
        "image_token_index": tokens.image,
        "video_token_index": tokens.video,
        "audio_start_token_id": tokens.audio_start,
        "audio_end_token_id": tokens.audio_end,
        "vision_start_token_id": tokens.vision_start,
        "vision_end_token_id": tokens.vision_end,
        "user_token_id": vocabulary().index("user"),
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "position_id_per_seconds": int(cfg.position_id_per_second),
        "seconds_per_chunk": int(cfg.seconds_per_chunk),
        "tie_word_embeddings": t.tie_word_embeddings,
        "dtype": dtype,
    }


def generation_config() -> dict:
    return {"bos_token_id": PAD_ID, "pad_token_id": PAD_ID, "eos_token_id": [EOS_ID, PAD_ID], "do_sample": False}


def video_preprocessor_config() -> dict:
    """The per-frame pixel budget in the layout of transformers' ``Qwen2VLVideoProcessor``."""
    return {
        "video_processor_type": "Qwen2VLVideoProcessor",
        "size": {"shortest_edge": 28 * 28, "longest_edge": FRAME_SIZE * FRAME_SIZE},
        "min_pixels": 28 * 28,
        "max_pixels": FRAME_SIZE * FRAME_SIZE,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "fps": 2.0,
        "min_frames": 4,
        "max_frames": 768,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }


# ------------------------------------------------------------------------------------ tensors

def hf_tensor_shapes(cfg: AVLLMConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the Hugging Face checkpoint (names as transformers 5.x writes them on disk)."""
    t, v = cfg.text, cfg.vision
    q, kv = t.n_heads * t.d_head, t.n_kv_heads * t.d_head
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (t.vocab_size, t.d_model)}
    for i in range(t.n_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (q, t.d_model), p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, t.d_model), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, t.d_model), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (t.d_model, q),
            p + "mlp.gate_proj.weight": (t.d_mlp, t.d_model), p + "mlp.up_proj.weight": (t.d_mlp, t.d_model),
            p + "mlp.down_proj.weight": (t.d_model, t.d_mlp),
            p + "input_layernorm.weight": (t.d_model,), p + "post_attention_layernorm.weight": (t.d_model,),
        })
    shapes["model.norm.weight"] = (t.d_model,)
    if not t.tie_word_embeddings or cfg.architecture != "qwen2_5_vl":
        shapes["lm_head.weight"] = (t.vocab_size, t.d_model)

    d = v.d_model
    shapes["visual.patch_embed.proj.weight"] = (d, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    fused = cfg.architecture == "qwen2_5_vl"  # Qwen2.5-VL fuses q, k, v; the Omni thinker keeps them apart
    for i in range(v.depth):
        p = f"visual.blocks.{i}."
        shapes.update({p + "norm1.weight": (d,), p + "norm2.weight": (d,)})
        if fused:
            shapes.update({p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,)})
        else:
            for x in "qkv":
                shapes.update({p + f"attn.{x}.weight": (d, d), p + f"attn.{x}.bias": (d,)})
        shapes.update({
            p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
            p + "mlp.gate_proj.weight": (v.d_mlp, d), p + "mlp.gate_proj.bias": (v.d_mlp,),
            p + "mlp.up_proj.weight": (v.d_mlp, d), p + "mlp.up_proj.bias": (v.d_mlp,),
            p + "mlp.down_proj.weight": (d, v.d_mlp), p + "mlp.down_proj.bias": (d,),
        })
    merged = d * v.spatial_merge_size**2
    shapes.update({
        "visual.merger.ln_q.weight": (d,),
        "visual.merger.mlp.0.weight": (merged, merged), "visual.merger.mlp.0.bias": (merged,),
        "visual.merger.mlp.2.weight": (v.out_dim, merged), "visual.merger.mlp.2.bias": (v.out_dim,),
    })

    a = cfg.audio
    if a is not None:
        da = a.d_model
        shapes.update({
            "audio_tower.conv1.weight": (da, a.n_mels, 3), "audio_tower.conv1.bias": (da,),
            "audio_tower.conv2.weight": (da, da, 3), "audio_tower.conv2.bias": (da,),
        })
        for i in range(a.n_layers):
            p = f"audio_tower.layers.{i}."
            shapes.update({
                p + "self_attn.q_proj.weight": (da, da), p + "self_attn.q_proj.bias": (da,),
                p + "self_attn.k_proj.weight": (da, da),
                p + "self_attn.v_proj.weight": (da, da), p + "self_attn.v_proj.bias": (da,),
                p + "self_attn.out_proj.weight": (da, da), p + "self_attn.out_proj.bias": (da,),
                p + "self_attn_layer_norm.weight": (da,), p + "self_attn_layer_norm.bias": (da,),
                p + "fc1.weight": (a.d_mlp, da), p + "fc1.bias": (a.d_mlp,),
                p + "fc2.weight": (da, a.d_mlp), p + "fc2.bias": (da,),
                p + "final_layer_norm.weight": (da,), p + "final_layer_norm.bias": (da,),
            })
        shapes.update({
            "audio_tower.ln_post.weight": (da,), "audio_tower.ln_post.bias": (da,),
            "audio_tower.proj.weight": (a.out_dim, da), "audio_tower.proj.bias": (a.out_dim,),
            "audio_tower.audio_bos_eos_token.weight": (2, a.out_dim),  # in every checkpoint, unused by forward
        })
    return shapes


def hf_state_dict(model, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Our parameters under their Hugging Face names and shapes, placed by the converter's ``tensor_targets``."""
    cfg = model.cfg
    converter = architecture_for(cfg.architecture).converter
    params = dict(model.named_parameters(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    covered = {name: torch.zeros(p.shape[0], dtype=torch.bool) for name, p in params.items()}
    for target in converter.implicit_zeros(cfg):
        covered[target.param][target.rows[0] : target.rows[1]] = True
    for name, shape in hf_tensor_shapes(cfg).items():
        targets = converter.tensor_targets(name, cfg)
        if targets is None:
            raise ValueError(f"the {cfg.architecture} converter does not know {name}; hf_tensor_shapes is out of date")
        if not targets:  # a tensor the converter skips (audio_bos_eos_token): written as zeros
            out[name] = torch.zeros(shape, dtype=dtype)
            continue
        target = targets[0]
        param = params[target.param].detach()
        start, stop = target.rows if target.rows is not None else (0, param.shape[0])
        piece = param[start:stop]
        if piece.numel() != torch.Size(shape).numel():
            raise ValueError(f"{name}: shape {shape} does not fit {target.param}[{start}:{stop}] {tuple(piece.shape)}")
        out[name] = piece.reshape(shape).to(dtype).contiguous().clone()
        covered[target.param][start:stop] = True
    missing = [name for name, rows in covered.items() if not bool(rows.all())]
    if missing:
        raise ValueError(f"no Hugging Face tensor holds {missing[:5]}; hf_tensor_shapes is out of date")
    return out


def zero_implicit(model) -> None:
    """Zero the parameter slices the checkpoint leaves out (the audio key bias, which cannot
    change any output: it adds the same score to every key of a query)."""
    converter = architecture_for(model.cfg.architecture).converter
    params = dict(model.named_parameters())
    with torch.no_grad():
        for target in converter.implicit_zeros(model.cfg):
            params[target.param][target.rows[0] : target.rows[1]].zero_()


def save_pretrained(model, folder: str | Path, dtype: torch.dtype = torch.float32, card: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``generation_config.json``, the tokenizer and the
    preprocessor configs; reload the weights through our loader and check they round-trip."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    dtype_name = str(dtype).removeprefix("torch.")
    zero_implicit(model)
    tensors = hf_state_dict(model, dtype)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "model.safetensors").chmod(0o644)
    write_json(folder / "config.json", hf_config(cfg, dtype_name))
    write_json(folder / "generation_config.json", generation_config())
    audio = cfg.audio is not None
    write_json(folder / "preprocessor_config.json", preprocessor_config(audio))
    write_json(folder / "video_preprocessor_config.json", video_preprocessor_config())
    save_tokenizer(folder, "omni" if audio else "vl")
    if card is not None:
        (folder / "README.md").write_text(card)

    reloaded = HookedAVLLM.from_pretrained(folder, dtype=dtype, load_tokenizer=False)
    ours = dict(model.named_parameters())
    for name, param in reloaded.named_parameters():
        if not torch.equal(param, ours[name].detach().to(dtype)):
            raise AssertionError(f"{name} does not round-trip through {folder}")
    return folder


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def check_token_ids(cfg: AVLLMConfig) -> None:
    """The config's special-token ids are the tokenizer's."""
    t = cfg.tokens
    expected = {"image": t.image, "video": t.video, "vision_start": t.vision_start, "vision_end": t.vision_end}
    if cfg.audio is not None:
        expected.update(audio=t.audio, audio_start=t.audio_start, audio_end=t.audio_end)
    for key, value in expected.items():
        if SPECIAL_IDS[key] != value:
            raise ValueError(f"config token {key}={value} but the tokenizer has {SPECIAL_IDS[key]}")
    if cfg.text.vocab_size != VOCAB_SIZE:
        raise ValueError(f"vocab_size {cfg.text.vocab_size} != tokenizer vocabulary {VOCAB_SIZE}")
