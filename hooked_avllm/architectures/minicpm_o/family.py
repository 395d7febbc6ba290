"""The MiniCPM-o 2.6 family object: navit SigLIP + perceiver resampler (every image slice and
video frame -> 64 rows), a Whisper-medium encoder with 1-s block-causal attention + pooled MLP
projector (25 rows a second), a Qwen2 LLM with 1D rotary. MiniCPM-V 2.6 (``minicpmv``) is the same
family without the audio path.

Media tensors (what ``model.prepare`` gives and ``forward`` takes):

- ``pixel_values`` ``[patch, 3 * 14 * 14]``: every slice's patches, slice after slice in sequence
  order, row-major within a slice; ``tgt_sizes`` ``[slice, 2]``: each slice's patch grid (h, w);
  ``video_slices`` ``[slice]`` (bool, optional): the slices that are video frames;
- ``input_features`` ``[piece, 80, frame]``: 80-bin log-mel pieces of at most 30 s, right-padded
  with 0.0; ``feature_lens`` ``[piece]``: their real frames.

Example:
    >>> from hooked_avllm.architectures import architecture_for
    >>> family = architecture_for("minicpmo")
    >>> family.name, family.input_spec(family.config_from_hf(tiny_config_json())).media_names[:2]
    ('minicpm_o', ('pixel_values', 'tgt_sizes'))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

import weights_conversion.minicpm_o as converter
from hooked_avllm.architectures.base import Architecture
from hooked_avllm.architectures.minicpm_o.config import (
    MiniCPMTokenIds,
    config_from_dict,
    config_from_hf,
    tiny_config_json,
    tokens_from_tokenizer_config,
)
from hooked_avllm.architectures.minicpm_o.frame_grid import minicpm_frame_grid
from hooked_avllm.architectures.minicpm_o.layout import frames_from_video_slices, layout_from_ids
from hooked_avllm.architectures.minicpm_o.prompt import prepare_minicpm
from hooked_avllm.architectures.minicpm_o.reference_format import released_data
from hooked_avllm.config import AVLLMConfig
from hooked_avllm.inputs.frame_grid import FrameGrid
from hooked_avllm.inputs.layout import TokenLayout
from hooked_avllm.inputs.spec import InputSpec
from hooked_avllm.inputs.tokenizer import load_tokenizer
from hooked_avllm.towers.navit_siglip import NavitSiglipTower
from hooked_avllm.towers.resampler import Resampler
from hooked_avllm.towers.whisper_encoder import PooledAudioProjector, WhisperEncoderTower

MEDIA_NAMES = ("pixel_values", "tgt_sizes", "video_slices", "input_features", "feature_lens")


@dataclass(frozen=True)
class MiniCPMInputSpec(InputSpec):
    """MiniCPM-o's input contract: its media (see the module docstring), 1D positions, and batches
    whose audio pieces are padded to the longest piece (as the released model batches them)."""

    family: str = "minicpm_o"
    media_names: tuple[str, ...] = MEDIA_NAMES
    float_media: tuple[str, ...] = ("pixel_values", "input_features")
    n_queries: int = 64
    tokens: MiniCPMTokenIds = field(default_factory=MiniCPMTokenIds)

    def batch_media(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in MEDIA_NAMES:
            parts = [item[name] for item in items if item.get(name) is not None]
            if name == "video_slices" and parts:  # inputs without it have image slices only
                parts = [item[name] if item.get(name) is not None else torch.zeros(len(item["tgt_sizes"]), dtype=torch.bool)
                         for item in items if item.get("tgt_sizes") is not None]
            if not parts:
                continue
            if name == "input_features":
                frames = max(p.shape[-1] for p in parts)
                parts = [torch.nn.functional.pad(p, (0, frames - p.shape[-1])) for p in parts]
            out[name] = torch.cat(parts)
        return out

    def reference_kwargs(self, inputs: Any) -> dict[str, Any]:
        """The released model's ``data`` dict (``MiniCPMO.forward(data)`` / ``get_vllm_embedding``):
        per row, its slices as ``[3, 14, L * 14]`` strips, ``tgt_sizes``, ``image_bound`` and
        ``audio_bounds`` (``[n, 2]``, body start and end), and the audio pieces with each row's
        ``audio_feature_lens``."""
        return released_data(inputs, self)


class MiniCPMO(Architecture):
    """MiniCPM-o 2.6 (and MiniCPM-V 2.6): images (sliced), videos (frames; with their sound as
    1-s units), audio (see the module docstring)."""

    name = "minicpm_o"
    model_types = ("minicpmo", "minicpmv")
    hub_ids = ("openbmb/MiniCPM-o-2_6", "openbmb/MiniCPM-V-2_6")
    description = ("MiniCPM-o 2.6: navit SigLIP + perceiver resampler (64 queries a slice), Whisper-medium with 1-s "
                   "block-causal attention + pooled MLP, Qwen2 LLM with 1D rotary (MiniCPM-V 2.6: without audio)")
    converter = converter

    # ------------------------------------------------------------------ config
    def config_from_hf(self, config_json: dict) -> AVLLMConfig:
        return config_from_hf(config_json)

    def config_from_checkpoint(self, config_json: dict, folder: Path) -> AVLLMConfig:
        """``config.json`` with the layout ids its ``tokenizer_config.json`` declares (when present)."""
        tokenizer_config = folder / "tokenizer_config.json"
        tokens = tokens_from_tokenizer_config(json.loads(tokenizer_config.read_text())) if tokenizer_config.exists() else None
        return config_from_hf(config_json, tokens)

    def config_from_dict(self, d: dict) -> AVLLMConfig:
        return config_from_dict(d)

    def build_towers(self, cfg: AVLLMConfig) -> dict[str, nn.Module]:
        towers: dict[str, nn.Module] = {}
        if cfg.vision is not None:
            if cfg.vision.resampler.d_model != cfg.text.d_model or cfg.vision.resampler.kv_dim != cfg.vision.navit.d_model:
                raise ValueError("the resampler must map the SigLIP width to the LLM width")
            towers["vision"], towers["vision_proj"] = NavitSiglipTower(cfg.vision.navit), Resampler(cfg.vision.resampler)
        if cfg.audio is not None:
            if cfg.audio.out_dim != cfg.text.d_model:
                raise ValueError(f"the audio projector's out_dim {cfg.audio.out_dim} must equal the LLM width {cfg.text.d_model}")
            towers["audio"], towers["audio_proj"] = WhisperEncoderTower(cfg.audio), PooledAudioProjector(cfg.audio)
        return towers

    # ------------------------------------------------------------------ inputs
    def input_spec(self, cfg: AVLLMConfig) -> MiniCPMInputSpec:
        tokens = cfg.tokens
        return MiniCPMInputSpec(
            pad_token_id=tokens.pad if tokens.pad is not None else 0, max_positions=cfg.text.max_position_embeddings,
            n_queries=cfg.vision.resampler.n_queries if cfg.vision is not None else 64, tokens=tokens,
        )

    def encode_media(self, model: Any, media: dict[str, Any]) -> dict[str, Float[Tensor, "token d_model"]]:
        feats: dict[str, Tensor] = {}
        pixels, sizes = media.get("pixel_values"), media.get("tgt_sizes")
        if pixels is not None:
            if model.vision is None:
                raise ValueError(f"this {model.cfg.architecture} model has no vision tower; drop the image/video inputs")
            if sizes is None:
                raise ValueError("pixel_values need tgt_sizes [slice, 2] (each slice's patch grid); use model.prepare")
            rows = model.vision_proj(model.vision(pixels, sizes), sizes)  # [slice, query, d_model]
            video = media.get("video_slices")
            video = torch.zeros(rows.shape[0], dtype=torch.bool) if video is None else video.bool().cpu()
            if video.shape != (rows.shape[0],):
                raise ValueError(f"video_slices must mark each of the {rows.shape[0]} slices; got shape {tuple(video.shape)}")
            for kind, chosen in (("image", ~video), ("video", video)):
                if bool(chosen.any()):
                    feats[kind] = rows[chosen.to(rows.device)].flatten(0, 1)
        features = media.get("input_features")
        if features is not None:
            if model.audio is None:
                raise ValueError(f"this {model.cfg.architecture} model has no audio tower; drop the audio inputs")
            lens = media.get("feature_lens")
            if lens is None:
                lens = torch.full((features.shape[0],), features.shape[-1], dtype=torch.long)
            feats["audio"] = model.audio_proj(model.audio(features, lens), lens)[0]
        return feats

    def layout_of(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, media: dict[str, Any]) -> TokenLayout:
        """The layout of bare ids (the bounds the released processor scans for), with every image
        bound an image slice unless ``video_slices`` marks it a frame: frames outside ``<unit>``
        seconds (a video without its sound) become one video per run of frames, their times unknown
        (NaN; ``model.prepare`` knows them)."""
        spec = self.input_spec(model.cfg)
        video = media.get("video_slices")
        frames = frames_from_video_slices(input_ids, attention_mask, spec.tokens, video) if video is not None else None
        return layout_from_ids(input_ids, attention_mask, spec.tokens, n_queries=spec.n_queries, frames=frames,
                               pad_id=spec.pad_token_id)

    def video_frame_grid(self, model: Any, inputs: Any, scores: Tensor, batch: int = 0, video: int = 0) -> FrameGrid:
        """Resampler rows have no place on the frame: their scores are routed onto each frame's
        patches through the resampler's attention (:mod:`~hooked_avllm.architectures.minicpm_o.frame_grid`)."""
        return minicpm_frame_grid(model, inputs, scores, batch, video)

    def load_tokenizer(self, folder: Path) -> Any:
        """The Qwen2 BPE with MiniCPM-o's added tokens; its ``tokenizer_class`` names the checkpoint's
        own code (never run): the files load as ``Qwen2TokenizerFast`` / ``Qwen2Tokenizer``."""
        fast = (folder / "tokenizer.json").exists()
        return load_tokenizer(folder, tokenizer_class="Qwen2TokenizerFast" if fast else "Qwen2Tokenizer")

    def prepare(self, model: Any, prompt: Any, video: Any = None, audio: Any = None, images: Any = None, **kwargs: Any):
        return prepare_minicpm(model, self.input_spec(model.cfg), prompt=prompt, video=video, audio=audio, images=images,
                               **kwargs)


__all__ = ["MEDIA_NAMES", "MiniCPMInputSpec", "MiniCPMO", "tiny_config_json"]
