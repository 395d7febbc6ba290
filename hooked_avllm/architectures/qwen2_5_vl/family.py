"""The Qwen2.5-VL family object: ViT + merger, the shared Qwen input pipeline, M-RoPE positions."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

import weights_conversion.qwen2_5_vl as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.qwen.parse import layout_from_ids
from hooked_avllm.architectures.qwen.prepare import prepare_inputs
from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.spec import ModelInputSpec
from hooked_avllm.architectures.qwen.vision import load_image, load_video
from hooked_avllm.architectures.qwen2_5_vl.config import config_from_hf
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.vision import Image, Video
from hooked_avllm.towers.qwen_vision import PatchMerger, QwenVisionTower


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
        grids = [g.reshape(-1, 3).long().cpu() for g in grids]  # on the host: nothing below waits for the GPU
        merge = model.cfg.vision.spatial_merge_size
        counts = [int(g.prod(-1).sum()) // merge**2 for g in grids]
        feats = model.vision_proj(model.vision(pixels[0] if len(pixels) == 1 else torch.cat(pixels), torch.cat(grids)))[0]
        return dict(zip(kinds, feats.split(counts)))


class Qwen25VL(QwenVisionInputs, Architecture):
    """Qwen2.5-VL: images and videos, no audio."""

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    hub_ids = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
    description = "Qwen2.5-VL: Qwen ViT (window attention) + patch merger + Qwen2.5 LLM with M-RoPE"
    converter = converter

    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        return config_from_hf(config_json)

    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        return self.build_vision(cfg) if cfg.vision is not None else {}

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Tensor]:
        if media.get("input_features") is not None:
            raise ValueError(f"this {model.cfg.architecture} model has no audio tower; drop the audio inputs")
        return self.encode_vision(model, media)

    def video_frames_per_group(self, cfg: AVLLMConfig) -> int:
        """A video token merges ``temporal_patch_size`` consecutive frames."""
        return cfg.vision.temporal_patch_size if cfg.vision is not None else 1

    def input_spec(self, cfg: AVLLMConfig) -> ModelInputSpec:
        """The input contract: the Qwen media names and position rule, this config's token ids and timing."""
        return ModelInputSpec.from_config(cfg, family=self.name)

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        """The layout of a Hugging Face processor's ids: media blocks found in the ids, checked against the media."""
        left = attention_mask is None or bool(attention_mask[:, -1].all())
        return layout_from_ids(input_ids, attention_mask, self.input_spec(model.cfg), media,
                               padding_side="left" if left else "right")

    def preprocessor(self, model: Any) -> PreprocessorConfig:
        """The checkpoint folder's ``preprocessor_config.json``, else Qwen2.5-Omni's defaults."""
        folder = getattr(model, "checkpoint_folder", None)
        if folder is not None and (folder / "preprocessor_config.json").exists():
            return PreprocessorConfig.from_pretrained(folder)
        return PreprocessorConfig()

    def load_video(self, model: Any, source: Any, **kwargs: Any) -> Video:
        """Frames sampled and sized by the checkpoint's preprocessing (and, with ``with_audio``, its sound)."""
        return load_video(source, self.preprocessor(model), **kwargs)

    def load_image(self, model: Any, source: Any, **kwargs: Any) -> Image:
        """An image sized by the checkpoint's pixel budget."""
        return load_image(source, self.preprocessor(model), **kwargs)

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None,
                use_audio_in_video: bool = True, **kwargs: Any):
        if model.cfg.audio is None:
            use_audio_in_video = False
        return prepare_inputs(
            model._require_tokenizer(), self.preprocessor(model), self.input_spec(model.cfg), prompt=prompt, video=video,
            audio=audio, images=images, use_audio_in_video=use_audio_in_video, **kwargs,
        )
