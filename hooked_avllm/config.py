"""Configuration of a hooked audio-visual LLM: the decoder (:class:`TextConfig`), the special
token ids (:class:`TokenIds`) and the whole model (:class:`AVLLMConfig`). Each tower's config lives
with its tower (``hooked_avllm.towers.<tower>``).

Configs are plain dataclasses so they print, compare and serialise cleanly. Parsing a Hugging Face
``config.json`` into them is the family's job (``hooked_avllm/architectures/<family>/config.py``).

Example:
    >>> text = TextConfig(vocab_size=256, d_model=64, d_mlp=128, n_layers=2, n_heads=4, n_kv_heads=2, d_head=16)
    >>> text.position_rows, text.is_moe_layer(0)
    (3, False)
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from hooked_avllm.towers.qwen_vision import QwenVisionConfig
from hooked_avllm.towers.whisper_audio import QwenAudioConfig


@dataclass
class TextConfig:
    """The decoder LLM: RMSNorm pre-norm blocks, rotary attention, a gated MLP or a mixture of
    experts. The block and rotary factories (:mod:`hooked_avllm.components.block_factory`) build
    every decoder from these fields:

    - ``mrope_section`` ``None``: plain 1D rotary over one position row (Qwen2); a tuple: sectioned
      M-RoPE / TMRoPE over three rows (Qwen2.5-VL, Qwen2.5-Omni), interleaved over the head
      dimension when ``mrope_interleaved`` (Qwen3).
    - ``qk_norm``: per-head RMSNorm of queries and keys before rotary (Qwen3).
    - ``n_experts`` > 0: layers route each token through ``top_k`` of ``n_experts`` experts of width
      ``d_expert`` (renormalised when ``norm_topk_prob``), except layers in ``mlp_only_layers`` or
      off the ``decoder_sparse_step`` grid, which use a dense ``d_mlp`` MLP.
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
    qk_norm: bool = False
    mrope_interleaved: bool = False
    n_experts: int = 0
    d_expert: int = 0
    top_k: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    @property
    def position_rows(self) -> int:
        """Rows of position ids the rotary reads: 3 for M-RoPE, 1 for 1D rotary."""
        return 1 if self.mrope_section is None else 3

    def is_moe_layer(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` routes through experts (Qwen-MoE's rule)."""
        return (self.n_experts > 0 and layer not in self.mlp_only_layers
                and (layer + 1) % self.decoder_sparse_step == 0)


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
    vision: Any  # the family's vision tower config (its tower's own dataclass) or None
    audio: Any  # the family's audio tower config (its tower's own dataclass) or None
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
        return self.text.d_expert or self.text.d_mlp

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
        return self.text.n_experts or None

    @property
    def experts_per_token(self) -> int | None:
        """Experts each token is routed to (``None`` for dense LLMs), as TransformerLens names it."""
        return self.text.top_k or None

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
        """The inverse of :meth:`to_dict` for configs whose towers are the Qwen2.5 ones (what
        :meth:`tiny` builds). Any family's dict: ``HookedAVLLM.from_config(d)``, which asks the
        family (``architecture_for(d["architecture"]).config_from_dict``)."""
        def tup(section: dict | None, *keys):
            if section is None:
                return None
            return {k: tuple(v) if k in keys and v is not None else v for k, v in section.items()}

        return cls(
            architecture=d["architecture"],
            text=text_config_from_dict(d["text"]),
            vision=QwenVisionConfig(**tup(d["vision"], "fullatt_block_indexes")) if d.get("vision") else None,
            audio=QwenAudioConfig(**d["audio"]) if d.get("audio") else None,
            tokens=TokenIds(**tup(d["tokens"], "eos")),
            **{k: d[k] for k in ("position_id_per_second", "seconds_per_chunk", "source_model_type", "torch_dtype", "extra") if k in d},
        )

    @classmethod
    def tiny(cls, audio: bool = True, vision: bool = True) -> "AVLLMConfig":
        """A few-hundred-thousand-parameter thinker for tests and demos (vocab 256): a Qwen2.5-Omni
        (``audio=False``: Qwen2.5-VL) shape with the Qwen towers."""
        return cls(
            architecture="qwen2_5_omni_thinker" if audio else "qwen2_5_vl",
            text=TextConfig(vocab_size=256, d_model=64, d_mlp=128, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_head=16, mrope_section=(2, 3, 3)),
            vision=QwenVisionConfig(depth=4, d_model=32, d_mlp=64, n_heads=4, out_dim=64,
                                fullatt_block_indexes=(1, 3)) if vision else None,
            audio=QwenAudioConfig(n_mels=128, d_model=32, n_layers=2, n_heads=4, d_mlp=64, out_dim=64) if audio else None,
            tokens=TokenIds(image=201, video=202, vision_start=205, vision_end=206,
                            audio=200 if audio else None, audio_start=203 if audio else None,
                            audio_end=204 if audio else None),
        )


POSITIVE_TEXT_FIELDS = ("vocab_size", "d_model", "d_mlp", "n_layers", "n_heads", "n_kv_heads", "d_head")


def config_problems(cfg: Any, path: str = "") -> list[tuple[str, Any, str]]:
    """``(field path, value, what it must be)`` for every field of a config (dataclasses, nested)
    whose value does not fit its annotation (a ``str`` where an ``int`` belongs, a float layer
    count), and for LLM sizes that are not positive or heads that do not group. Empty when all fit.

    Example:
        >>> text = TextConfig(vocab_size=256, d_model="64", d_mlp=128, n_layers=2, n_heads=4, n_kv_heads=2, d_head=16)
        >>> config_problems(text)
        [('TextConfig.d_model', '64', 'an int')]
    """
    where = path or type(cfg).__name__
    problems: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        hint = hints.get(f.name, Any)
        if is_dataclass(value) and not isinstance(value, type):
            problems += config_problems(value, f"{where}.{f.name}")
        elif not _fits(value, hint):
            problems.append((f"{where}.{f.name}", value, _describe(hint)))
    if isinstance(cfg, TextConfig) and not problems:
        problems += [(f"{where}.{name}", getattr(cfg, name), "a positive int") for name in POSITIVE_TEXT_FIELDS
                     if getattr(cfg, name) < 1]
        if not problems and cfg.n_heads % cfg.n_kv_heads:
            problems.append((f"{where}.n_kv_heads", cfg.n_kv_heads, f"a divisor of n_heads={cfg.n_heads}"))
    return problems


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type (ints count as floats; bools are not ints)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args)))
    if origin is typing.Literal:
        return value in args
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return isinstance(value, origin) if isinstance(origin, type) else True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    name = getattr(hint, "__name__", str(hint))
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def text_config_from_dict(d: dict, cls: type = TextConfig) -> TextConfig:
    """A :class:`TextConfig` (or subclass ``cls``) from its ``asdict`` form (lists back to tuples)."""
    values = dict(d)
    for key in ("mrope_section", "mlp_only_layers"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    return cls(**values)


_MOVED = {"VisionConfig": ("hooked_avllm.towers.qwen_vision", "QwenVisionConfig"),
          "AudioConfig": ("hooked_avllm.towers.whisper_audio", "QwenAudioConfig")}


def __getattr__(name: str):
    """Deprecated names: the Qwen tower configs moved to their towers (removed in 0.3)."""
    if name in _MOVED:
        import warnings

        module, new = _MOVED[name]
        warnings.warn(f"hooked_avllm.config.{name} moved to {module}.{new}; the old name goes in 0.3",
                      DeprecationWarning, stacklevel=2)
        return {"VisionConfig": QwenVisionConfig, "AudioConfig": QwenAudioConfig}[name]
    raise AttributeError(f"module 'hooked_avllm.config' has no attribute {name!r}")
