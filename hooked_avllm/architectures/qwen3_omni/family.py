"""The Qwen3-Omni thinker family object: AuT audio, a SigLIP2-style ViT whose DeepStack taps are
added to the visual positions after the first decoder layers, and a Qwen3-MoE LLM with
interleaved M-RoPE."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

import weights_conversion.qwen3_omni as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.qwen3_omni.config import config_from_dict, config_from_hf
from hooked_avllm.architectures.qwen3_omni.inputs import QWEN3_PREPROCESSOR, QWEN3_RULES
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.architectures.qwen.parse import layout_from_ids
from hooked_avllm.architectures.qwen.prepare import prepare_inputs
from hooked_avllm.architectures.qwen.preprocessor_config import PreprocessorConfig
from hooked_avllm.architectures.qwen.spec import ModelInputSpec
from hooked_avllm.architectures.qwen.vision import load_image, load_video
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.vision import Image, Video
from hooked_avllm.towers.aut_audio import AuTAudioTower, AuTOutputHead
from hooked_avllm.towers.qwen3_vision import Qwen3VisionProjector, Qwen3VisionTower


def audio_lengths(media: dict[str, Any]) -> Int[Tensor, "audio"] | None:
    """Mel frames per clip: the feature mask's sums, or the full feature length."""
    features, mask = media.get("input_features"), media.get("feature_attention_mask")
    if features is None:
        return None
    if mask is not None:
        return mask.sum(-1).long()
    return torch.full((features.shape[0],), features.shape[-1], dtype=torch.long, device=features.device)


