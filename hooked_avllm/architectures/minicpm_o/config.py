"""MiniCPM-o 2.6's ``config.json`` parsed into our dataclasses (and MiniCPM-V 2.6's, the same model
without the audio path).

The released config is a Qwen2 config at the top level (the LLM) with ``vision_config`` (the navit
SigLIP ``vpm``), ``audio_config`` (Whisper-medium ``apm``), the resampler's ``query_num``, the audio
settings (``audio_chunk_length``, ``audio_pool_step``) and the TTS head's config (not built). The
special token ids of the layout are not in ``config.json``: they are the released tokenizer's
(``tokenizer_config.json``), the defaults of :class:`MiniCPMTokenIds`; ``prepare`` checks them
against the checkpoint's tokenizer.

Example:
    >>> import json
    >>> cfg = config_from_hf(json.load(open("tests/fixtures/hub/openbmb__MiniCPM-o-2_6/config.json")))
    >>> cfg.text.n_layers, cfg.text.mrope_section, cfg.vision.navit.n_layers, cfg.audio.block_frames
    (28, None, 27, 50)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hooked_avllm.config import AVLLMConfig, TextConfig, TokenIds, text_config_from_dict
from hooked_avllm.towers.navit_siglip import NavitSiglipConfig
from hooked_avllm.towers.resampler import ResamplerConfig
from hooked_avllm.towers.whisper_encoder import WhisperEncoderConfig

ARCHITECTURES = {"minicpmo": "minicpmo", "minicpmv": "minicpmv"}  # model_type -> our architecture name
SUPPORTED_VERSION = 2.6
UNK, END_OF_TEXT, IM_END = 128244, 151643, 151645


@dataclass
class MiniCPMTokenIds(TokenIds):
    """The layout's special ids (the released tokenizer's). ``image`` / ``video`` / ``audio`` are
    the placeholder ``<unk>`` (one id for every medium: the brackets around it tell them apart);
    ``image_start`` / ``image_end`` bracket an image's (or a frame's) first slice, ``slice_start`` /
    ``slice_end`` its grid cells, ``audio_start`` / ``audio_end`` each group of at most 25 audio
    placeholders, ``unit`` opens each second of an audio-visual video, ``image_id_start`` /
    ``image_id_end`` the image's number."""

    image: int = UNK
    video: int = UNK
    audio: int | None = UNK
    audio_start: int | None = 151685
    audio_end: int | None = 151687
    pad: int | None = END_OF_TEXT
    eos: tuple[int, ...] = (IM_END, END_OF_TEXT)
    image_start: int = 151665
    image_end: int = 151666
    slice_start: int = 151675
    slice_end: int = 151676
    image_id_start: int = 151677
    image_id_end: int = 151678
    unit: int = 151679

    # token strings of the released tokenizer, for the check against a checkpoint's tokenizer
    STRINGS = {"image": "<unk>", "image_start": "<image>", "image_end": "</image>", "slice_start": "<slice>",
               "slice_end": "</slice>", "image_id_start": "<image_id>", "image_id_end": "</image_id>", "unit": "<unit>",
               "audio_start": "<|audio_start|>", "audio_end": "<|audio_end|>"}


@dataclass
class MiniCPMVisionConfig:
    """The vision path: the navit SigLIP tower (``vpm``) and the perceiver resampler that turns
    each slice into ``resampler.n_queries`` LLM rows."""

    navit: NavitSiglipConfig
    resampler: ResamplerConfig


def text_config(c: dict) -> TextConfig:
    """The Qwen2 LLM at the top level of the config: 1D rotary, q/k/v biases, untied head."""
    if c.get("use_sliding_window"):
        raise ValueError("config.json sets use_sliding_window=True; MiniCPM-o's LLM attends over the whole sequence")
    d_model, n_heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    rope = c.get("rope_parameters") or {}
    return TextConfig(
        vocab_size=int(c["vocab_size"]), d_model=d_model, d_mlp=int(c["intermediate_size"]),
        n_layers=int(c["num_hidden_layers"]), n_heads=n_heads, n_kv_heads=int(c.get("num_key_value_heads", n_heads)),
        d_head=int(c.get("head_dim") or d_model // n_heads), rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 1e6))),
        mrope_section=None, rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)), act=c.get("hidden_act", "silu"),
        tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        max_position_embeddings=int(c.get("max_position_embeddings", 32768)), qkv_bias=True,
    )


def tokens_from_tokenizer_config(tokenizer_config: dict) -> MiniCPMTokenIds:
    """The layout's ids as a checkpoint's ``tokenizer_config.json`` declares them (its
    ``added_tokens_decoder``); ids it does not list keep the released defaults.

    Example:
        >>> tokens_from_tokenizer_config({"added_tokens_decoder": {"7": {"content": "<unit>"}}}).unit
        7
    """
    by_string = {entry.get("content"): int(i) for i, entry in (tokenizer_config.get("added_tokens_decoder") or {}).items()}
    found = {name: by_string[s] for name, s in MiniCPMTokenIds.STRINGS.items() if s in by_string}
    if "image" in found:
        found.update(video=found["image"], audio=found["image"])
    for name, s in (("pad", tokenizer_config.get("pad_token")), ):
        if isinstance(s, str) and s in by_string:
            found[name] = by_string[s]
    ends = [by_string[s] for s in ("<|im_end|>", "<|endoftext|>") if s in by_string]
    if ends:
        found["eos"] = tuple(ends)
    return MiniCPMTokenIds(**found)


