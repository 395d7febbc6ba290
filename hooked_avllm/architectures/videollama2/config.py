"""VideoLLaMA2.1-AV's config: the tower settings its ``config.json`` implies.

The released ``config.json`` is a Qwen2 config plus LLaVA-style ``mm_*`` keys
(``mm_vision_tower`` = ``google/siglip-so400m-patch14-384``, ``mm_projector_type`` =
``stc_connector_v35``, ``mm_vision_select_layer`` -2, ``mm_hidden_size`` 1152, ``mm_audio_tower``,
``mm_projector_a_type`` = ``mlp2x_gelu``, ``mm_hidden_size_a`` 768, ``num_frames``). It names the
SigLIP and BEATs towers without their shapes, so those take the released defaults
(siglip-so400m-patch14-384; BEATs iter3+ code defaults); a ``vision_config`` (transformers
SigLIP names) or ``audio_config`` (official BEATs ``cfg`` names) section overrides them, which is
how tests describe tiny models.

Example:
    >>> cfg = config_from_hf({"model_type": "videollama2_qwen2", "vocab_size": 152064, "hidden_size": 3584,
    ...     "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    ...     "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_projector_type": "stc_connector_v35",
    ...     "mm_hidden_size": 1152, "mm_audio_tower": "audio_tower.bin", "mm_projector_a_type": "mlp2x_gelu",
    ...     "mm_hidden_size_a": 768, "num_frames": 16})
    >>> cfg.vision.token_grid(16), cfg.audio.beats.n_layers, cfg.text.mrope_section
    ((8, 13, 13), 12, None)
"""

from __future__ import annotations

import dataclasses

import re
from dataclasses import asdict, dataclass

from hooked_avllm.config import AVLLMConfig, TextConfig, TokenIds, text_config_from_dict
from hooked_avllm.towers.beats import BEATsConfig
from hooked_avllm.towers.siglip import SiglipConfig
from hooked_avllm.towers.stc_connector import STCConfig

ARCHITECTURE = "videollama2_qwen2"
# Placeholder ids for media positions: rows of Qwen2's embedding past its tokenizer (151,646 ids of
# 152,064 rows), so no text token collides; their embeddings are replaced by media features.
DEFAULT_PLACEHOLDERS = {"image": 151655, "video": 151656, "audio": 151646}
QWEN2_PAD, QWEN2_IM_END = 151643, 151645


@dataclass
class VideoLLaMA2VisionConfig:
    """SigLIP frames -> STC connector; ``num_frames`` frames per video (an image is repeated to
    that many); frames resized to the SigLIP size and normalised with ``image_mean``/``image_std``."""

    siglip: SiglipConfig
    stc: STCConfig
    num_frames: int = 16
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def out_dim(self) -> int:
        return self.stc.d_model

    @property
    def n_layers(self) -> int:
        """Layers of the vision tower that run (SigLIP's up to the selected one)."""
        return self.siglip.n_layers_run

    @property
    def d_model(self) -> int:
        """Width of the vision tower (SigLIP's)."""
        return self.siglip.d_model

    def token_grid(self, frames: int | None = None) -> tuple[int, int, int]:
        """(frame groups, rows, columns) of the connector's tokens for ``frames`` frames."""
        grid = self.siglip.grid
        return self.stc.output_grid(frames or self.num_frames, grid, grid)


@dataclass
class VideoLLaMA2AudioConfig:
    """BEATs on 128-bin Kaldi fbank -> ``mlp{projector_depth}x_gelu`` projector. Audio is cut or
    padded to ``clip_seconds`` at ``sample_rate``; a video's track is sampled as ``clips_per_video``
    clips of ``clip_duration`` seconds spread evenly over the video, as the released processor does."""

    beats: BEATsConfig
    out_dim: int
    projector_depth: int = 2
    sample_rate: int = 16000
    clip_seconds: float = 30.0
    clips_per_video: int = 8
    clip_duration: float = 2.0

    @property
    def n_layers(self) -> int:
        """Layers of the audio tower (BEATs')."""
        return self.beats.n_layers

    @property
    def d_model(self) -> int:
        """Width of the audio tower (BEATs')."""
        return self.beats.d_model


