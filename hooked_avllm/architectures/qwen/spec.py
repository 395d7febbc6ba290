"""The Qwen pipeline's input contract: the generic :class:`~hooked_avllm.inputs.spec.InputSpec`
(media names, position rule, batching, reference arguments) plus the special-token ids, timing and
rules the Qwen prompt builder and layout parser need.

``ModelInputSpec.from_config`` accepts a checkpoint folder, a ``config.json`` path, a hub-style
config dict (a full Qwen2.5-Omni config, its thinker config, or a Qwen2.5-VL config), a
``transformers`` config object, an object with a ``tokens`` attribute (``.image``, ``.video``,
``.audio``, ``.vision_start``, ``.vision_end``, ``.audio_start``, ``.audio_end``), or ``None`` for
the Qwen2.5-Omni defaults.

Example:
    >>> spec = ModelInputSpec.from_config(None)
    >>> spec.tokens.audio, spec.tokens.vision_start, spec.position_id_per_second
    (151646, 151652, 25.0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hooked_avllm.architectures.qwen.rules import QWEN2_5_RULES, InputRules
from hooked_avllm.architectures.registry import architecture_for
from hooked_avllm.inputs.errors import InputError, MediaFileNotFoundError
from hooked_avllm.inputs.spec import InputSpec

# the media arguments of the Qwen families (the thinker's names); the reference's aliases and extras
QWEN_MEDIA = ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
              "video_grid_thw", "video_second_per_grid", "use_audio_in_video")
QWEN_FLOAT_MEDIA = ("input_features", "pixel_values", "pixel_values_videos")
QWEN_ALIASES = {"second_per_grid_ts": "video_second_per_grid"}
QWEN_IGNORED = ("mm_token_type_ids",)  # transformers 5.x's Qwen2.5-VL media-kind ids: the layout has them

OMNI_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)
VL_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class MediaTokens:
    """Special-token ids of the media placeholders and their brackets (``None``: no audio)."""

    image: int = 151655
    video: int = 151656
    audio: int | None = 151646
    vision_start: int = 151652
    vision_end: int = 151653
    audio_start: int | None = 151647
    audio_end: int | None = 151648

    @property
    def placeholders(self) -> dict[str, int]:
        """Placeholder id of each media kind the model accepts."""
        ids = {"image": self.image, "video": self.video}
        if self.audio is not None:
            ids["audio"] = self.audio
        return ids


@dataclass(frozen=True)
class ModelInputSpec(InputSpec):
    """Token ids, position timing and limits of one Qwen family; ``rules`` are its audio-token,
    audio-in-video and position rules (:mod:`hooked_avllm.architectures.qwen.rules`)."""

    family: str = "qwen2_5_omni"
    media_names: tuple[str, ...] = QWEN_MEDIA
    float_media: tuple[str, ...] = QWEN_FLOAT_MEDIA
    aliases: dict = field(default_factory=lambda: dict(QWEN_ALIASES), compare=False)
    ignored: tuple[str, ...] = QWEN_IGNORED
    tokens: MediaTokens = MediaTokens()
    spatial_merge_size: int = 2
    position_id_per_second: float = 25.0
    seconds_per_chunk: float = 2.0
    max_positions: int = 32768
    pad_token_id: int = 151643
    default_system_prompt: str | None = OMNI_SYSTEM_PROMPT
    rules: InputRules = field(default=QWEN2_5_RULES, compare=False, repr=False)

    def layout_positions(self, layout: Any, media: Any) -> tuple[Tensor, Tensor]:
        """M-RoPE / TMRoPE ids of a prompt layout from its spans and the media's grids (the family's rule)."""
        return self.rules.layout_positions(layout, self, media)

    def batch_media(self, items: Any) -> dict[str, Any]:
        """Media of several inputs as one batch: audio features and their masks padded to the
        longest clip's frames, every other tensor concatenated; ``use_audio_in_video`` must agree."""
        flags = {item.get("use_audio_in_video") for item in items
                 if item.get("video_grid_thw") is not None and item.get("input_features") is not None}
        if len(flags) > 1:
            raise InputError("the inputs mix use_audio_in_video=True and False; prepare them the same way to batch them")
        out: dict[str, Any] = {}
        for name in ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw",
                     "pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
            parts = [item[name] for item in items if item.get(name) is not None]
            if not parts:
                continue
            if name in ("input_features", "feature_attention_mask"):
                frames = max(p.shape[-1] for p in parts)
                parts = [torch.nn.functional.pad(p, (0, frames - p.shape[-1])) for p in parts]
            out[name] = torch.cat(parts)
        if flags:
            out["use_audio_in_video"] = flags.pop()
        return out

    def reference_kwargs(self, inputs: Any) -> dict[str, Any]:
        """Keyword arguments of the Hugging Face thinker's ``forward`` (Qwen2.5-VL: its names)."""
        kwargs: dict[str, Any] = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask}
        media = inputs.media
        names = ["pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"]
        if self.family == "qwen2_5_vl":
            if media.get("video_second_per_grid") is not None:
                kwargs["second_per_grid_ts"] = media["video_second_per_grid"]
            # transformers 5.x's Qwen2.5-VL finds media positions from these (0 text, 1 image, 2 video)
            kinds = torch.zeros_like(inputs.input_ids)
            kinds[inputs.input_ids == self.tokens.image] = 1
            kinds[inputs.input_ids == self.tokens.video] = 2
            kwargs["mm_token_type_ids"] = kinds
        else:
            names += ["input_features", "feature_attention_mask", "video_second_per_grid"]
            kwargs["use_audio_in_video"] = bool(media.get("use_audio_in_video", False))
        kwargs.update({name: media[name] for name in names if media.get(name) is not None})
        return kwargs

    @property
    def supports_audio(self) -> bool:
        return self.tokens.audio is not None

    @property
    def audio_seconds_per_token(self) -> float:
        """Audio tokens come at the position rate (25 Hz, 0.04 s each)."""
        return 1.0 / self.position_id_per_second

    @classmethod
    def from_config(cls, config: Any = None, family: str | None = None) -> "ModelInputSpec":
        """Read the spec from any config-like value (see the module docstring). ``family``
        (``"qwen2_5_omni"`` or ``"qwen2_5_vl"``: the model's ``architecture.name``) says which
        prompt conventions apply; without it a project config's are inferred from its audio ids."""
        if config is None:
            return cls()
        if isinstance(config, ModelInputSpec):
            return config
        if family is not None:
            return cls._from_object(config, family)
        if isinstance(config, (str, Path)):
            return cls.from_dict(_read_config_json(Path(config)))
        if isinstance(config, dict):
            return cls.from_dict(config)
        if hasattr(config, "to_dict") and hasattr(config, "model_type"):
            return cls.from_dict(config.to_dict())
        return cls._from_object(config)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "ModelInputSpec":
        """Read a hub-style config dict (Qwen2.5-Omni, its thinker, or Qwen2.5-VL) through the
        checkpoint converters, so hub configs are parsed in one place."""
        try:
            family = architecture_for(config.get("model_type"))
        except ValueError as err:
            raise InputError(str(err)) from None
        return cls._from_object(family.config_from_hf(config))

    @classmethod
    def _from_object(cls, config: Any, family: str | None = None) -> "ModelInputSpec":
        """Duck-typed read of a project config such as :class:`hooked_avllm.AVLLMConfig`.

        Reads ``tokens`` (ids as attributes), ``position_id_per_second``, ``seconds_per_chunk``,
        ``vision.spatial_merge_size``, ``text.max_position_embeddings`` and ``architecture``.
        """
        base = cls()
        src = getattr(config, "tokens", None) or config
        vision = getattr(config, "vision", None)
        text = getattr(config, "text", None)

        def get(obj: Any, *names: str, default: Any = None) -> Any:
            for name in names:
                value = getattr(obj, name, None) if obj is not None else None
                if value is not None:
                    return value
            return default

        tokens = MediaTokens(
            image=get(src, "image", "image_token_id", default=base.tokens.image),
            video=get(src, "video", "video_token_id", default=base.tokens.video),
            audio=get(src, "audio", "audio_token_id"),
            vision_start=get(src, "vision_start", "vision_start_token_id", default=base.tokens.vision_start),
            vision_end=get(src, "vision_end", "vision_end_token_id", default=base.tokens.vision_end),
            audio_start=get(src, "audio_start", "audio_start_token_id"),
            audio_end=get(src, "audio_end", "audio_end_token_id"),
        )
        if family is None:  # a bare config: the vision-language base is the one without audio ids
            family = "qwen2_5_vl" if tokens.audio is None else "qwen2_5_omni"
        is_vl = family == "qwen2_5_vl"
        return cls(
            family=family,
            tokens=tokens,
            spatial_merge_size=int(
                get(vision, "spatial_merge_size", default=get(config, "spatial_merge_size", default=2))
            ),
            position_id_per_second=float(
                get(config, "position_id_per_second", "position_id_per_seconds", default=base.position_id_per_second)
            ),
            seconds_per_chunk=float(get(config, "seconds_per_chunk", default=base.seconds_per_chunk)),
            max_positions=int(
                get(text, "max_position_embeddings", default=get(config, "max_positions", default=base.max_positions))
            ),
            pad_token_id=int(get(src, "pad", "pad_token_id", default=base.pad_token_id)),
            default_system_prompt=get(
                config, "default_system_prompt", default=VL_SYSTEM_PROMPT if is_vl else OMNI_SYSTEM_PROMPT
            ),
        )


def _read_config_json(path: Path) -> dict[str, Any]:
    file = path / "config.json" if path.is_dir() else path
    if not file.exists():
        raise MediaFileNotFoundError(
            f"No model config at {file}. Pass the checkpoint folder that holds config.json, "
            "a config dict, or None for the Qwen2.5-Omni defaults."
        )
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{file} is not valid JSON ({err}); re-download the checkpoint file.") from err


__all__ = ["MediaTokens", "ModelInputSpec", "OMNI_SYSTEM_PROMPT", "QWEN_ALIASES", "QWEN_FLOAT_MEDIA", "QWEN_IGNORED", "QWEN_MEDIA", "VL_SYSTEM_PROMPT"]