def config_from_hf(config_json: dict, tokens: MiniCPMTokenIds | None = None) -> AVLLMConfig:
    """Parse a MiniCPM-o 2.6 (``minicpmo``) or MiniCPM-V 2.6 (``minicpmv``, no audio) ``config.json``.

    ``init_vision`` / ``init_audio`` false (or a missing ``audio_config``) leave that path out;
    ``drop_vision_last_layer`` drops the SigLIP's last layer (the released config: false). Other
    MiniCPM-V versions (2.0, 2.5, 4.x) are other architectures and are refused.
    """
    model_type = config_json.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} is not MiniCPM-o / MiniCPM-V 2.6")
    version = config_json.get("version")
    if version is not None and float(version) != SUPPORTED_VERSION:
        raise ValueError(
            f"this is a MiniCPM-V/o {version} checkpoint; only version {SUPPORTED_VERSION} (Qwen2 LLM, navit SigLIP, "
            "64-query resampler) is supported"
        )
    vision = None
    if config_json.get("init_vision", True) and config_json.get("vision_config"):
        navit = NavitSiglipConfig.from_hf(config_json["vision_config"],
                                          drop_last_layer=bool(config_json.get("drop_vision_last_layer", True)))
        vision = MiniCPMVisionConfig(navit, ResamplerConfig.from_hf(config_json))
    audio = None
    if model_type == "minicpmo" and config_json.get("init_audio", True) and config_json.get("audio_config"):
        audio = WhisperEncoderConfig.from_hf(
            config_json["audio_config"], chunk_length_s=float(config_json.get("audio_chunk_length", 1.0)),
            out_dim=int(config_json["hidden_size"]), pool_step=int(config_json.get("audio_pool_step", 2)),
        )
    tokens = tokens or MiniCPMTokenIds()
    if audio is None:
        tokens = dataclasses.replace(tokens, audio=None, audio_start=None, audio_end=None)
    return AVLLMConfig(
        architecture=ARCHITECTURES[model_type], text=text_config(config_json), vision=vision, audio=audio,
        tokens=tokens, position_id_per_second=1.0, source_model_type=model_type,
        torch_dtype=config_json.get("torch_dtype") or config_json.get("dtype"),
    )


def config_from_dict(d: dict) -> AVLLMConfig:
    """The inverse of ``AVLLMConfig.to_dict`` for this family."""
    tokens = dict(d["tokens"])
    tokens["eos"] = tuple(tokens.get("eos") or ())
    vision = None
    if d.get("vision"):
        v = d["vision"]
        resampler = dict(v["resampler"])
        resampler["max_size"] = tuple(resampler["max_size"])
        vision = MiniCPMVisionConfig(NavitSiglipConfig(**v["navit"]), ResamplerConfig(**resampler))
    return AVLLMConfig(
        architecture=d["architecture"], text=text_config_from_dict(d["text"]), vision=vision,
        audio=WhisperEncoderConfig.from_dict(d["audio"]) if d.get("audio") else None,
        tokens=MiniCPMTokenIds(**tokens),
        **{k: d[k] for k in ("position_id_per_second", "seconds_per_chunk", "source_model_type", "torch_dtype", "extra") if k in d},
    )


def tiny_config_json(vocab_size: int = 151700, audio: bool = True, vision: bool = True) -> dict:
    """A tiny random MiniCPM-o 2.6 ``config.json`` in the released key names (tests, the docs):
    a 2-layer Qwen2 of width 256 (the resampler has ``256 // 128`` = 2 heads), a 2-layer navit
    SigLIP on a 4x4 position grid, 8 resampler queries, a 2-layer Whisper encoder. With the
    released token ids the vocabulary must reach 151700 (or give the ids in a tokenizer_config.json).

    Example:
        >>> cfg = config_from_hf(tiny_config_json())
        >>> cfg.vision.resampler.n_queries, cfg.vision.resampler.n_heads, cfg.audio.d_model, cfg.text.d_model
        (8, 2, 32, 256)
    """
    config = {
        "model_type": "minicpmo", "architectures": ["MiniCPMO"], "version": 2.6,
        "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": vocab_size, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "hidden_act": "silu", "max_position_embeddings": 32768, "tie_word_embeddings": False, "use_sliding_window": False,
        "query_num": 8, "drop_vision_last_layer": False, "image_size": 448, "patch_size": 14, "slice_mode": True,
        "slice_config": {"max_slice_nums": 9, "model_type": "minicpmv"}, "vision_batch_size": 16,
        "audio_chunk_length": 1.0, "audio_pool_step": 2, "chunk_input": True, "use_image_id": True,
        "torch_dtype": "float32",
    }
    if vision:
        config["vision_config"] = {"hidden_size": 32, "image_size": 56, "intermediate_size": 64, "model_type": "siglip_vision_model",
                                   "num_attention_heads": 4, "num_hidden_layers": 2, "patch_size": 14}
    if audio:
        config["audio_config"] = {"d_model": 32, "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "encoder_layers": 2,
                                  "num_mel_bins": 80, "max_source_positions": 1500, "model_type": "whisper"}
    else:
        config["model_type"] = "minicpmv"
    return config


__all__ = ["MiniCPMTokenIds", "MiniCPMVisionConfig", "config_from_dict", "config_from_hf", "text_config", "tiny_config_json",
           "tokens_from_tokenizer_config"]
