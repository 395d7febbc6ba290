"""The VideoLLaMA2.1-AV family object: which towers, how media become LLM rows, how prompts are built."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

import weights_conversion.videollama2 as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.videollama2.config import config_from_dict, config_from_hf
from hooked_avllm.architectures.videollama2.prompt import audio_segment, input_spec, prepare_videollama2, visual_segment
from hooked_avllm.components.projectors import MLPProjector
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.segments import Segment
from hooked_avllm.inputs.spec import InputSpec
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

    def video_frames_per_group(self, cfg: AVLLMConfig) -> int:
        """The STC sampler merges ``downsample[0]`` consecutive frames into one group."""
        return cfg.vision.stc.downsample[0] if cfg.vision is not None else 1

    def input_spec(self, cfg: AVLLMConfig) -> InputSpec:
        return input_spec(cfg)

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        """The layout of bare ids with media tensors: each run of a placeholder id is one item (a
        video's tokens, then its sound's when the audio run follows the video's), checked against
        the media's token counts; grid cells from the connector's grid, audio times from the fbank
        frames (10 ms each, from the clip's start), video times unknown (NaN: use ``model.prepare``
        for frame times)."""
        if not any(isinstance(v, Tensor) for v in media.values()):
            return super().layout_of(model, input_ids, attention_mask, media)
        cfg, tokens = model.cfg, model.cfg.tokens
        ids = input_ids.cpu()
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.cpu()
        items = {"image": media.get("pixel_values"), "video": media.get("pixel_values_videos"), "audio": media.get("input_features")}
        left = {kind: (int(v.shape[0]) if v is not None else 0) for kind, v in items.items()}
        kind_of = {t: k for k, t in (("image", tokens.image), ("video", tokens.video), ("audio", tokens.audio)) if t is not None}
        rows = []
        for b, (row, real) in enumerate(zip(ids, mask.bool())):
            row = row[real].tolist()
            segments, at, last_video = [], 0, False
            while at < len(row):
                kind = kind_of.get(row[at])
                end = at + 1
                while end < len(row) and row[end] == row[at]:
                    end += 1
                if kind is None:
                    segments.append(Segment.text(row[at:end]))
                    last_video = False
                else:
                    if left[kind] == 0:
                        raise InputError(
                            f"row {b} holds more {kind} placeholder runs than {kind} inputs were given "
                            f"({int(items[kind].shape[0]) if items[kind] is not None else 0}); pass the {kind} with the "
                            "ids, or build the inputs with model.prepare"
                        )
                    left[kind] -= 1
                    if kind == "audio":
                        frames = int(items["audio"].shape[1])
                        in_video = sum(1 for s in segments if s.kind == "video") - 1 if last_video else None
                        segment = audio_segment(cfg, torch.arange(frames, dtype=torch.float64) * 0.01, frames, in_video)
                    else:
                        segment = visual_segment(kind, cfg, None, row[at])
                    if segment.n_tokens != end - at:
                        raise InputError(
                            f"row {b}: a run of {end - at} {kind} placeholders, but one {kind} input gives {segment.n_tokens} "
                            "tokens; expand the placeholders as model.prepare does"
                        )
                    segments.append(segment)
                    last_video = kind == "video"
                at = end
            rows.append(segments)
        unused = {kind: n for kind, n in left.items() if n}
        if unused:
            raise InputError(f"{unused} media inputs were given beyond the placeholder runs in the ids; give one run per item")
        spec = self.input_spec(cfg)
        layout = TokenLayout.from_segments(rows, pad_id=spec.pad_token_id, padding_side="left" if bool(mask[:, -1].all()) else "right",
                                           width=ids.shape[1])
        if not torch.equal(layout.attention_mask, mask.long()):
            raise InputError("the padding of these ids is neither left nor right; pad each row on one side")
        layout.input_ids = ids.long()
        return layout

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None, **kwargs: Any):
        return prepare_videollama2(model._require_tokenizer(), model.cfg, prompt=prompt, video=video, audio=audio,
                                   images=images, **kwargs)
