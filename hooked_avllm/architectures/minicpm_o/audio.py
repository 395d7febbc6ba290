"""MiniCPM-o's audio as its released processor makes it: 30-s pieces, 80-bin Whisper log-mel on
the padded buffer, token counts (25 a second) and the grouped audio placeholder text.

Example:
    >>> audio_embedding_count(16000), audio_placeholder(16000).count("<unk>")
    (25, 25)
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.architectures.minicpm_o.constants import (
    AUDIO_CHUNK_SECONDS,
    AUDIO_POOL_STEP,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    PIECE_FRAMES,
    PIECE_SAMPLES,
    SAMPLING_RATE,
    AudioArray,
)
from hooked_avllm.inputs.audio import Audio, check_float_audio
from hooked_avllm.inputs.errors import InputError
from hooked_avllm.inputs.mel import log_mel_spectrogram

# ---------------------------------------------------------------- audio


def _samples(array: AudioArray, name: str = "audio") -> Float[Tensor, "samples"]:
    """A 1-D float32 tensor of a 16-kHz mono array (numpy, tensor or Audio)."""
    if isinstance(array, Audio):
        if array.sampling_rate != SAMPLING_RATE:
            raise InputError(
                f"{name} is an Audio at {array.sampling_rate} Hz; MiniCPM-o takes 16 kHz: "
                "load it with hooked_avllm.inputs.load_audio(..., sampling_rate=16000)"
            )
        array = array.waveform
    if isinstance(array, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif isinstance(array, Tensor):
        tensor = array.detach().cpu()
    else:
        raise InputError(f"{name} must be a 1-D 16-kHz float array or tensor (or an Audio); got a {type(array).__name__}")
    if tensor.ndim != 1:
        raise InputError(
            f"{name} has shape {tuple(tensor.shape)}; pass mono 16-kHz samples [samples] "
            "(mix channels with hooked_avllm.inputs.load_audio first)"
        )
    if not tensor.is_floating_point():
        raise InputError(f"{name} has dtype {tensor.dtype}; pass float samples in [-1, 1] (load_audio converts integer PCM)")
    if tensor.numel() == 0:
        raise InputError(f"{name} is empty (0 samples); pass a clip of at least 0.02 s")
    check_float_audio(tensor, name)
    return tensor.to(torch.float32)


def audio_frame_count(n_samples: int) -> int:
    """Mel frames of ``n_samples`` 16-kHz samples: ``ceil(n / 160)`` (100 per second).

    Example:
        >>> audio_frame_count(16000), audio_frame_count(16001), audio_frame_count(0)
        (100, 101, 0)
    """
    return -(-int(n_samples) // HOP_LENGTH)


def audio_embedding_count(n_samples: int, pool_step: int = AUDIO_POOL_STEP) -> int:
    """Audio embeddings of ``n_samples`` samples: ``n`` mel frames -> ``(n-1)//2 + 1`` after the
    stride-2 conv -> ``(that - pool_step)//pool_step + 1`` after pooling (25 per second; 0 below 3 frames).

    Example:
        >>> [audio_embedding_count(n) for n in (0, 320, 321, 8000, 16000, 480000)]
        [0, 0, 1, 12, 25, 750]
    """
    frames = audio_frame_count(n_samples)
    after_conv = (frames - 1) // 2 + 1
    return max((after_conv - pool_step) // pool_step + 1, 0)


def audio_chunk_sizes(
    n_samples: int, chunk_input: bool = True, chunk_seconds: float = AUDIO_CHUNK_SECONDS, pool_step: int = AUDIO_POOL_STEP
) -> list[int]:
    """``<unk>`` counts of the ``<|audio_start|>``…``<|audio_end|>`` groups of one array: groups of
    the embeddings of ``chunk_seconds`` (25 for 1 s) with ``chunk_input``, else one group.

    Example:
        >>> audio_chunk_sizes(16000 * 2 + 8000), audio_chunk_sizes(40000, chunk_input=False), audio_chunk_sizes(100)
        ([25, 25, 12], [62], [])
    """
    total = audio_embedding_count(n_samples, pool_step)
    if not chunk_input:
        return [total]
    frames_per_chunk = int(chunk_seconds * 100)
    per_chunk = ((frames_per_chunk - 1) // 2 + 1 - pool_step) // pool_step + 1
    return [min(per_chunk, total - start) for start in range(0, total, per_chunk)]


def audio_placeholder(n_samples: int, chunk_input: bool = True, chunk_seconds: float = AUDIO_CHUNK_SECONDS) -> str:
    """The text an audio tag becomes for an array of ``n_samples`` samples.

    Example:
        >>> audio_placeholder(16000 + 640)
        '<|audio_start|><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><unk><|audio_end|><|audio_start|><unk><|audio_end|>'
        >>> audio_placeholder(100), audio_placeholder(100, chunk_input=False)
        ('', '<|audio_start|><|audio_end|>')
    """
    return "".join(
        "<|audio_start|>" + "<unk>" * size + "<|audio_end|>"
        for size in audio_chunk_sizes(n_samples, chunk_input, chunk_seconds)
    )


def audio_token_count(n_samples: int, chunk_input: bool = True) -> int:
    """Sequence positions of one array's placeholder: embeddings plus two delimiters per group
    (27 for one second with ``chunk_input``).

    Example:
        >>> audio_token_count(16000), audio_token_count(16000 * 30)
        (27, 810)
    """
    sizes = audio_chunk_sizes(n_samples, chunk_input)
    return sum(sizes) + 2 * len(sizes)


def split_audio_pieces(waveform: AudioArray, max_samples: int = PIECE_SAMPLES) -> list[Float[Tensor, "samples"]]:
    """Cut one (merged) waveform into consecutive pieces of at most ``max_samples`` (30 s); a
    waveform of at most that length stays whole (an empty one gives one empty piece).

    Example:
        >>> [len(p) for p in split_audio_pieces(torch.zeros(1_000_000))]
        [480000, 480000, 40000]
    """
    samples = _samples(waveform)
    if samples.shape[0] <= max_samples:
        return [samples]
    return list(samples.split(max_samples))


def whisper_log_mel(pieces: Sequence[AudioArray]) -> list[Float[Tensor, "80 frames"]]:
    """WhisperFeatureExtractor's 80-bin log-mel of each piece (at most 30 s) as the released
    processor takes it: computed on the piece zero-padded to 30 s (the max-8 clamp sees the whole
    buffer), then cut to ``ceil(samples / 160)`` frames.

    Example:
        >>> [m.shape for m in whisper_log_mel([torch.zeros(16000), torch.zeros(161)])]
        [torch.Size([80, 100]), torch.Size([80, 2])]
    """
    tensors = [_samples(p, f"audio piece {i}") for i, p in enumerate(pieces)]
    for i, t in enumerate(tensors):
        if t.shape[0] > PIECE_SAMPLES:
            raise InputError(
                f"audio piece {i} has {t.shape[0]} samples, more than 30 s ({PIECE_SAMPLES}); cut it with split_audio_pieces"
            )
    if not tensors:
        return []
    buffer = torch.stack([F.pad(t, (0, PIECE_SAMPLES - t.shape[0])) for t in tensors])  # [pieces, 480000]
    mel = log_mel_spectrogram(buffer, n_frames=PIECE_FRAMES, n_mels=N_MELS, n_fft=N_FFT, hop_length=HOP_LENGTH,
                              sampling_rate=SAMPLING_RATE)  # [pieces, 80, 3000]
    return [mel[i, :, : audio_frame_count(t.shape[0])] for i, t in enumerate(tensors)]


def merge_audio_groups(arrays: Sequence[AudioArray], groups: Sequence[int] | None = None) -> list[Float[Tensor, "samples"]]:
    """Concatenate consecutive arrays with the same group (``chat()`` groups by message index);
    without groups every array stands alone.

    Example:
        >>> [len(a) for a in merge_audio_groups([torch.zeros(3), torch.zeros(4), torch.zeros(5)], [1, 1, 2])]
        [7, 5]
    """
    tensors = [_samples(a, f"audio array {i}") for i, a in enumerate(arrays)]
    if groups is None:
        return tensors
    if len(groups) != len(tensors):
        raise InputError(f"audio groups= has {len(groups)} entries for {len(tensors)} audio arrays; give one group per array")
    merged: list[list[Tensor]] = []
    for i, tensor in enumerate(tensors):
        if i > 0 and groups[i] == groups[i - 1]:
            merged[-1].append(tensor)
        else:
            merged.append([tensor])
    return [torch.cat(parts) for parts in merged]


def check_audio_alignment(lengths: Sequence[int], groups: Sequence[int] | None = None, pool_step: int = AUDIO_POOL_STEP) -> None:
    """Refuse audio whose placeholders (counted per array) and embeddings (computed per merged
    group, in 30-s pieces) differ in number within a group: the released model writes the
    embeddings into the placeholders in order, so the count of every later array would be off
    (or the fill fails). Counts agree when every array but the last of a group is a multiple of
    640 samples (40 ms), e.g. whole seconds.

    Example:
        >>> check_audio_alignment([16000, 12345], [0, 0])   # a whole second first: fine
        >>> check_audio_alignment([16330, 16330], [0, 1])   # separate messages: fine
        >>> check_audio_alignment([16330, 16330], [0, 0])   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hooked_avllm.inputs.errors.InputError: audio arrays 0..1 of one message (lengths [16330, 16330] samples) would get 52 placeholder tokens but their concatenation gives 51 audio embeddings, ...
    """
    lengths = [int(n) for n in lengths]
    if groups is None:
        groups = list(range(len(lengths)))
    if len(groups) != len(lengths):
        raise InputError(f"audio groups= has {len(groups)} entries for {len(lengths)} audio arrays; give one group per array")
    start = 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and groups[end] == groups[start]:
            end += 1
        placeholders = sum(audio_embedding_count(n, pool_step) for n in lengths[start:end])
        total = sum(lengths[start:end])
        whole, rest = divmod(total, PIECE_SAMPLES)  # the merged array's 30-s pieces and its remainder
        embeddings = whole * audio_embedding_count(PIECE_SAMPLES, pool_step) + audio_embedding_count(rest, pool_step)
        if placeholders != embeddings:
            ragged = [i for i in range(start, end - 1) if lengths[i] % 640]
            raise InputError(
                f"audio arrays {start}..{end - 1} of one message (lengths {lengths[start:end]} samples) would get "
                f"{placeholders} placeholder tokens but their concatenation gives {embeddings} audio embeddings, so the "
                f"embeddings would land in the wrong places (array(s) {ragged} are not a multiple of 640 samples = 40 ms). "
                "Make every array but the last of a message a multiple of 640 samples (e.g. whole seconds), put the "
                "arrays in separate messages, or concatenate them into one array"
            )
        start = end


@dataclass
class MiniCPMAudioFeatures:
    """The audio tower's input for one prompt: each piece's log-mel, right-padded with 0.0 to the
    longest (``input_features[i, :, :feature_lens[i]]`` are piece i's frames), with the group
    (merged message) each piece came from and the placeholder ``<unk>`` count of each original array."""

    input_features: Float[Tensor, "pieces 80 frames"]
    feature_lens: Int[Tensor, "pieces"]
    piece_group: Int[Tensor, "pieces"]
    array_token_counts: Int[Tensor, "arrays"]

    @property
    def embedding_counts(self) -> Int[Tensor, "pieces"]:
        """Audio embeddings each piece yields (the tower's output length after pooling)."""
        return torch.tensor([audio_embedding_count(int(n) * HOP_LENGTH) for n in self.feature_lens], dtype=torch.int64)


def audio_features(
    arrays: Sequence[AudioArray], groups: Sequence[int] | None = None, *, check_alignment: bool = True
) -> MiniCPMAudioFeatures:
    """The audio arrays of one prompt -> features as the released processor makes them: arrays of
    the same group (message) concatenated, cut into ≤30-s pieces, 80-bin Whisper log-mel each,
    right-padded with 0.0. Checks (:func:`check_audio_alignment`) that the placeholders counted per
    array match the embeddings unless ``check_alignment=False``.

    Example:
        >>> f = audio_features([torch.zeros(16000), torch.zeros(8000)], groups=[0, 0])
        >>> f.input_features.shape, f.feature_lens.tolist(), f.array_token_counts.tolist()
        (torch.Size([1, 80, 150]), [150], [25, 12])
    """
    tensors = [_samples(a, f"audio array {i}") for i, a in enumerate(arrays)]
    if not tensors:
        raise InputError("audio_features got no audio arrays; call it only when the prompt holds audio")
    if check_alignment:
        check_audio_alignment([t.shape[0] for t in tensors], groups)
    pieces, owner = [], []
    for g, merged in enumerate(merge_audio_groups(tensors, groups)):
        for piece in split_audio_pieces(merged):
            pieces.append(piece)
            owner.append(g)
    mels = whisper_log_mel(pieces)
    longest = max(m.shape[1] for m in mels)
    features = torch.stack([F.pad(m, (0, longest - m.shape[1])) for m in mels])
    return MiniCPMAudioFeatures(
        input_features=features,
        feature_lens=torch.tensor([m.shape[1] for m in mels], dtype=torch.int64),
        piece_group=torch.tensor(owner, dtype=torch.int64),
        array_token_counts=torch.tensor([audio_embedding_count(t.shape[0]) for t in tensors], dtype=torch.int64),
    )


__all__ = ["MiniCPMAudioFeatures", "audio_chunk_sizes", "audio_embedding_count", "audio_features", "audio_frame_count", "audio_placeholder", "audio_token_count", "check_audio_alignment", "merge_audio_groups", "split_audio_pieces", "whisper_log_mel"]
