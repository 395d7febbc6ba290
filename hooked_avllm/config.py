"""Configuration of a hooked audio-visual LLM: one dataclass per tower, token ids, position rules.

Configs are plain dataclasses so they print, compare and serialise cleanly. Parsing a Hugging Face
``config.json`` into them is the converters' job (``weights_conversion/``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TextConfig:
    """The decoder LLM (Qwen2, Qwen2.5): RMSNorm pre-norm blocks, gated MLP, rotary attention.

    ``mrope_section`` ``None`` means plain 1D rotary over one position row (Qwen2); a tuple
    means sectioned M-RoPE / TMRoPE over three rows (Qwen2.5-VL, Qwen2.5-Omni).
    """

    vocab_size: int
    d_model: int
    d_mlp: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    rope_theta: float = 1e6
    mrope_section: tuple[int, ...] | None = (16, 24, 24)
    rms_norm_eps: float = 1e-6
    act: str = "silu"
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    qkv_bias: bool = True

    @property
    def position_rows(self) -> int:
        """Rows of position ids the rotary reads: 3 for M-RoPE, 1 for 1D rotary."""
        return 1 if self.mrope_section is None else 3


@dataclass
class VisionConfig:
    """The Qwen2.5-VL / Qwen2.5-Omni ViT with its patch merger."""

    depth: int
    d_model: int
    d_mlp: int
    n_heads: int
    out_dim: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    in_channels: int = 3
    act: str = "silu"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclass
class AudioConfig:
    """The Qwen2.5-Omni Whisper-style audio encoder."""

    n_mels: int
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    out_dim: int
    n_window: int = 100
    max_source_positions: int = 1500
    act: str = "gelu"
    layer_norm_eps: float = 1e-5

    @property
    def chunk_frames(self) -> int:
        """Mel frames per attention chunk (2 s at 100 frames/s)."""
        return 2 * self.n_window


@dataclass
class TokenIds:
    """Special token ids that define the sequence layout.

    ``image``/``video``/``audio`` are the ids at media placeholder positions (their embeddings are
    replaced by media features); the bracket ids are ``None`` for families without brackets.
    """

    image: int
    video: int
    vision_start: int | None = None
    vision_end: int | None = None
    audio: int | None = None
    audio_start: int | None = None
    audio_end: int | None = None
    pad: int | None = None
    eos: tuple[int, ...] = ()


@dataclass
class AVLLMConfig:
    """Everything needed to build a :class:`~hooked_avllm.HookedAVLLM`.

    ``position_id_per_second`` is the temporal rate of video position ids: 25 for Qwen2.5-Omni
    (TMRoPE), ``vision_config.tokens_per_second`` (2 in the released configs) for Qwen2.5-VL.

    Example:
        >>> cfg = AVLLMConfig.tiny()
        >>> cfg.n_layers, cfg.text.d_model
        (2, 64)
    """

    architecture: str
    text: TextConfig
    vision: Any  # the family's vision tower config (VisionConfig for the Qwen2.5 families) or None
    audio: Any  # the family's audio tower config (AudioConfig for Qwen2.5-Omni) or None
    tokens: TokenIds
    position_id_per_second: float = 25.0
    seconds_per_chunk: float = 2.0
    source_model_type: str = ""
    torch_dtype: str | None = None
    extra: dict = field(default_factory=dict)

    # ---- the LLM described in TransformerLens's config vocabulary: its ActivationCache methods,
    # its patching module and SAELens read these from model.cfg
    @property
    def n_layers(self) -> int:
        return self.text.n_layers

    @property
    def d_model(self) -> int:
        return self.text.d_model

    @property
    def d_head(self) -> int:
        return self.text.d_head

    @property
    def n_heads(self) -> int:
        return self.text.n_heads

    @property
    def n_key_value_heads(self) -> int:
        return self.text.n_kv_heads

    @property
    def d_mlp(self) -> int:
        """The MLP width; for a mixture-of-experts LLM each expert's (TransformerLens's meaning)."""
        return getattr(self.text, "d_expert", None) or self.text.d_mlp

    @property
    def d_vocab(self) -> int:
        return self.text.vocab_size

    @property
    def d_vocab_out(self) -> int:
        return self.text.vocab_size

    @property
    def n_ctx(self) -> int:
        return self.text.max_position_embeddings

    @property
    def num_experts(self) -> int | None:
        """Experts per MoE layer (``None`` for dense LLMs), as TransformerLens names it."""
        return getattr(self.text, "n_experts", None)

    @property
    def experts_per_token(self) -> int | None:
        """Experts each token is routed to (``None`` for dense LLMs), as TransformerLens names it."""
        return getattr(self.text, "top_k", None)

    @property
    def act_fn(self) -> str:
        return self.text.act

    @property
    def eps(self) -> float:
        return self.text.rms_norm_eps

    @property
    def rotary_dim(self) -> int:
        return self.text.d_head

    @property
    def rotary_base(self) -> float:
        return self.text.rope_theta

    # Fixed facts of every LLM we build: pre-norm RMSNorm blocks (weights not folded), a gated MLP,
    # attention then MLP in sequence, rotary positions (no positional embedding in the residual),
    # no BOS token added by the tokenizer.
    attn_only = False
    normalization_type = "RMS"
    final_rms = True
    gated_mlp = True
    parallel_attn_mlp = False
    positional_embedding_type = "rotary"
    use_attn_scale = True
    use_split_qkv_input = False
    use_attn_in = False
    use_hook_mlp_in = False
    ungroup_grouped_query_attention = False
    default_prepend_bos = False
    tokenizer_prepends_bos = False

    @property
    def original_architecture(self) -> str:
        return self.source_model_type or self.architecture

    @property
    def model_name(self) -> str:
        return self.architecture

    @property
    def use_attn_result(self) -> bool:
        """Whether ``hook_result`` fires (per-head outputs); switched by ``model.set_use_attn_result``."""
        return getattr(self, "_use_attn_result", False)

    @use_attn_result.setter
    def use_attn_result(self, value: bool) -> None:
        raise AttributeError(
            "set per-head results with model.set_use_attn_result(True): the attention modules keep the switch, "
            "and cfg.use_attn_result reports it"
        )

    @property
    def device(self):
        """Where the model's weights are (kept up to date by the model on ``.to()``)."""
        import torch

        return getattr(self, "_device", torch.device("cpu"))

    @property
    def dtype(self):
        """The model's parameter dtype (kept up to date by the model on ``.to()``)."""
        import torch

        return getattr(self, "_dtype", torch.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AVLLMConfig":
        """The inverse of :meth:`to_dict` for the Qwen2.5 families (other families parse their own
        dicts: ``hooked_avllm.architectures.architecture_for(name).config_from_dict``)."""
        def tup(section: dict | None, *keys):
            if section is None:
                return None
            return {k: tuple(v) if k in keys and v is not None else v for k, v in section.items()}

        return cls(
            architecture=d["architecture"],
            text=text_config_from_dict(d["text"]),
            vision=VisionConfig(**tup(d["vision"], "fullatt_block_indexes")) if d.get("vision") else None,
            audio=AudioConfig(**d["audio"]) if d.get("audio") else None,
            tokens=TokenIds(**tup(d["tokens"], "eos")),
            **{k: d[k] for k in ("position_id_per_second", "seconds_per_chunk", "source_model_type", "torch_dtype", "extra") if k in d},
        )

    @classmethod
    def tiny(cls, audio: bool = True, vision: bool = True) -> "AVLLMConfig":
        """A few-hundred-thousand-parameter thinker for tests and demos (vocab 256)."""
        return cls(
            architecture="qwen2_5_omni_thinker" if audio else "qwen2_5_vl",
            text=TextConfig(vocab_size=256, d_model=64, d_mlp=128, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_head=16, mrope_section=(2, 3, 3)),
            vision=VisionConfig(depth=4, d_model=32, d_mlp=64, n_heads=4, out_dim=64,
                                fullatt_block_indexes=(1, 3)) if vision else None,
            audio=AudioConfig(n_mels=128, d_model=32, n_layers=2, n_heads=4, d_mlp=64, out_dim=64) if audio else None,
            tokens=TokenIds(image=201, video=202, vision_start=205, vision_end=206,
                            audio=200 if audio else None, audio_start=203 if audio else None,
                            audio_end=204 if audio else None),
        )


def text_config_from_dict(d: dict) -> TextConfig:
    """A :class:`TextConfig` from its ``asdict`` form (lists back to tuples)."""
    values = dict(d)
    if values.get("mrope_section") is not None:
        values["mrope_section"] = tuple(values["mrope_section"])
    return TextConfig(**values)
