"""What one model family owns, as one object the generic :class:`~hooked_avllm.HookedAVLLM` asks.

A family (one folder under ``hooked_avllm/architectures/``) subclasses :class:`Architecture` and
fills in: how its ``config.json`` parses (``config_from_hf``, through its converter in
``weights_conversion/``), which towers and projectors it composes from shared components
(``build_towers``), its decoder block and position rule (``build_block``, ``rotary``,
``position_ids``), how media tensors become LLM-space rows (``encode_media``), and how a prompt
with media becomes inputs (``prepare``). The model itself never names a family.

Example:
    >>> from hooked_avllm.architectures import architecture_for
    >>> architecture_for("qwen2_5_vl").name
    'qwen2_5_vl'
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from hooked_avllm.components import Attention, GatedMLP, RMSNorm, TransformerBlock
from hooked_avllm.components.rotary import Rotary, rotary_1d, rotary_mrope
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.position_kinds import MEDIA_KINDS

__all__ = ["MEDIA_KINDS", "TOWER_SLOTS", "Architecture"]

if TYPE_CHECKING:  # annotations only
    from hooked_avllm.inputs import ModelInputs, ModelInputSpec, TokenLayout

# Model attributes that hold the towers and projectors; hook names start with these prefixes.
TOWER_SLOTS: tuple[str, ...] = ("vision", "vision_proj", "audio", "audio_proj")


class Architecture:
    """One model family: its config, composition, inputs and position rule (see the module docstring)."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = ()
    description: str = ""
    converter: ModuleType | None = None  # weights_conversion.<family>

    # ------------------------------------------------------------------ config
    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        """Parse the checkpoint's ``config.json``."""
        return self.converter.config_from_hf(config_json)

    def config_from_dict(self, d: dict) -> AVLLMConfig:
        """The inverse of ``AVLLMConfig.to_dict`` for this family."""
        return AVLLMConfig.from_dict(d)

    # ------------------------------------------------------------------ composition
    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        """Encoders and projectors by slot (``vision``, ``vision_proj``, ``audio``, ``audio_proj``);
        a slot left out stays ``None`` on the model."""
        return {}

    def build_block(self, cfg: AVLLMConfig, layer: int) -> nn.Module:
        """Decoder layer ``layer``: the Qwen2 / Qwen2.5 pre-norm block by default."""
        t = cfg.text
        return TransformerBlock(
            RMSNorm(t.d_model, t.rms_norm_eps),
            Attention(t.d_model, t.n_heads, t.n_kv_heads, t.d_head, qkv_bias=t.qkv_bias, out_bias=False),
            RMSNorm(t.d_model, t.rms_norm_eps),
            GatedMLP(t.d_model, t.d_mlp, act=t.act),
        )

    def rotary(self, cfg: AVLLMConfig, position_ids: Int[Tensor, "rows batch pos"]) -> Rotary:
        """The decoder's rotary angles: M-RoPE over 3 rows, or 1D over one."""
        t = cfg.text
        if t.mrope_section is None:
            return rotary_1d(position_ids[0], t.d_head, t.rope_theta)
        return rotary_mrope(position_ids, t.d_head, t.rope_theta, t.mrope_section)

    # ------------------------------------------------------------------ inputs
    def input_spec(self, cfg: AVLLMConfig) -> "ModelInputSpec":
        """What the input pipeline needs: placeholder ids, padding id, position timing, system prompt."""
        raise NotImplementedError(f"{self.name}: input_spec is not available for this family")

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Float[Tensor, "token d_model"]]:
        """Run the towers on the media tensors: LLM-space rows per media kind, items in sequence
        order (row-major over the batch), one row per placeholder position of that kind."""
        present = sorted(k for k, v in media.items() if isinstance(v, Tensor))
        if present:
            raise ValueError(f"the {self.name} family takes no media inputs, but {present} were given")
        return {}

    def placeholder_masks(self, cfg: AVLLMConfig, input_ids: Int[Tensor, "batch pos"]) -> dict[str, Bool[Tensor, "batch pos"]]:
        """Media positions found from placeholder ids, for inputs that come without a layout."""
        tokens = cfg.tokens
        ids = {"audio": tokens.audio, "video": tokens.video, "image": tokens.image}
        return {kind: input_ids == token for kind, token in ids.items() if token is not None}

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> "TokenLayout":
        """The layout of bare ids + media tensors (families whose ``prepare`` is the only way in
        raise, pointing there)."""
        raise InputError(
            f"{self.name} inputs carry their layout: build them with model.prepare(...) (bare token ids have no media layout)"
        )

    def position_ids(
        self, model: Any, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], media: dict[str, Any]
    ) -> Int[Tensor, "rows batch pos"]:
        """Position ids of a prompt without a layout: 1D positions counting real tokens."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return positions[None].expand(model.cfg.text.position_rows, -1, -1)

    def preprocessor(self, model: Any) -> Any:
        """The media preprocessing settings: the checkpoint folder's ``preprocessor_config.json``,
        else the family's defaults (Qwen2.5-Omni's here)."""
        from hooked_avllm.inputs import PreprocessorConfig

        folder = getattr(model, "checkpoint_folder", None)
        if folder is not None and (folder / "preprocessor_config.json").exists():
            return PreprocessorConfig.from_pretrained(folder)
        return PreprocessorConfig()

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None, **kwargs: Any) -> "ModelInputs":
        """A prompt and media files/arrays -> prepared inputs with their layout."""
        raise NotImplementedError(f"{self.name}: prepare is not available for this family")

    def __repr__(self) -> str:
        return f"<architecture {self.name}: model_type {', '.join(self.model_types)}>"
