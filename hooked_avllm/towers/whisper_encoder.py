"""A Whisper encoder over whole clips with an optional block-causal mask, and MiniCPM-o's pooled
projector: MiniCPM-o 2.6's ``apm`` + ``audio_projection_layer`` + ``audio_avg_pooler``.

The tower, per call (``input_features`` [piece, n_mels, frame], ``feature_lens`` [piece]): every
piece (at most ``2 * max_source_positions`` = 3000 mel frames = 30 s) is one batch row.

1. ``conv1`` (kernel 3, padding 1) + GELU, ``conv2`` (kernel 3, stride 2, padding 1) + GELU:
   ``T' = (T - 1) // 2 + 1`` frames at 50 Hz, where ``T`` is the longest piece of the call;
2. the learned ``embed_positions`` rows ``[:T']`` are added (positions start at 0 in every piece);
3. pre-LN blocks attending block-causally: a query in block ``i // block_frames`` sees every key
   of its own and all earlier blocks (``block_frames`` = 50 frames = 1 s for MiniCPM-o; ``None``
   is full attention);
4. the final ``layer_norm``.

The padding mask is the reference's, kept on purpose because the released model was run this
way: a key ``j`` of piece ``b`` is hidden only when ``j >= feature_lens[b]``, a **mel** length
compared against **post-conv** frame indices. So a piece that is the longest of its call (or
alone) has no padding mask at all, and a shorter piece also attends to its padded post-conv frames
``[(n - 1) // 2 + 1, min(n, T'))`` inside its visible blocks: **a piece's output depends on what
it is batched with**, exactly as in the reference (encode each piece alone to avoid it). The
unmasked conv stem adds a second, smaller path: a piece of odd length ``n`` shorter than the call
reads ``gelu(conv1)`` of its first padded frame in its last post-conv frame. With 1-s blocks a
shorter piece is encoded exactly as alone when it lasts whole seconds (``n`` a multiple of 100,
e.g. the 30-s pieces of a long clip and whole-second remainders); otherwise only its last block
(the second holding its last frame) differs. With full attention every shorter piece differs.
Frames past a piece's length are read as 0.0 (what MiniCPM-o's processor pads with) whatever the
caller put there, and the call is as wide as its longest piece, so only the pieces' lengths matter.

:class:`PooledAudioProjector` then maps every 50 Hz frame ``linear2(relu(linear1(x)))`` into the
LLM width, averages ``pool_step`` neighbouring frames (floor) and keeps each piece's first
:func:`whisper_token_counts` rows: 25 embeddings per second, packed piece after piece.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components import LayerNorm
from hooked_avllm.components.blocks import encoder_blocks
from hooked_avllm.components.mlp import ACTIVATIONS
from hooked_avllm.components.precision import exact_float32_convolutions

# transformers' WhisperConfig name -> (our field, transformers' default)
HF_NAMES: dict[str, tuple[str, Any]] = {
    "num_mel_bins": ("n_mels", 80),
    "d_model": ("d_model", 384),
    "encoder_layers": ("n_layers", 4),
    "encoder_attention_heads": ("n_heads", 6),
    "encoder_ffn_dim": ("d_mlp", 1536),
    "max_source_positions": ("max_source_positions", 1500),
    "activation_function": ("act", "gelu"),
}
FRAMES_PER_SECOND = 50  # post-conv frames per second of audio (100 mel frames / stride 2)


def whisper_token_counts(
    feature_lens: Int[Tensor, "piece"] | int, pool_step: int = 2
) -> Int[Tensor, "piece"] | int:
    """Pooled audio embeddings per piece of ``feature_lens`` mel frames: ``T' = (n - 1) // 2 + 1``
    frames after the convolutions, then ``(T' - pool_step) // pool_step + 1`` after pooling (25 per
    second; 0 for a piece of 1 or 2 frames). Ints work too.

    Example:
        >>> whisper_token_counts(100), whisper_token_counts(37), whisper_token_counts(torch.tensor([1, 3000])).tolist()
        (25, 9, [0, 750])
    """
    after_conv = (feature_lens - 1) // 2 + 1
    return (after_conv - pool_step) // pool_step + 1


@dataclass
class WhisperEncoderConfig:
    """Shape of a Whisper encoder and of MiniCPM-o's pooled projector (defaults: MiniCPM-o 2.6,
    whose ``audio_config`` is whisper-medium, with 1-s attention blocks into a 3584-wide LLM).

    ``block_frames``: attention blocks in post-conv frames (50 = MiniCPM-o's 1-s chunks), ``None``
    for full attention. ``out_dim`` / ``pool_step``: the projector's output width (the LLM's
    ``hidden_size``) and average-pooling step (``audio_pool_step``).

    Example:
        >>> cfg = WhisperEncoderConfig.from_hf({"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 4,
        ...                                     "encoder_ffn_dim": 128}, out_dim=48)
        >>> cfg.d_head, cfg.block_frames, cfg.max_frames
        (8, 50, 3000)
        >>> WhisperEncoderConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    n_mels: int = 80
    d_model: int = 1024
    n_layers: int = 24
    n_heads: int = 16
    d_mlp: int = 4096
    max_source_positions: int = 1500
    act: str = "gelu"
    layer_norm_eps: float = 1e-5  # nn.LayerNorm's default, which every Whisper norm uses
    block_frames: int | None = 50
    out_dim: int = 3584
    pool_step: int = 2

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "int | None") and value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"WhisperEncoderConfig.{f.name} must be a positive int; got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"WhisperEncoderConfig.d_model={self.d_model} must be a multiple of n_heads={self.n_heads}; "
                "change one of them"
            )
        if self.act not in ACTIVATIONS:
            raise ValueError(
                f"WhisperEncoderConfig.act={self.act!r} is not supported; use one of {sorted(ACTIVATIONS)}"
            )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def max_frames(self) -> int:
        """The most mel frames one piece may have: ``2 * max_source_positions`` (3000 = 30 s)."""
        return 2 * self.max_source_positions

    @classmethod
    def from_hf(
        cls, audio_config: dict, chunk_length_s: float | None = 1.0, out_dim: int | None = None, pool_step: int = 2
    ) -> WhisperEncoderConfig:
        """From a transformers ``WhisperConfig`` dict (MiniCPM-o's ``audio_config``); missing keys take
        transformers' defaults, other keys are ignored.

        ``chunk_length_s``: attention block length in seconds (MiniCPM-o's ``audio_chunk_length``,
        1.0); ``None`` or ``<= 0`` is full attention. ``block_frames = int(chunk_length_s * 50)``,
        as the reference computes it. ``out_dim``: the projector's width (the LLM's ``hidden_size``;
        ``None`` keeps MiniCPM-o 2.6's 3584). ``pool_step``: MiniCPM-o's ``audio_pool_step``.

        Example:
            >>> WhisperEncoderConfig.from_hf({"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16,
            ...                               "encoder_ffn_dim": 4096}) == WhisperEncoderConfig()
            True
            >>> WhisperEncoderConfig.from_hf({}, chunk_length_s=None).block_frames is None
            True
        """
        if not isinstance(audio_config, dict):
            raise TypeError(
                f"audio_config must be a dict (config.json's audio_config, or WhisperConfig.to_dict()); "
                f"got {type(audio_config).__name__}"
            )
        values = {ours: audio_config.get(theirs, default) for theirs, (ours, default) in HF_NAMES.items()}
        if chunk_length_s is not None and chunk_length_s > 0:
            values["block_frames"] = int(chunk_length_s * FRAMES_PER_SECOND)
            if values["block_frames"] < 1:
                raise ValueError(
                    f"chunk_length_s={chunk_length_s} gives attention blocks of less than one 20-ms frame; "
                    "pass at least 0.02, or None for full attention"
                )
        else:
            values["block_frames"] = None
        if out_dim is not None:
            values["out_dim"] = out_dim
        return cls(**values, pool_step=pool_step)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WhisperEncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise.

        Example:
            >>> WhisperEncoderConfig.from_dict({"n_layers": 2, "block_frames": None}).block_frames is None
            True
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"WhisperEncoderConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