def _projector_depth(kind: str, what: str) -> int:
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind or "")
    if not match:
        raise NotImplementedError(f"{what} {kind!r} is not supported; VideoLLaMA2.1-AV uses 'mlp2x_gelu'")
    return int(match.group(1))


RELEASED_SIGLIP = "siglip-so400m-patch14-384"


def config_from_hf(config_json: dict) -> AVLLMConfig:
    """Parse a VideoLLaMA2 (Qwen2) ``config.json``; see the module docstring."""
    c = config_json
    d_model, n_heads = c["hidden_size"], c["num_attention_heads"]
    text = TextConfig(
        vocab_size=c["vocab_size"], d_model=d_model, d_mlp=c["intermediate_size"], n_layers=c["num_hidden_layers"],
        n_heads=n_heads, n_kv_heads=c.get("num_key_value_heads", n_heads), d_head=c.get("head_dim") or d_model // n_heads,
        rope_theta=float((c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 1e6))),
        mrope_section=None, rms_norm_eps=c.get("rms_norm_eps", 1e-6), act=c.get("hidden_act", "silu"),
        tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        max_position_embeddings=c.get("max_position_embeddings", 32768), qkv_bias=True,
    )
    vision = None
    if c.get("mm_vision_tower"):
        if "siglip" not in str(c["mm_vision_tower"]).lower() and "vision_config" not in c:
            raise NotImplementedError(f"mm_vision_tower {c['mm_vision_tower']!r}: only SigLIP towers are supported")
        projector = c.get("mm_projector_type", "stc_connector_v35")
        if projector != "stc_connector_v35":
            raise NotImplementedError(f"mm_projector_type {projector!r} is not supported; VideoLLaMA2.1 uses 'stc_connector_v35'")
        select_layer = c.get("mm_vision_select_layer", -2)
        if c.get("vision_config"):
            siglip = SiglipConfig.from_hf(c["vision_config"], select_layer=select_layer)
        elif str(c["mm_vision_tower"]).rstrip("/").endswith(RELEASED_SIGLIP):  # the release names its tower, no shapes
            siglip = dataclasses.replace(SiglipConfig(), select_layer=select_layer)
        else:
            raise NotImplementedError(f"mm_vision_tower {c['mm_vision_tower']!r} without a vision_config: only "
                                      f"{RELEASED_SIGLIP}'s shape is known; add its SigLIP vision_config to config.json")
        if c.get("mm_hidden_size", siglip.d_model) != siglip.d_model:
            raise ValueError(f"mm_hidden_size {c['mm_hidden_size']} differs from the SigLIP width {siglip.d_model}")
        vision = VideoLLaMA2VisionConfig(siglip, STCConfig(d_in=siglip.d_model, d_model=d_model),
                                         num_frames=int(c.get("num_frames", 16)))
    audio = None
    if c.get("mm_audio_tower"):
        beats = BEATsConfig.from_official(c.get("audio_config") or {})
        if c.get("mm_hidden_size_a", beats.d_model) != beats.d_model:
            raise ValueError(f"mm_hidden_size_a {c['mm_hidden_size_a']} differs from the BEATs width {beats.d_model}")
        audio = VideoLLaMA2AudioConfig(beats, out_dim=c.get("hidden_size_a", d_model),
                                       projector_depth=_projector_depth(c.get("mm_projector_a_type", "mlp2x_gelu"), "mm_projector_a_type"))
        if audio.out_dim != d_model:
            raise ValueError(f"hidden_size_a {audio.out_dim} must equal the LLM width {d_model}")
    placeholders = {kind: int(c.get(f"{kind}_token_index", default)) for kind, default in DEFAULT_PLACEHOLDERS.items()}
    too_big = {k: v for k, v in placeholders.items() if v >= text.vocab_size}
    if too_big:
        raise ValueError(
            f"placeholder ids {too_big} are outside the vocabulary of {text.vocab_size}; give image/video/audio_token_index "
            "in config.json (any ids of embedding rows the tokenizer never produces)"
        )
    eos = c.get("eos_token_id", QWEN2_IM_END)
    eos = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    pad = c.get("pad_token_id")
    pad = pad if pad is not None else (QWEN2_PAD if QWEN2_PAD < text.vocab_size else 0)
    tokens = TokenIds(image=placeholders["image"], video=placeholders["video"], audio=placeholders["audio"] if audio else None,
                      pad=pad, eos=tuple(e for e in eos if e is not None and e < text.vocab_size))
    return AVLLMConfig(architecture=ARCHITECTURE, text=text, vision=vision, audio=audio, tokens=tokens,
                       source_model_type=c.get("model_type", ARCHITECTURE), torch_dtype=c.get("torch_dtype") or c.get("dtype"))


