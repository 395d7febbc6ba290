"""The Qwen2.5-Omni audio encoder: a Whisper-large-v3-style body run in 2-second chunks.

Mel frames are cut into chunks of ``2 * n_window`` frames; each chunk goes through two
convolutions (the second with stride 2), gets sinusoidal positions that restart at 0, and attends
only within itself. After the blocks, neighbouring frames are averaged (40 ms per token) and
``ln_post`` is applied; ``audio_proj`` (the model's projector) maps into the LLM width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import AttentionSegments, LayerNorm
from hooked_avllm.components.blocks import encoder_blocks
from hooked_avllm.components.plan_cache import cached_plan
from hooked_avllm.components.precision import exact_float32_convolutions
from hooked_avllm.components.upload import upload


@dataclass
class QwenAudioConfig:
    """The Qwen2.5-Omni Whisper-style audio encoder (``audio_config`` of the checkpoint).

    Example:
        >>> QwenAudioConfig(n_mels=128, d_model=32, n_layers=1, n_heads=4, d_mlp=64, out_dim=64).chunk_frames
        200
    """

    n_mels: int
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    out_dim: int
    n_window: int = 100
    max_source_positions: int = 1500
    act: str = "gelu"
    layer_norm_eps: float = 1e-5

    @property
    def chunk_frames(self) -> int:
        """Mel frames per attention chunk (2 s at 100 frames/s)."""
        return 2 * self.n_window


def audio_token_counts(mel_lengths: Int[Tensor, "audio"] | int) -> Int[Tensor, "audio"] | int:
    """Audio tokens produced from each clip's mel length (25 tokens per second); ints work too."""
    after_conv = (mel_lengths - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def sinusoid_table(length: int, channels: int, max_timescale: float = 10000.0) -> Float[Tensor, "length channels"]:
    """Whisper's fixed positional table: ``cat(sin(t * f), cos(t * f))`` over log-spaced f."""
    log_step = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_step * torch.arange(channels // 2).float())
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat((scaled.sin(), scaled.cos()), dim=1)


class QwenOmniAudioTower(nn.Module):
    """Chunked Whisper-style encoder.

    Hooks: ``hook_conv1`` / ``hook_conv2`` ([chunk, frame, d_model], padded chunks),
    ``hook_embed`` ([1, frame, d_model]: real frames of all clips, packed), block hooks,
    ``hook_pooled`` ([1, token, d_model]) and ``hook_out`` ([1, token, d_model], after ln_post).

    Example:
        >>> cfg = QwenAudioConfig(n_mels=128, d_model=32, n_layers=1, n_heads=4, d_mlp=64, out_dim=64)
        >>> tower = QwenOmniAudioTower(cfg)
        >>> tower(torch.randn(1, 128, 300), torch.tensor([300])).shape  # 3 s -> 75 tokens
        torch.Size([1, 75, 32])
    """

    def __init__(self, cfg: QwenAudioConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.blocks = encoder_blocks(cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_layers, cfg.act, cfg.layer_norm_eps)
        self.ln_post = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.hook_conv1 = HookPoint()  # [chunk, frame, d_model], after GELU and padding mask
        self.hook_conv2 = HookPoint()  # [chunk, frame/2, d_model], after GELU
        self.hook_embed = HookPoint()  # [1, frame/2, d_model], with positions, packed over clips
        self.hook_pooled = HookPoint()  # [1, token, d_model]
        self.hook_out = HookPoint()  # [1, token, d_model]
        self._table: Tensor | None = None

    def positional_table(self, length: int, device) -> Tensor:
        if self._table is None or self._table.device != torch.device(device) or self._table.shape[0] < length:
            self._table = sinusoid_table(max(length, self.cfg.max_source_positions), self.cfg.d_model).to(device)
        return self._table[:length]

    def forward(
        self, features: Float[Tensor, "audio n_mels frame"], mel_lengths: Int[Tensor, "audio"]
    ) -> Float[Tensor, "1 token d_model"]:
        """Encode clips given as padded mel features and their real lengths.

        Every index this needs is computed on the host from ``mel_lengths`` (give them as a CPU
        tensor to spare a wait for the GPU) and uploaded without a host wait, so the tower's
        kernels can be queued behind another tower's."""
        cfg = self.cfg
        if features.ndim != 3 or features.shape[1] != cfg.n_mels:
            raise ValueError(f"audio features must be [n_audio, {cfg.n_mels}, frames]; got {tuple(features.shape)}")
        lengths = mel_lengths.long().cpu()
        if lengths.shape != (features.shape[0],):
            raise ValueError(f"mel_lengths needs one length per audio clip ({features.shape[0]}); got shape {tuple(lengths.shape)}")
        if bool((lengths < 2).any()) or bool((lengths > features.shape[2]).any()):
            raise ValueError(f"every audio clip needs 2 to {features.shape[2]} mel frames (its padded length); "
                             f"got lengths {lengths.tolist()}")
        device, dtype = features.device, self.conv1.weight.dtype
        key = ("whisper_chunks", tuple(lengths.tolist()), features.shape[2], cfg.chunk_frames, str(device))
        plan = cached_plan(key, lambda: ChunkPlan.of(lengths.tolist(), features.shape[2], cfg.chunk_frames).to(device))

        # Clips cut into chunks of chunk_frames (the last one shorter), zero-padded: [chunk, frame, mel]
        frames = features.transpose(1, 2).reshape(-1, cfg.n_mels).index_select(0, plan.source_frames)
        chunks = frames.new_zeros(plan.n_chunks * plan.chunk_width, cfg.n_mels)
        chunks = chunks.index_copy_(0, plan.chunk_slots, frames).view(plan.n_chunks, plan.chunk_width, cfg.n_mels)

        with exact_float32_convolutions(dtype):
            x = F.gelu(self.conv1(chunks.transpose(1, 2).to(dtype))) * plan.frame_real[:, None, :]
            x = self.hook_conv1(x.transpose(1, 2)).transpose(1, 2)
            x = self.hook_conv2(F.gelu(self.conv2(x)).transpose(1, 2))  # [chunk, frame/2, d_model]
        x = x + self.positional_table(x.shape[1], device).to(x.dtype)
        x = self.hook_embed(x.flatten(0, 1).index_select(0, plan.kept)[None])  # [1, frame/2, d_model]

        for block in self.blocks:
            x = block(x, segments=plan.segments)

        # Average neighbouring frames within each clip; an odd last frame is dropped.
        pooled = self.hook_pooled((x[:, plan.first] + x[:, plan.first + 1]) / 2)
        return self.hook_out(self.ln_post(pooled))


@dataclass
class ChunkPlan:
    """Where every mel frame of a batch of clips goes in the chunked tower, computed on the host.

    ``source_frames``: the real frames in the flattened ``[audio * frame, mel]`` features, clip by
    clip; ``chunk_slots``: their slots in the flattened ``[chunk, chunk_width]`` grid;
    ``frame_real``: real frames of that grid; ``kept``: real positions of the grid after the
    stride-2 convolution; ``segments``: one attention segment per chunk over the kept positions;
    ``first``: the first of each pooled pair of kept positions.

    Example:
        >>> plan = ChunkPlan.of([5], padded=6, chunk=4)  # one clip of 5 frames: chunks of 4 and 1
        >>> plan.chunk_slots.tolist(), plan.kept.tolist(), plan.first.tolist()
        ([0, 1, 2, 3, 4], [0, 1, 2], [0])
    """

    n_chunks: int
    chunk_width: int
    source_frames: Int[Tensor, "frame"]
    chunk_slots: Int[Tensor, "frame"]
    frame_real: Bool[Tensor, "chunk chunk_width"]
    kept: Int[Tensor, "kept"]
    segments: AttentionSegments
    first: Int[Tensor, "token"]

    @classmethod
    def of(cls, mel_lengths: list[int], padded: int, chunk: int) -> "ChunkPlan":
        chunk_lengths = []
        for n in mel_lengths:
            chunk_lengths += [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
        width = max(chunk_lengths)
        lengths = torch.tensor(chunk_lengths)
        source = torch.cat([clip * padded + torch.arange(n) for clip, n in enumerate(mel_lengths)])
        frame_real = torch.arange(width)[None, :] < lengths[:, None]
        after_conv = (lengths - 1) // 2 + 1
        kept = (torch.arange((width - 1) // 2 + 1)[None, :] < after_conv[:, None]).flatten().nonzero()[:, 0]
        per_clip = [(n - 1) // 2 + 1 for n in mel_lengths]
        starts = torch.tensor([0, *per_clip[:-1]]).cumsum(0).tolist()
        first = torch.cat([s + 2 * torch.arange(int(audio_token_counts(n))) for s, n in zip(starts, mel_lengths)])
        return cls(len(chunk_lengths), width, source, frame_real.flatten().nonzero()[:, 0], frame_real, kept,
                   AttentionSegments.from_lengths(after_conv.tolist()), first)

    def to(self, device: torch.device) -> "ChunkPlan":
        """The plan's tensors on ``device``, uploaded without a host wait."""
        return ChunkPlan(self.n_chunks, self.chunk_width, upload(self.source_frames, device), upload(self.chunk_slots, device),
                         upload(self.frame_real, device), upload(self.kept, device), self.segments.to(device),
                         upload(self.first, device))
