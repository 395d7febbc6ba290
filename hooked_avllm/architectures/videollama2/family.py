"""The VideoLLaMA2.1-AV family object: which towers, how media become LLM rows, how prompts are built."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

import weights_conversion.videollama2 as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.videollama2.config import config_from_dict, config_from_hf
from hooked_avllm.architectures.videollama2.prompt import input_spec, prepare_videollama2
from hooked_avllm.components.projectors import MLPProjector
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import Segment, TokenLayout
from hooked_avllm.towers.beats import BEATsTower
from hooked_avllm.towers.siglip import SiglipVisionTower
from hooked_avllm.towers.stc_connector import STCConnector

# Tensor arguments of the Qwen families that mean something else here: refused, not misread.
QWEN_ONLY = ("image_grid_thw", "video_grid_thw", "video_second_per_grid", "feature_attention_mask")


class VideoLLaMA2(Architecture):
    """VideoLLaMA2.1-AV: images, videos (16 frames), audio, and videos with their sound track.

    Media tensors (what ``model.prepare`` gives): ``pixel_values`` ``[image, 3, H, W]``,
    ``pixel_values_videos`` ``[video, frame, 3, H, W]``, ``input_features`` ``[audio, frame, 128]``
    (raw Kaldi fbank of 30-s clips; BEATs normalises it). A video with audio is its video tokens
    followed by its audio tokens at the prompt's one media placeholder.
    """

    name = "videollama2"
    model_types = ("videollama2_qwen2",)
    hub_ids = ("DAMO-NLP-SG/VideoLLaMA2.1-7B-AV",)
    description = "VideoLLaMA2.1-AV: SigLIP + STC connector, BEATs + MLP projector, Qwen2 LLM with 1D rotary"
    converter = converter

    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        return config_from_hf(config_json)

    def config_from_dict(self, d: dict) -> AVLLMConfig:
        return config_from_dict(d)

    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        towers: dict[str, nn.Module] = {}
        if cfg.vision is not None:
            towers["vision"] = SiglipVisionTower(cfg.vision.siglip)
            towers["vision_proj"] = STCConnector(cfg.vision.stc)
        if cfg.audio is not None:
            towers["audio"] = BEATsTower(cfg.audio.beats)
            towers["audio_proj"] = MLPProjector(cfg.audio.beats.d_model, cfg.audio.out_dim, depth=cfg.audio.projector_depth)
        return towers

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Float[Tensor, "token d_model"]]:
        given = [name for name in QWEN_ONLY if media.get(name) is not None]
        if given:
            raise ValueError(
                f"{given} are Qwen-style media arguments; a VideoLLaMA2 model takes pixel_values [image, 3, H, W], "
                "pixel_values_videos [video, frame, 3, H, W] and input_features [audio, frame, 128] (use model.prepare)"
            )
        feats: dict[str, Tensor] = {}
        images, videos = media.get("pixel_values"), media.get("pixel_values_videos")
        if images is not None or videos is not None:
            feats.update(self._encode_visual(model, images, videos))
        fbank = media.get("input_features")
        if fbank is not None:
            if model.audio is None:
                raise ValueError(f"this {model.cfg.architecture} model has no audio tower; drop the audio inputs")
            if fbank.ndim != 3:
                raise ValueError(f"input_features must be [audio, frame, n_mels] fbank; got shape {tuple(fbank.shape)}")
            rows = model.audio_proj(model.audio(fbank))  # [audio, token, d_model]
            feats["audio"] = rows.reshape(-1, rows.shape[-1])
        return feats

    @staticmethod
    def _encode_visual(model: Any, images: Tensor | None, videos: Tensor | None) -> dict[str, Tensor]:
        """One SigLIP call over every frame (images once each, then video frames), then the STC
        connector; an image is repeated to ``num_frames`` frames after SigLIP, which equals
        repeating its pixels as the released model does."""
        if model.vision is None:
            raise ValueError(f"this {model.cfg.architecture} model has no vision tower; drop the image/video inputs")
        frames, counts = [], []
        if images is not None:
            if images.ndim != 4:
                raise ValueError(f"pixel_values must be [image, 3, H, W]; got shape {tuple(images.shape)}")
            frames.append(images), counts.append(("image", images.shape[0], 1))
        if videos is not None:
            if videos.ndim != 5:
                raise ValueError(f"pixel_values_videos must be [video, frame, 3, H, W]; got shape {tuple(videos.shape)}")
            frames.append(videos.flatten(0, 1)), counts.append(("video", videos.shape[0], videos.shape[1]))
        patches = model.vision(torch.cat(frames))  # [frames, patch, d_vision]
        parts, at = [], 0
        for kind, n_items, per_item in counts:
            part = patches[at : at + n_items * per_item].unflatten(0, (n_items, per_item))
            at += n_items * per_item
            if kind == "image":
                part = part.expand(-1, model.cfg.vision.num_frames, -1, -1)
            parts.append((kind, part))
        if len({part.shape[1] for _, part in parts}) == 1:  # one connector call: its hooks fire once
            rows = model.vision_proj(torch.cat([part for _, part in parts]))  # [item, token, d_model]
            split = rows.split([part.shape[0] for _, part in parts])
        else:
            split = [model.vision_proj(part) for _, part in parts]
        return {kind: r.reshape(-1, r.shape[-1]) for (kind, _), r in zip(parts, split)}

    def input_spec(self, cfg: AVLLMConfig):
        return input_spec(cfg)

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]):
        """Bare ids have a layout only without media (all text); media inputs come from ``prepare``,
        which knows each placeholder's origin."""
        given = sorted(k for k, v in media.items() if isinstance(v, Tensor))
        tokens = model.cfg.tokens
        placeholders = [t for t in (tokens.image, tokens.video, tokens.audio) if t is not None]
        if given or bool(torch.isin(input_ids, torch.tensor(placeholders, device=input_ids.device)).any()):
            raise InputError(
                f"{self.name} inputs with media carry their layout: build them with model.prepare(...) "
                f"(these ids hold media placeholders or come with {given})"
            )
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = [[Segment.text(ids[m.bool()].tolist())] for ids, m in zip(input_ids.cpu(), mask.cpu())]
        left = attention_mask is None or bool(mask[:, -1].all())
        pad = tokens.pad if tokens.pad is not None else 0
        layout = TokenLayout.from_segments(rows, self.input_spec(model.cfg), pad_id=pad, padding_side="left" if left else "right")
        if not torch.equal(layout.input_ids, input_ids.cpu()):
            raise InputError("the padding of these ids is neither left nor right; pad each row on one side")
        return layout

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None, **kwargs: Any):
        return prepare_videollama2(model._require_tokenizer(), model.cfg, prompt=prompt, video=video, audio=audio,
                                   images=images, **kwargs)
