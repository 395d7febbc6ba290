"""The Qwen2.5-Omni thinker family object: Qwen2.5-VL's vision half + the Whisper-style audio tower."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

import weights_conversion.qwen2_5_omni as converter
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf
from hooked_avllm.architectures.qwen2_5_vl import Qwen25VL
from hooked_avllm.components.hook_state import towers_unwatched
from hooked_avllm.components.tower_overlap import overlapped
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.towers.whisper_audio import QwenOmniAudioTower


class AudioProjector(nn.Module):
    """The audio tower's output projection into the LLM width (``proj`` in Qwen2.5-Omni)."""

    def __init__(self, d_audio: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(d_audio, out_dim)
        self.hook_out = HookPoint()  # [1, token, out_dim]: one row per audio placeholder token

    def forward(self, x: Float[Tensor, "1 token d_audio"]) -> Float[Tensor, "1 token out_dim"]:
        return self.hook_out(self.proj(x))


class Qwen25Omni(Qwen25VL):
    """Qwen2.5-Omni's thinker: images, videos, audio and audio-in-video."""

    name = "qwen2_5_omni"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    hub_ids = ("Qwen/Qwen2.5-Omni-3B", "Qwen/Qwen2.5-Omni-7B")
    description = "Qwen2.5-Omni thinker: Qwen ViT + Whisper-style audio encoder + Qwen2.5 LLM with TMRoPE"
    converter = converter

    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        return config_from_hf(config_json)

    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        towers = super().build_towers(cfg)
        if cfg.audio is not None:
            if cfg.audio.out_dim != cfg.text.d_model:
                raise ValueError(f"audio out_dim {cfg.audio.out_dim} must equal the LLM width {cfg.text.d_model}")
            towers["audio"] = QwenOmniAudioTower(cfg.audio)
            towers["audio_proj"] = AudioProjector(cfg.audio.d_model, cfg.audio.out_dim)
        return towers

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Tensor]:
        features = media.get("input_features")
        if features is None:
            return self.encode_vision(model, media)
        if model.audio is None:
            raise ValueError(f"this {model.cfg.architecture} model has no audio tower; drop the audio inputs")

        mask = media.get("feature_attention_mask")
        # the lengths on the host before any tower runs: the audio tower then never waits for the GPU
        lengths = (mask.sum(-1) if mask is not None else torch.full((features.shape[0],), features.shape[-1])).cpu()

        def audio() -> Tensor:
            return model.audio_proj(model.audio(features, lengths))[0]

        # on a GPU with nothing hooked in the towers, the vision tower (few, long kernels) is queued
        # first and the audio tower (many small ones) behind it (components/tower_overlap.py)
        audio_rows, vision = overlapped(audio, lambda: self.encode_vision(model, media), features.device,
                                        allowed=lambda: towers_unwatched(model.audio, model.audio_proj, model.vision,
                                                                         getattr(model, "vision_proj", None)))
        return {"audio": audio_rows, **vision}
