"""The Qwen3-Omni thinker family object: AuT audio, a SigLIP2-style ViT whose DeepStack taps are
added to the visual positions after the first decoder layers, and a Qwen3-MoE LLM with
interleaved M-RoPE."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

import weights_conversion.qwen3_omni as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.qwen3_omni.config import config_from_dict
from hooked_avllm.architectures.qwen3_omni.inputs import QWEN3_PREPROCESSOR, QWEN3_RULES
from hooked_avllm.architectures.qwen3_omni.positions import qwen3_position_ids
from hooked_avllm.components import (
    Attention,
    GatedMLP,
    InjectionBlock,
    RMSNorm,
    SparseMoE,
    TransformerBlock,
)
from hooked_avllm.components.rotary import Rotary, rotary_mrope_interleaved
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs import (
    ModelInputSpec,
    PreprocessorConfig,
    TokenLayout,
    prepare_inputs,
)
from hooked_avllm.towers.aut_audio import AuTAudioTower, AuTOutputHead, aut_token_counts
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

    def build_block(self, cfg: AVLLMConfig, layer: int) -> nn.Module:
        t = cfg.text
        attn = Attention(t.d_model, t.n_heads, t.n_kv_heads, t.d_head, qkv_bias=False, out_bias=False,
                         qk_norm_eps=t.rms_norm_eps if t.qk_norm else None)
        if t.is_moe_layer(layer):
            mlp: nn.Module = SparseMoE(t.d_model, t.d_expert, t.n_experts, t.top_k, norm_topk_prob=t.norm_topk_prob, act=t.act)
        else:
            mlp = GatedMLP(t.d_model, t.d_mlp, act=t.act)
        receives = cfg.vision is not None and layer < len(cfg.vision.deepstack_visual_indexes)
        block = InjectionBlock if receives else TransformerBlock
        return block(RMSNorm(t.d_model, t.rms_norm_eps), attn, RMSNorm(t.d_model, t.rms_norm_eps), mlp)

    def rotary(self, cfg: AVLLMConfig, position_ids: Float[Tensor, "rows batch pos"]) -> Rotary:
        t = cfg.text
        if position_ids.shape[0] == 1:
            position_ids = position_ids.expand(3, -1, -1)
        return rotary_mrope_interleaved(position_ids, t.d_head, t.rope_theta, t.mrope_section)

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
    def input_spec(self, cfg: AVLLMConfig) -> ModelInputSpec:
        spec = ModelInputSpec.from_config(cfg, family=self.name)
        return dataclasses.replace(spec, rules=QWEN3_RULES, default_system_prompt=None,
                                   pad_token_id=cfg.tokens.pad if cfg.tokens.pad is not None else spec.pad_token_id)

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        lengths = audio_lengths(media)
        left = attention_mask is None or bool(attention_mask[:, -1].all())
        return TokenLayout.from_input_ids(
            input_ids, attention_mask, self.input_spec(model.cfg),
            image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
            video_second_per_grid=self._seconds(media), audio_token_counts=aut_token_counts(lengths.cpu()) if lengths is not None else None,
            use_audio_in_video=bool(media.get("use_audio_in_video")), padding_side="left" if left else "right",
        )

    @staticmethod
    def _seconds(media: dict[str, Any]) -> Tensor | None:
        seconds = media.get("video_second_per_grid")
        if media.get("video_grid_thw") is not None and seconds is None:
            seconds = torch.ones(media["video_grid_thw"].shape[0])
        return seconds

    def position_ids(
        self, model: Any, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], media: dict[str, Any]
    ) -> Float[Tensor, "3 batch pos"]:
        lengths = audio_lengths(media)
        cfg = model.cfg
        positions, _ = qwen3_position_ids(
            input_ids, attention_mask, cfg.tokens,
            image_grid_thw=media.get("image_grid_thw"), video_grid_thw=media.get("video_grid_thw"),
            video_second_per_grid=self._seconds(media),
            audio_token_counts=aut_token_counts(lengths.cpu()) if lengths is not None else None,
            spatial_merge_size=cfg.vision.spatial_merge_size if cfg.vision else 2,
            position_id_per_second=cfg.position_id_per_second,
        )
        return positions

    def preprocessor(self, model: Any) -> PreprocessorConfig:
        """The checkpoint's ``preprocessor_config.json``, else Qwen3-Omni's released settings."""
        folder = getattr(model, "checkpoint_folder", None)
        if folder is not None and (folder / "preprocessor_config.json").exists():
            return PreprocessorConfig.from_pretrained(folder)
        return QWEN3_PREPROCESSOR

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None,
                use_audio_in_video: bool = True, audio_padding: str = "processor_longest", **kwargs: Any):
        preprocessor = self.preprocessor(model)
        if model.cfg.audio is None:
            use_audio_in_video = False
        return prepare_inputs(
            model._require_tokenizer(), preprocessor, self.input_spec(model.cfg), prompt=prompt, video=video, audio=audio,
            images=images, use_audio_in_video=use_audio_in_video, audio_padding=audio_padding, **kwargs,
        )