def _check_lengths(feature_lens, n_pieces: int, n_frames: int, device) -> Tensor:
    """``feature_lens`` as a LongTensor on ``device``, each between 1 and ``n_frames``."""
    lens = torch.as_tensor(feature_lens, device=device)
    if lens.dtype.is_floating_point or lens.dtype == torch.bool or lens.is_complex():
        raise ValueError(f"feature_lens must hold integer mel-frame counts; got dtype {lens.dtype}. Pass a LongTensor")
    if lens.ndim != 1 or lens.shape[0] != n_pieces:
        raise ValueError(
            f"feature_lens must be [n_piece] = [{n_pieces}] (one mel-frame count per piece); "
            f"got shape {tuple(lens.shape)}"
        )
    lens = lens.long()
    if bool((lens < 1).any()) or bool((lens > n_frames).any()):
        raise ValueError(
            f"feature_lens must be between 1 and the {n_frames} frames of the input; got {lens.tolist()}. "
            "Drop empty pieces, or pad the features to the longest piece"
        )
    return lens


class WhisperEncoderTower(nn.Module):
    """Whisper encoder over whole pieces (the model's ``audio`` slot): conv stem, learned positions,
    pre-LN blocks with the optional block-causal mask, ``layer_norm`` (see the module docstring for
    the padding behaviour, kept from the reference).

    Hooks (``frame``: the longest piece's mel frames; ``frame_out = (frame - 1) // 2 + 1``; rows past
    a piece's own ``(n - 1) // 2 + 1`` are padding, computed as the reference computes them):
    ``hook_conv1`` ([piece, frame, d_model], after GELU), ``hook_conv2`` ([piece, frame_out,
    d_model], after GELU), ``hook_embed`` ([piece, frame_out, d_model], positions added), the blocks'
    hooks (``blocks.{l}.attn.hook_pattern``: [piece, head, frame_out, frame_out], masked keys 0) and
    ``hook_out`` ([piece, frame_out, d_model], after ``layer_norm``).

    Example:
        >>> cfg = WhisperEncoderConfig(d_model=32, n_layers=1, n_heads=4, d_mlp=128, out_dim=48)
        >>> tower = WhisperEncoderTower(cfg)
        >>> tower(torch.randn(2, 80, 250), torch.tensor([250, 37])).shape  # 125 frames at 50 Hz
        torch.Size([2, 125, 32])
    """

    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        # learned (initialised sinusoidal by Whisper, then trained); always read from the checkpoint
        self.embed_positions = nn.Parameter(torch.zeros(cfg.max_source_positions, cfg.d_model))
        self.blocks = encoder_blocks(cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_layers, cfg.act, cfg.layer_norm_eps)
        self.layer_norm = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.hook_conv1 = HookPoint()  # [piece, frame, d_model], after GELU
        self.hook_conv2 = HookPoint()  # [piece, frame_out, d_model], after GELU
        self.hook_embed = HookPoint()  # [piece, frame_out, d_model], conv2 + embed_positions[:frame_out]
        self.hook_out = HookPoint()  # [piece, frame_out, d_model], after layer_norm

    def _check(self, input_features, feature_lens) -> Tensor:
        cfg = self.cfg
        if not isinstance(input_features, Tensor) or input_features.ndim != 3 or input_features.shape[1] != cfg.n_mels:
            shape = tuple(input_features.shape) if isinstance(input_features, Tensor) else type(input_features).__name__
            raise ValueError(
                f"input_features must be [n_piece, n_mels={cfg.n_mels}, frames]; got {shape}. Pass log-mel features "
                f"with {cfg.n_mels} bins, pieces padded to the longest along the last axis"
            )
        if input_features.shape[0] == 0:
            raise ValueError("input_features holds no piece (shape[0] == 0); call the tower only when there is audio")
        lens = _check_lengths(feature_lens, input_features.shape[0], input_features.shape[2], input_features.device)
        if bool((lens > cfg.max_frames).any()):
            raise ValueError(
                f"feature_lens {lens.tolist()} has a piece longer than {cfg.max_frames} mel frames "
                f"({cfg.max_frames // 100} s: the encoder has {cfg.max_source_positions} learned positions). Split "
                f"the audio into pieces of at most {cfg.max_frames // 100} s ({cfg.max_frames * 160} samples at "
                "16 kHz), as MiniCPM-o's processor does, and pass each piece as its own row"
            )
        return lens

    def attention_mask(
        self, feature_lens: Int[Tensor, "piece"], n_frames: int, dtype: torch.dtype = torch.float32
    ) -> Float[Tensor, "piece 1 frame_out frame_out"] | None:
        """The additive mask (0 or ``-inf``) of a call whose pieces have ``feature_lens`` mel frames and
        ``n_frames`` post-conv frames: key ``j`` is hidden from query ``i`` of piece ``b`` when
        ``j >= feature_lens[b]`` (mel length against post-conv index: the reference's rule) or ``j``
        lies in a later block than ``i``. ``None`` when nothing is hidden.

        Example (blocks of 2 frames; the second piece's 3 mel frames make 2 real frames, yet key 2,
        a padded frame, stays visible; ``x``: visible key, one group of keys per query):
            >>> cfg = WhisperEncoderConfig(d_model=8, n_layers=1, n_heads=2, d_mlp=32, block_frames=2)
            >>> mask = WhisperEncoderTower(cfg).attention_mask(torch.tensor([9, 3]), 5)
            >>> for piece in mask[:, 0].tolist():
            ...     print(" ".join("".join("x" if v == 0 else "." for v in query) for query in piece))
            xx... xx... xxxx. xxxx. xxxxx
            xx... xx... xxx.. xxx.. xxx..
        """
        position = torch.arange(n_frames, device=feature_lens.device)
        # [piece, query, key]: the key's post-conv index against the piece's mel length (the reference's rule)
        allowed = (position[None, None, :] < feature_lens[:, None, None]).expand(-1, n_frames, -1)
        if self.cfg.block_frames is not None:
            block_end = (position // self.cfg.block_frames + 1) * self.cfg.block_frames  # first key of the next block
            allowed = allowed & (position[None, :] < block_end[:, None])[None]
        if bool(allowed.all()):
            return None
        mask = torch.zeros(allowed.shape, dtype=dtype, device=feature_lens.device)
        return mask.masked_fill(~allowed, float("-inf"))[:, None]

    def forward(
        self, input_features: Float[Tensor, "piece n_mels frame"], feature_lens: Int[Tensor, "piece"]
    ) -> Float[Tensor, "piece frame_out d_model"]:
        """Encode pieces given as padded log-mel features and their real mel-frame counts (each at
        most ``cfg.max_frames``). Returns ``[piece, (max(feature_lens) - 1) // 2 + 1, d_model]``;
        piece ``b``'s real frames are its first ``(feature_lens[b] - 1) // 2 + 1``."""
        lens = self._check(input_features, feature_lens)
        dtype = self.conv1.weight.dtype
        width = int(lens.max())  # the reference's batch is exactly as wide as its longest piece
        real = torch.arange(width, device=lens.device)[None, :] < lens[:, None]
        x = input_features[:, :, :width].masked_fill(~real[:, None, :], 0.0).to(dtype)

        with exact_float32_convolutions(dtype):
            x = self.hook_conv1(F.gelu(self.conv1(x)).transpose(1, 2))  # [piece, frame, d_model]
            x = self.hook_conv2(F.gelu(self.conv2(x.transpose(1, 2))).transpose(1, 2))  # [piece, frame_out, d_model]
        n_frames = x.shape[1]
        x = self.hook_embed(x + self.embed_positions[:n_frames].to(x.dtype))

        mask = self.attention_mask(lens, n_frames, x.dtype)
        for block in self.blocks:
            x = block(x, additive_mask=mask)
        return self.hook_out(self.layer_norm(x))


class PooledAudioProjector(nn.Module):
    """MiniCPM-o's audio head (the model's ``audio_proj`` slot): ``linear2(relu(linear1(x)))`` on every
    50 Hz frame, then ``AvgPool1d(pool_step, pool_step)`` over time (an odd last frame is dropped),
    then each piece's first :func:`whisper_token_counts` rows, packed piece after piece: one row per
    audio placeholder token, in the order the family scatters them.

    ``linear1`` reads ``d_model`` features (the reference builds it as ``encoder_ffn_dim // 4``, which
    is ``d_model`` for every Whisper size; a config where they differ raises).

    Hooks: ``hook_pre`` ([piece, frame_out, out_dim], after ``linear1``), ``hook_post`` (after the
    ReLU), ``hook_pre_pool`` ([piece, frame_out, out_dim], after ``linear2``, padded frames included)
    and ``hook_out`` ([1, token, out_dim]).

    Example:
        >>> cfg = WhisperEncoderConfig(d_model=32, n_heads=4, d_mlp=128, out_dim=48)
        >>> proj = PooledAudioProjector(cfg)
        >>> proj(torch.randn(2, 125, 32), torch.tensor([250, 37])).shape  # 62 + 9 tokens
        torch.Size([1, 71, 48])
    """

    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        if cfg.d_mlp // 4 != cfg.d_model:
            raise ValueError(
                f"MiniCPM-o's projector reads encoder_ffn_dim // 4 = {cfg.d_mlp // 4} features, but the encoder emits "
                f"d_model={cfg.d_model}; the reference cannot run this config (use d_mlp = 4 * d_model)"
            )
        self.cfg = cfg
        self.linear1 = nn.Linear(cfg.d_model, cfg.out_dim)
        self.linear2 = nn.Linear(cfg.out_dim, cfg.out_dim)
        self.hook_pre = HookPoint()  # [piece, frame_out, out_dim], after linear1
        self.hook_post = HookPoint()  # [piece, frame_out, out_dim], after ReLU
        self.hook_pre_pool = HookPoint()  # [piece, frame_out, out_dim], after linear2
        self.hook_out = HookPoint()  # [1, token, out_dim], every piece's tokens back to back

    def forward(
        self, hidden: Float[Tensor, "piece frame_out d_model"], feature_lens: Int[Tensor, "piece"]
    ) -> Float[Tensor, "1 token out_dim"]:
        """Project, pool and pack the tower's output (``feature_lens``: the mel lengths given to the tower)."""
        cfg = self.cfg
        if not isinstance(hidden, Tensor) or hidden.ndim != 3 or hidden.shape[-1] != cfg.d_model:
            shape = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
            raise ValueError(
                f"hidden must be [n_piece, frames, d_model={cfg.d_model}] (the tower's output); got {shape}"
            )
        lens = _check_lengths(feature_lens, hidden.shape[0], 2 * hidden.shape[1], hidden.device)
        x = self.hook_pre(self.linear1(hidden))
        x = self.hook_pre_pool(self.linear2(self.hook_post(F.relu(x))))
        pooled = F.avg_pool1d(x.transpose(1, 2), cfg.pool_step, cfg.pool_step)  # [piece, out_dim, frame_out // step]
        pooled = pooled.transpose(1, 2)
        counts = whisper_token_counts(lens, cfg.pool_step)
        keep = torch.arange(pooled.shape[1], device=lens.device)[None, :] < counts[:, None]
        return self.hook_out(pooled[keep][None])


__all__ = ["PooledAudioProjector", "WhisperEncoderConfig", "WhisperEncoderTower", "whisper_token_counts"]
