"""Qwen3-Omni's AuT audio encoder: a Conv2d stem over 1-second chunks, then windowed attention.

The forward pass, per call (``features`` [clip, n_mels, frame], ``lengths`` [clip]):

1. every clip is cut into chunks of ``2 * n_window`` mel frames (100 = 1 s; the last chunk of a
   clip may be shorter) and **every** chunk of the call is zero-padded to the longest chunk of the
   call (that is ``2 * n_window`` as soon as one clip is at least that long);
2. the stem, over the (mel, time) plane of each chunk: three ``3x3`` stride-2 Conv2d
   (1 -> C -> C -> C, each followed by exact GELU), then ``[C, mel/8]`` is flattened per time
   step (channel-major) and ``conv_out`` (no bias) maps it to ``d_model``: 13 tokens per full
   chunk (80 ms per token);
3. sinusoidal positions restart at 0 in every chunk; the tokens that the chunk's real frames
   produce are kept and the clips are packed into one row ``[1, token, d_model]``;
4. pre-LN blocks whose attention is restricted to windows of ``n_window_infer`` frames
   (``window_tokens`` = 13 * (n_window_infer // (2 * n_window)) tokens = 8 s for the released
   model), counted from the start of each clip (the last window of a clip is shorter);
5. ``ln_post``. :class:`AuTOutputHead` (the model's ``audio_proj``) then applies
   ``proj2(act(proj1(x)))`` into the LLM width.

Two properties of the reference are kept on purpose, because the released model was run this way:

* the stem's padding is not masked between the convolutions, so the last token of a chunk shorter
  than the padded length sees ``gelu(bias)`` of the padded positions (not zeros): a short clip's
  last token depends on the longest chunk of the call (a clip shorter than ``2 * n_window`` frames
  encodes slightly differently alone and next to a longer clip);
* the token count of a full chunk is that of ``2 * n_window = 100`` frames, 13 (the reference
  hard-codes it; :func:`aut_token_counts` computes it from ``n_window``, which agrees at 50).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import AttentionSegments, LayerNorm
from hooked_avllm.components.blocks import encoder_blocks
from hooked_avllm.components.mlp import ACTIVATIONS, activation
from hooked_avllm.components.precision import exact_float32_convolutions
from hooked_avllm.towers.whisper_audio import sinusoid_table

# transformers' Qwen3OmniMoeAudioEncoderConfig name -> (our field, transformers' default)
HF_NAMES: dict[str, tuple[str, Any]] = {
    "num_mel_bins": ("n_mels", 128),
    "d_model": ("d_model", 1280),
    "encoder_layers": ("n_layers", 32),
    "encoder_attention_heads": ("n_heads", 20),
    "encoder_ffn_dim": ("d_mlp", 5120),
    "output_dim": ("out_dim", 3584),
    "downsample_hidden_size": ("downsample_hidden_size", 480),
    "n_window": ("n_window", 50),
    "n_window_infer": ("n_window_infer", 800),
    "conv_chunksize": ("conv_chunksize", 500),
    "max_source_positions": ("max_source_positions", 1500),
    "activation_function": ("act", "gelu"),
}


def _halve(n):
    """Output length of a kernel-3, stride-2, padding-1 convolution: ``ceil(n / 2)``."""
    return (n - 1) // 2 + 1


def _stem_length(n):
    """Length after the three stride-2 convolutions."""
    return _halve(_halve(_halve(n)))


@dataclass
class AuTConfig:
    """Shape of the AuT encoder (defaults: Qwen3-Omni-30B-A3B's ``thinker_config.audio_config``).

    ``out_dim`` defaults to the released model's 2048; transformers' config class (and so
    :meth:`from_hf` for a config that omits ``output_dim``) defaults to 3584.

    Example:
        >>> cfg = AuTConfig.from_hf({"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 4,
        ...                          "encoder_ffn_dim": 64, "output_dim": 48, "downsample_hidden_size": 8})
        >>> cfg.d_head, cfg.tokens_per_chunk, cfg.window_tokens, cfg.stem_mels
        (8, 13, 104, 16)
        >>> AuTConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    n_mels: int = 128
    d_model: int = 1280
    n_layers: int = 32
    n_heads: int = 20
    d_mlp: int = 5120
    out_dim: int = 2048
    downsample_hidden_size: int = 480
    n_window: int = 50
    n_window_infer: int = 800
    conv_chunksize: int = 500
    max_source_positions: int = 1500
    act: str = "gelu"
    layer_norm_eps: float = 1e-5  # nn.LayerNorm's default, which every reference norm uses

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"AuTConfig.{f.name} must be a positive int; got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"AuTConfig.d_model={self.d_model} must be a multiple of n_heads={self.n_heads}; change one of them"
            )
        if self.d_model % 2 or self.d_model < 4:
            raise ValueError(
                f"AuTConfig.d_model={self.d_model} must be even and >= 4 (half sin, half cos position channels)"
            )
        if self.n_window_infer < self.chunk_frames:
            raise ValueError(
                f"AuTConfig.n_window_infer={self.n_window_infer} must be at least 2 * n_window={self.chunk_frames} "
                "(an attention window holds whole chunks); raise n_window_infer"
            )
        if self.tokens_per_chunk > self.max_source_positions:
            raise ValueError(
                f"AuTConfig.max_source_positions={self.max_source_positions} is below the {self.tokens_per_chunk} "
                f"tokens of a {self.chunk_frames}-frame chunk; raise it"
            )
        if self.act not in ACTIVATIONS:
            raise ValueError(f"AuTConfig.act={self.act!r} is not supported; use one of {sorted(ACTIVATIONS)}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def chunk_frames(self) -> int:
        """Mel frames per stem chunk (100 = 1 s)."""
        return 2 * self.n_window

    @property
    def tokens_per_chunk(self) -> int:
        """Tokens from one full chunk (13 for 100 frames)."""
        return _stem_length(self.chunk_frames)

    @property
    def window_tokens(self) -> int:
        """Tokens per attention window: whole chunks of ``n_window_infer`` frames (floored)."""
        return self.tokens_per_chunk * (self.n_window_infer // self.chunk_frames)

    @property
    def stem_mels(self) -> int:
        """Mel bins left after the stem (128 -> 16)."""
        return _stem_length(self.n_mels)

    @classmethod
    def from_hf(cls, audio_config: dict) -> AuTConfig:
        """From transformers' ``Qwen3OmniMoeAudioEncoderConfig`` (``thinker_config.audio_config`` of a
        ``config.json``); missing keys take transformers' defaults, other keys are ignored.

        Example:
            >>> AuTConfig.from_hf({"output_dim": 2048}) == AuTConfig()
            True
        """
        if not isinstance(audio_config, dict):
            raise TypeError(f"audio_config must be a dict (thinker_config.audio_config); got {type(audio_config).__name__}")
        return cls(**{ours: audio_config.get(theirs, default) for theirs, (ours, default) in HF_NAMES.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AuTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise.

        Example:
            >>> AuTConfig.from_dict({"n_layers": 2}).n_layers
            2
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"AuTConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


def aut_token_counts(
    mel_lengths: Int[Tensor, "clip"] | int, n_window: int = 50
) -> Int[Tensor, "clip"] | int:
    """Audio tokens per clip of ``mel_lengths`` frames: 13 per full ``2 * n_window``-frame chunk plus
    the stem's output length of the remainder (transformers' ``_get_feat_extract_output_lengths``).

    Example:
        >>> aut_token_counts(100), aut_token_counts(37), aut_token_counts(torch.tensor([1, 250])).tolist()
        (13, 5, [1, 33])
    """
    chunk = 2 * n_window
    return _stem_length(mel_lengths % chunk) + (mel_lengths // chunk) * _stem_length(chunk)


class AuTAudioTower(nn.Module):
    """The AuT encoder up to ``ln_post`` (the model's ``audio`` slot).

    Hooks (the batch is one packed row of every clip's tokens, in clip order):
    ``hook_conv1`` / ``hook_conv2`` / ``hook_conv3`` ([chunk, C, mel', time'] after each GELU,
    padded chunks), ``hook_conv_out`` ([1, token, d_model], real tokens after ``conv_out``),
    ``hook_pos_embed`` ([1, token, d_model], the sinusoid rows added), ``hook_embed``
    ([1, token, d_model], their sum), the blocks' hooks (``hook_pattern``: [window, head,
    window_pos, window_pos], the last window of each clip padded with zero-probability keys) and
    ``hook_out`` ([1, token, d_model], after ``ln_post``).

    Example:
        >>> cfg = AuTConfig(d_model=32, n_layers=1, n_heads=4, d_mlp=64, out_dim=48, downsample_hidden_size=8)
        >>> tower = AuTAudioTower(cfg)
        >>> tower(torch.randn(2, 128, 250), torch.tensor([250, 37])).shape  # 33 + 5 tokens
        torch.Size([1, 38, 32])
    """

    def __init__(self, cfg: AuTConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.downsample_hidden_size
        self.conv1 = nn.Conv2d(1, c, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1)
        self.conv_out = nn.Linear(c * cfg.stem_mels, cfg.d_model, bias=False)
        self.blocks = encoder_blocks(cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_layers, cfg.act, cfg.layer_norm_eps)
        self.ln_post = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.hook_conv1 = HookPoint()  # [chunk, C, n_mels/2, frame/2], after GELU
        self.hook_conv2 = HookPoint()  # [chunk, C, n_mels/4, frame/4], after GELU
        self.hook_conv3 = HookPoint()  # [chunk, C, n_mels/8, frame/8], after GELU
        self.hook_conv_out = HookPoint()  # [1, token, d_model], real tokens packed over clips
        self.hook_pos_embed = HookPoint()  # [1, token, d_model], position within the chunk
        self.hook_embed = HookPoint()  # [1, token, d_model], conv_out + positions
        self.hook_out = HookPoint()  # [1, token, d_model], after ln_post
        self._table: Tensor | None = None

    def positional_table(self, length: int, device) -> Float[Tensor, "pos d_model"]:
        """The first ``length`` rows of the float32 sinusoid table (cached per device)."""
        if self._table is None or self._table.device != torch.device(device) or self._table.shape[0] < length:
            self._table = sinusoid_table(max(length, self.cfg.max_source_positions), self.cfg.d_model).to(device)
        return self._table[:length]

    def _check(self, features: Tensor, lengths) -> Tensor:
        cfg = self.cfg
        if not isinstance(features, Tensor) or features.ndim != 3 or features.shape[1] != cfg.n_mels:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"features must be [n_clip, n_mels={cfg.n_mels}, frames]; got {shape}. Pass log-mel features with "
                f"{cfg.n_mels} bins, clips padded to the longest along the last axis"
            )
        if features.shape[0] == 0:
            raise ValueError("features holds no clip (shape[0] == 0); call the tower only when there is audio")
        lengths = torch.as_tensor(lengths, device=features.device)
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
            raise ValueError(f"lengths must hold integer frame counts; got dtype {lengths.dtype}. Pass a LongTensor")
        if lengths.ndim != 1 or lengths.shape[0] != features.shape[0]:
            raise ValueError(
                f"lengths must be [n_clip] = [{features.shape[0]}] (one frame count per clip of features); got "
                f"shape {tuple(lengths.shape)}"
            )
        lengths = lengths.long()
        if bool((lengths < 1).any()) or bool((lengths > features.shape[2]).any()):
            raise ValueError(
                f"lengths must be between 1 and the {features.shape[2]} frames of features; got {lengths.tolist()}. "
                "Drop empty clips, or pad features to the longest clip"
            )
        return lengths

    def forward(
        self, features: Float[Tensor, "clip n_mels frame"], lengths: Int[Tensor, "clip"]
    ) -> Float[Tensor, "1 token d_model"]:
        """Encode clips given as padded log-mel features and their real frame counts; frames past a
        clip's length are ignored. Returns every clip's tokens, packed in clip order."""
        cfg = self.cfg
        lengths = self._check(features, lengths)
        device, dtype = features.device, self.conv1.weight.dtype

        # Chunks: clip, first frame and length of each, in clip order; all padded to the longest.
        per_clip = (lengths + cfg.chunk_frames - 1) // cfg.chunk_frames
        clip = torch.repeat_interleave(torch.arange(len(lengths), device=device), per_clip)
        first_chunk = torch.cumsum(per_clip, 0) - per_clip
        start = (torch.arange(len(clip), device=device) - first_chunk[clip]) * cfg.chunk_frames
        chunk_lengths = (lengths[clip] - start).clamp(max=cfg.chunk_frames)
        padded = int(chunk_lengths.max())
        offset = torch.arange(padded, device=device)
        real = offset[None, :] < chunk_lengths[:, None]  # [chunk, padded]
        frame = (start[:, None] + offset[None, :]).clamp(max=features.shape[2] - 1)
        chunks = features.transpose(1, 2)[clip[:, None], frame].masked_fill(~real[..., None], 0)  # [chunk, frame, mel]
        x = chunks.transpose(1, 2)[:, None].to(dtype)  # [chunk, 1, mel, frame]

        with exact_float32_convolutions(dtype):
            for conv, hook in ((self.conv1, self.hook_conv1), (self.conv2, self.hook_conv2), (self.conv3, self.hook_conv3)):
                # groups of conv_chunksize chunks, as the reference runs them (bounds the workspace)
                x = hook(torch.cat([F.gelu(conv(group)) for group in x.split(cfg.conv_chunksize)]))
        n_chunk, channels, mels, steps = x.shape
        x = self.conv_out(x.permute(0, 3, 1, 2).reshape(n_chunk, steps, channels * mels))  # [chunk, time', d_model]

        position = torch.arange(steps, device=device)
        keep = position[None, :] < _stem_length(chunk_lengths)[:, None]  # [chunk, time']
        x = self.hook_conv_out(x[keep][None])  # [1, token, d_model]
        positions = self.positional_table(steps, device)[position.expand(n_chunk, steps)[keep]]
        x = self.hook_embed(x + self.hook_pos_embed(positions[None].to(x.dtype)))

        segments = AttentionSegments.from_lengths(self.window_lengths(lengths), device)
        for block in self.blocks:
            x = block(x, segments=segments)
        return self.hook_out(self.ln_post(x))

    def window_lengths(self, lengths: Int[Tensor, "clip"] | list[int]) -> list[int]:
        """Token counts of the attention windows, clip by clip.

        Example:
            >>> cfg = AuTConfig(d_model=32, n_layers=1, n_heads=4, d_mlp=64, n_window_infer=200)
            >>> AuTAudioTower(cfg).window_lengths([913, 37])  # 119 tokens in windows of 26, then 5
            [26, 26, 26, 26, 15, 5]
        """
        window = self.cfg.window_tokens
        result = []
        for n in aut_token_counts(torch.as_tensor(lengths).long(), self.cfg.n_window).tolist():
            result += [window] * (n // window) + ([n % window] if n % window else [])
        return result


class AuTOutputHead(nn.Module):
    """``proj2(act(proj1(x)))``: AuT's output head into the LLM width (the model's ``audio_proj``).

    Hooks: ``hook_pre`` ([1, token, d_model], after ``proj1``), ``hook_post`` ([1, token, d_model],
    after the activation) and ``hook_out`` ([1, token, out_dim]: one row per audio placeholder).

    Example:
        >>> head = AuTOutputHead(AuTConfig(d_model=32, n_heads=4, out_dim=48))
        >>> head(torch.randn(1, 5, 32)).shape
        torch.Size([1, 5, 48])
    """

    def __init__(self, cfg: AuTConfig):
        super().__init__()
        self.cfg = cfg
        self.act = activation(cfg.act)
        self.proj1 = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj2 = nn.Linear(cfg.d_model, cfg.out_dim)
        self.hook_pre = HookPoint()  # [1, token, d_model]
        self.hook_post = HookPoint()  # [1, token, d_model]
        self.hook_out = HookPoint()  # [1, token, out_dim]

    def forward(self, x: Float[Tensor, "1 token d_model"]) -> Float[Tensor, "1 token out_dim"]:
        if x.shape[-1] != self.cfg.d_model:
            raise ValueError(f"x must end in d_model={self.cfg.d_model} (the AuT tower's output); got {tuple(x.shape)}")
        return self.hook_out(self.proj2(self.hook_post(self.act(self.hook_pre(self.proj1(x))))))


__all__ = ["AuTAudioTower", "AuTConfig", "AuTOutputHead", "aut_token_counts"]
