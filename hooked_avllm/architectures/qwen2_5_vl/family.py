"""The Qwen2.5-VL family object: ViT + merger, M-RoPE positions parsed from the placeholders."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

import weights_conversion.qwen2_5_vl as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs import ModelInputSpec, PreprocessorConfig, TokenLayout, prepare_inputs
from hooked_avllm.inputs.positions import rope_position_ids
from hooked_avllm.towers import PatchMerger, QwenVisionTower
from hooked_avllm.towers.whisper_audio import audio_token_counts


def media_metadata(media: dict[str, Any]) -> tuple[Tensor | None, Tensor | None]:
    """Audio tokens per clip (from the feature mask, or the full feature length) and the seconds
    per video frame group (1.0 when not given, as the reference assumes)."""
    features, feature_mask = media.get("input_features"), media.get("feature_attention_mask")
    counts = None
    if features is not None:
        lengths = feature_mask.sum(-1) if feature_mask is not None else torch.full((features.shape[0],), features.shape[-1])
        counts = audio_token_counts(lengths.cpu())
    seconds = media.get("video_second_per_grid")
    if media.get("video_grid_thw") is not None and seconds is None:
        seconds = torch.ones(media["video_grid_thw"].shape[0])
    return counts, seconds


class QwenVisionInputs:
    """The vision half shared by Qwen2.5-VL and Qwen2.5-Omni: the ViT + merger, run once per
    forward on images then videos (so each vision hook fires once and caches every item)."""

    @staticmethod
    def build_vision(cfg: AVLLMConfig) -> dict[str, nn.Module]:
        v = cfg.vision
        if v.out_dim != cfg.text.d_model:
            raise ValueError(f"vision out_dim {v.out_dim} must equal the LLM width {cfg.text.d_model}")
        return {"vision": QwenVisionTower(v), "vision_proj": PatchMerger(v.d_model, v.out_dim, v.spatial_merge_size, v.rms_norm_eps)}

    @staticmethod
    def encode_vision(model: Any, media: dict[str, Any]) -> dict[str, Float[Tensor, "token d_model"]]:
        pixels, grids, kinds = [], [], []
        if media.get("pixel_values") is not None:
            pixels.append(media["pixel_values"]), grids.append(media.get("image_grid_thw")), kinds.append("image")
        if media.get("pixel_values_videos") is not None:
            pixels.append(media["pixel_values_videos"]), grids.append(media.get("video_grid_thw")), kinds.append("video")
        if not pixels:
            return {}
        if model.vision is None:
            raise ValueError(f"this {model.cfg.architecture} model has no vision tower; drop the image/video inputs")
        if any(g is None for g in grids):
            raise ValueError("pixel values need their grid: pass image_grid_thw / video_grid_thw from the processor")
        grid = torch.cat([g.reshape(-1, 3) for g in grids]).long()
        feats = model.vision_proj(model.vision(torch.cat(pixels), grid))[0]
        merge = model.cfg.vision.spatial_merge_size
        counts = [int(g.reshape(-1, 3).prod(-1).sum()) // merge**2 for g in grids]
        return dict(zip(kinds, feats.split(counts)))


class Qwen25VL(QwenVisionInputs, Architecture):
    """Qwen2.5-VL: images and videos, no audio."""

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    hub_ids = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
    description = "Qwen2.5-VL: Qwen ViT (window attention) + patch merger + Qwen2.5 LLM with M-RoPE"
    converter = converter

    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        return self.build_vision(cfg) if cfg.vision is not None else {}

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Tensor]:
        if media.get("input_features") is not None:
            raise ValueError(f"this {model.cfg.architecture} model has no audio tower; drop the audio inputs")
        return self.encode_vision(model, media)

    def input_spec(self, cfg: AVLLMConfig) -> ModelInputSpec:
        """The input pipeline's view of the config: special ids, position timing, system prompt."""
        return ModelInputSpec.from_config(cfg, family=self.name)

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        counts, seconds = media_metadata(media)
        left = attention_mask is None or bool(attention_mask[:, -1].all())
        return TokenLayout.from_input_ids(
            input_ids, attention_mask, self.input_spec(model.cfg),
            image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
            video_second_per_grid=seconds, audio_token_counts=counts,
            use_audio_in_video=bool(media.get("use_audio_in_video")), padding_side="left" if left else "right",
        )

    def position_ids(
        self, model: Any, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], media: dict[str, Any]
    ) -> Int[Tensor, "3 batch pos"]:
        counts, seconds = media_metadata(media)
        cfg = model.cfg
        positions, _ = rope_position_ids(
            input_ids, attention_mask, tokens=cfg.tokens,
            image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
            video_second_per_grid=seconds, audio_token_counts=counts,
            use_audio_in_video=bool(media.get("use_audio_in_video")),
            spatial_merge_size=cfg.vision.spatial_merge_size if cfg.vision else 2,
            position_id_per_second=cfg.position_id_per_second, seconds_per_chunk=cfg.seconds_per_chunk,
        )
        return positions

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None,
                use_audio_in_video: bool = True, **kwargs: Any):
        folder = getattr(model, "checkpoint_folder", None)
        preprocessor = PreprocessorConfig.from_pretrained(folder) if folder is not None else None
        if model.cfg.audio is None:
            use_audio_in_video = False
        return prepare_inputs(
            model._require_tokenizer(), preprocessor, self.input_spec(model.cfg), prompt=prompt, video=video, audio=audio, images=images,
            use_audio_in_video=use_audio_in_video, **kwargs,
        )