def config_from_dict(d: dict) -> AVLLMConfig:
    """The inverse of ``AVLLMConfig.to_dict`` for this family."""
    vision = audio = None
    if d.get("vision"):
        v = dict(d["vision"])
        v["siglip"] = SiglipConfig(**v["siglip"])
        v["stc"] = STCConfig(**v["stc"])
        v["image_mean"], v["image_std"] = tuple(v["image_mean"]), tuple(v["image_std"])
        vision = VideoLLaMA2VisionConfig(**v)
    if d.get("audio"):
        a = dict(d["audio"])
        a["beats"] = BEATsConfig(**a["beats"])
        audio = VideoLLaMA2AudioConfig(**a)
    tokens = dict(d["tokens"])
    tokens["eos"] = tuple(tokens.get("eos") or ())
    return AVLLMConfig(
        architecture=d["architecture"], text=text_config_from_dict(d["text"]), vision=vision, audio=audio,
        tokens=TokenIds(**tokens),
        **{k: d[k] for k in ("source_model_type", "torch_dtype", "extra") if k in d},
    )


def tiny_config(vocab_size: int = 256, audio: bool = True, vision: bool = True, num_frames: int = 4) -> AVLLMConfig:
    """A tiny random-weight VideoLLaMA2.1-AV for tests and demos (SigLIP 56² frames, 2-layer BEATs)."""
    return config_from_dict(asdict(config_from_hf(tiny_config_json(vocab_size, audio, vision, num_frames))))


def tiny_config_json(vocab_size: int = 256, audio: bool = True, vision: bool = True, num_frames: int = 4) -> dict:
    """The ``config.json`` of :func:`tiny_config` (what a saved tiny checkpoint holds)."""
    c = {
        "model_type": ARCHITECTURE, "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1e6,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 4096,
        "eos_token_id": vocab_size - 4, "pad_token_id": 0,
        "image_token_index": vocab_size - 3, "video_token_index": vocab_size - 2, "audio_token_index": vocab_size - 1,
    }
    if vision:
        c.update(mm_vision_tower="google/siglip-so400m-patch14-384", mm_projector_type="stc_connector_v35",
                 mm_vision_select_layer=-2, mm_hidden_size=32, num_frames=num_frames,
                 vision_config={"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
                                "num_attention_heads": 4, "image_size": 56, "patch_size": 14})
    if audio:
        c.update(mm_audio_tower="audio_tower.bin", mm_projector_a_type="mlp2x_gelu", mm_hidden_size_a=32, hidden_size_a=64,
                 audio_config={"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 48,
                               "encoder_attention_heads": 4, "embed_dim": 16, "conv_pos": 8, "conv_pos_groups": 4,
                               "num_buckets": 32, "max_distance": 64})
    return c
