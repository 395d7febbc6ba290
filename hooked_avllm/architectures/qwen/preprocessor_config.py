"""Preprocessing settings (audio features, pixel budgets, frame sampling) read from a checkpoint.

The values come from the checkpoint's ``preprocessor_config.json`` (and
``video_preprocessor_config.json`` where present); anything missing falls back to the documented
defaults of Qwen2.5-Omni and its reference pipeline (qwen-omni-utils).

Example:
    >>> cfg = PreprocessorConfig.from_pretrained("/path/to/Qwen2.5-Omni-7B")   # doctest: +SKIP
    >>> cfg.n_fft, cfg.hop_length, cfg.feature_size                             # doctest: +SKIP
    (400, 160, 128)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hooked_avllm.inputs.audio import WhisperFeatureConfig
from hooked_avllm.inputs.errors import InputError, MediaFileNotFoundError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessorConfig(WhisperFeatureConfig):
    """Everything the media pipeline needs to know; defaults are those of Qwen2.5-Omni.

    Audio (Whisper log-mel): ``sampling_rate``, ``feature_size`` (mel bins), ``n_fft``,
    ``hop_length``, ``chunk_length`` (seconds the features are padded to), ``n_samples`` and
    ``nb_max_frames`` (the same limit in samples and frames), ``dither``, ``padding_value``.
    Images: ``image_mean``/``image_std``, ``min_pixels``/``max_pixels`` (after smart resize),
    ``patch_size``, ``temporal_patch_size``, ``merge_size``, ``max_aspect_ratio``.
    Video (qwen-omni-utils): ``video_fps``, ``video_min_frames``/``video_max_frames``,
    ``video_min_pixels``/``video_max_pixels`` per frame and ``video_total_pixels`` per video.
    """

    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 16384 * 28 * 28
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    max_aspect_ratio: float = 200.0
    video_fps: float = 2.0
    video_min_frames: int = 4
    video_max_frames: int = 768
    video_min_pixels: int = 128 * 28 * 28
    video_max_pixels: int = 768 * 28 * 28
    video_total_pixels: int = int(128000 * 28 * 28 * 0.9)
    source: str | None = field(default=None, compare=False)

    @property
    def resize_factor(self) -> int:
        """Side lengths are multiples of this (patch_size * merge_size = 28)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> "PreprocessorConfig":
        """Build from a hub-style dict; unknown keys are ignored, missing ones keep the defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in known}
        size = values.get("size") or {}
        if "min_pixels" not in values and size.get("shortest_edge"):
            kwargs["min_pixels"] = size["shortest_edge"]
        if "max_pixels" not in values and size.get("longest_edge"):
            kwargs["max_pixels"] = size["longest_edge"]
        for key in ("image_mean", "image_std"):
            if key in kwargs:
                kwargs[key] = tuple(float(x) for x in kwargs[key])
        if "n_samples" not in values and "chunk_length" in values:
            kwargs["n_samples"] = int(kwargs["chunk_length"]) * int(kwargs.get("sampling_rate", cls.sampling_rate))
        if "nb_max_frames" not in values:
            n_samples = kwargs.get("n_samples", cls.n_samples)
            kwargs["nb_max_frames"] = n_samples // int(kwargs.get("hop_length", cls.hop_length))
        kwargs["source"] = source
        return cls(**kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "PreprocessorConfig":
        """Read ``preprocessor_config.json`` from a checkpoint folder (or the file itself).

        A ``video_preprocessor_config.json`` beside it supplies the per-frame pixel budget
        (its ``size``/``min_pixels``/``max_pixels``/``fps``) when present.
        """
        path = Path(path)
        file = path / "preprocessor_config.json" if path.is_dir() else path
        if not file.exists():
            raise MediaFileNotFoundError(
                f"No preprocessor config at {file}. Pass the checkpoint folder that holds "
                "preprocessor_config.json, or use PreprocessorConfig() for the Qwen2.5-Omni defaults."
            )
        try:
            values = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{file} is not valid JSON ({err}); re-download the checkpoint file.") from err
        config = cls.from_dict(values, source=str(file))
        video_file = file.parent / "video_preprocessor_config.json"
        if video_file.exists():
            video = json.loads(video_file.read_text())
            size = video.get("size") or {}
            updates = {
                "video_min_pixels": video.get("min_pixels", size.get("shortest_edge")),
                "video_max_pixels": video.get("max_pixels", size.get("longest_edge")),
                "video_fps": video.get("fps"),
            }
            config = dataclasses.replace(config, **{k: v for k, v in updates.items() if v is not None})
        return config


__all__ = ["CLIP_MEAN", "CLIP_STD", "PreprocessorConfig"]