class Qwen3Omni(Architecture):
    """Qwen3-Omni's thinker: text, images, videos, audio and videos with their sound track.

    Media tensors are those of its processor: ``pixel_values`` / ``pixel_values_videos``
    (flattened 16-pixel patches) with ``image_grid_thw`` / ``video_grid_thw`` and
    ``video_second_per_grid``; ``input_features`` ``[audio, 128, frames]`` with
    ``feature_attention_mask``. Vision returns, beside the rows at the visual positions, one
    DeepStack row set per tapped ViT layer, added after decoder layers 0, 1, 2, ... through
    ``blocks.{i}.hook_injection``.
    """

    name = "qwen3_omni"
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    hub_ids = ("Qwen/Qwen3-Omni-30B-A3B-Instruct", "Qwen/Qwen3-Omni-30B-A3B-Thinking", "Qwen/Qwen3-Omni-30B-A3B-Captioner")
    description = "Qwen3-Omni thinker: AuT audio encoder + SigLIP2-style ViT with DeepStack + Qwen3-MoE LLM (interleaved M-RoPE)"
    converter = converter

    # ------------------------------------------------------------------ config and composition
    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        return config_from_hf(config_json)

    def config_from_dict(self, d: dict) -> AVLLMConfig:
        return config_from_dict(d)

    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        towers: dict[str, nn.Module] = {}
        d_model = cfg.text.d_model
        if cfg.vision is not None:
            if cfg.vision.out_dim != d_model:
                raise ValueError(f"vision out_hidden_size {cfg.vision.out_dim} must equal the LLM width {d_model}")
            if len(cfg.vision.deepstack_visual_indexes) > cfg.text.n_layers:
                raise ValueError(
                    f"{len(cfg.vision.deepstack_visual_indexes)} DeepStack taps need as many decoder layers; the LLM has {cfg.text.n_layers}"
                )
            towers["vision"], towers["vision_proj"] = Qwen3VisionTower(cfg.vision), Qwen3VisionProjector(cfg.vision)
        if cfg.audio is not None:
            if cfg.audio.out_dim != d_model:
                raise ValueError(f"audio output_dim {cfg.audio.out_dim} must equal the LLM width {d_model}")
            towers["audio"], towers["audio_proj"] = AuTAudioTower(cfg.audio), AuTOutputHead(cfg.audio)
        return towers

    def injection_layers(self, cfg: AVLLMConfig) -> tuple[int, ...]:
        """DeepStack: one layer per tapped ViT layer, from layer 0 on."""
        return tuple(range(len(cfg.vision.deepstack_visual_indexes))) if cfg.vision is not None else ()

    # ------------------------------------------------------------------ media
    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Any]:
        feats: dict[str, Any] = {}
        lengths = audio_lengths(media)
        if lengths is not None:
            if model.audio is None:
                raise ValueError(f"this {model.cfg.architecture} model has no audio tower; drop the audio inputs")
            feats["audio"] = model.audio_proj(model.audio(media["input_features"], lengths))[0]
        feats.update(self.encode_vision(model, media))
        return feats

    @staticmethod
    def encode_vision(model: Any, media: dict[str, Any]) -> dict[str, Any]:
        pixels, grids, kinds = [], [], []
        for kind, pixel_key, grid_key in (("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")):
            if media.get(pixel_key) is not None:
                if media.get(grid_key) is None:
                    raise ValueError(f"{pixel_key} needs its grid: pass {grid_key} from the processor (or use model.prepare)")
                pixels.append(media[pixel_key]), grids.append(media[grid_key].reshape(-1, 3).long()), kinds.append(kind)
        if not pixels:
            return {}
        if model.vision is None:
            raise ValueError(f"this {model.cfg.architecture} model has no vision tower; drop the image/video inputs")
        hidden, taps = model.vision(torch.cat(pixels), torch.cat(grids))
        main, deepstack = model.vision_proj(hidden, taps)
        merge = model.cfg.vision.spatial_merge_size
        counts = [int(g.prod(-1).sum()) // merge**2 for g in grids]
        out: dict[str, Any] = dict(zip(kinds, main[0].split(counts)))
        out["injections"] = [(layer, kind, rows) for layer, tap in enumerate(deepstack)
                             for kind, rows in zip(kinds, tap.split(counts))]
        return out

    # ------------------------------------------------------------------ inputs
    def video_frames_per_group(self, cfg: AVLLMConfig) -> int:
        """A video token merges ``temporal_patch_size`` consecutive frames."""
        return cfg.vision.temporal_patch_size if cfg.vision is not None else 1

    def input_spec(self, cfg: AVLLMConfig) -> ModelInputSpec:
        """The Qwen input contract with Qwen3-Omni's rules (AuT counts, time-ordered audio-in-video,
        float positions), no default system prompt and its padding id."""
        spec = ModelInputSpec.from_config(cfg, family=self.name)
        return dataclasses.replace(spec, rules=QWEN3_RULES, default_system_prompt=None,
                                   pad_token_id=cfg.tokens.pad if cfg.tokens.pad is not None else spec.pad_token_id)

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        """The layout of the processor's ids: media blocks found in the ids, checked against the media."""
        left = attention_mask is None or bool(attention_mask[:, -1].all())
        return layout_from_ids(input_ids, attention_mask, self.input_spec(model.cfg), media,
                               padding_side="left" if left else "right")

    def preprocessor(self, model: Any) -> PreprocessorConfig:
        """The checkpoint's ``preprocessor_config.json``, else Qwen3-Omni's released settings."""
        folder = getattr(model, "checkpoint_folder", None)
        if folder is not None and (folder / "preprocessor_config.json").exists():
            return PreprocessorConfig.from_pretrained(folder)
        return QWEN3_PREPROCESSOR

    def load_video(self, model: Any, source: Any, **kwargs: Any) -> Video:
        """Frames sampled and sized by the checkpoint's preprocessing (and, with ``with_audio``, its sound)."""
        return load_video(source, self.preprocessor(model), **kwargs)

    def load_image(self, model: Any, source: Any, **kwargs: Any) -> Image:
        """An image sized by the checkpoint's pixel budget."""
        return load_image(source, self.preprocessor(model), **kwargs)

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None,
                use_audio_in_video: bool = True, audio_padding: str = "processor_longest", **kwargs: Any):
        preprocessor = self.preprocessor(model)
        if model.cfg.audio is None:
            use_audio_in_video = False
        return prepare_inputs(
            model._require_tokenizer(), preprocessor, self.input_spec(model.cfg), prompt=prompt, video=video, audio=audio,
            images=images, use_audio_in_video=use_audio_in_video, audio_padding=audio_padding, **kwargs,
        )
