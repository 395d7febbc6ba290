"""MiniCPM-o 2.6 test cases shared by the parity, analysis and heatmap tests: a stand-in tokenizer
with the layout's special tokens (every other character one id), one row's ids and media for each
input kind (text, an image with slices, audio, a video with its sound as omni units), and a
left-padded batch of rows."""

from __future__ import annotations

import re

import torch

from hooked_avllm.architectures.minicpm_o.config import MiniCPMTokenIds
from hooked_avllm.architectures.minicpm_o.preprocess import audio_features, audio_placeholder, image_placeholder

VOCAB = 512
QUERIES = 8
TOKENS = MiniCPMTokenIds(image=300, video=300, audio=300, image_start=301, image_end=302, slice_start=303, slice_end=304,
                         image_id_start=305, image_id_end=306, unit=307, audio_start=308, audio_end=309, pad=0,
                         eos=(310, 0))
STRINGS = {"<unk>": 300, "<image>": 301, "</image>": 302, "<slice>": 303, "</slice>": 304, "<image_id>": 305,
           "</image_id>": 306, "<unit>": 307, "<|audio_start|>": 308, "<|audio_end|>": 309, "<|im_end|>": 310,
           "<|endoftext|>": 0}
SPECIAL = re.compile("(" + "|".join(re.escape(s) for s in STRINGS) + ")")


def ids_of(text: str) -> list[int]:
    """Token ids of a prompt text: the special strings to their ids, every other character to one id
    (a stand-in tokenizer with the layout's specials)."""
    out = []
    for piece in SPECIAL.split(text):
        out += [STRINGS[piece]] if piece in STRINGS else [1 + ord(c) % 250 for c in piece]
    return out


def slices(sizes: list[tuple[int, int]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = sum(h * w for h, w in sizes)
    return torch.randn(n, 3 * 14 * 14, generator=g), torch.tensor(sizes)


def waves(seconds: list[float], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.3 * torch.randn(int(s * 16000), generator=g) for s in seconds]


def case(kind: str, seed: int = 0) -> tuple[list[int], dict]:
    """One row's ids and media for each input kind."""
    text = ids_of(f"<|im_start|>user\nprompt {seed}: ")
    tail = ids_of("<|im_end|>\n<|im_start|>assistant\n")
    media: dict = {}
    if kind == "text":
        return text + ids_of("What is this?") + tail, media
    if kind == "image":  # a 2 x 1 grid: the source slice, then the two cells
        body = image_placeholder((2, 1), 0, use_image_id=True, n_queries=QUERIES)
        pixels, sizes = slices([(5, 7), (6, 3), (4, 4)], seed)
        media.update(pixel_values=pixels, tgt_sizes=sizes)
        return text + ids_of(body + "\nDescribe it.") + tail, media
    if kind == "audio":  # 2.3 s: 57 embeddings in groups of at most 25
        (wave,) = waves([2.3], seed)
        feats = audio_features([wave])
        media.update(input_features=feats.input_features, feature_lens=feats.feature_lens)
        return text + ids_of(audio_placeholder(wave.shape[0]) + "\nWhat do you hear?") + tail, media
    if kind == "omni":  # 3 units: a frame and a second of sound each; the sound merged into one clip
        seconds = [1.0, 1.0, 0.6]
        sound = torch.cat(waves(seconds, seed))
        units = "".join("<unit>" + image_placeholder(None, use_image_id=False, n_queries=QUERIES)
                        + audio_placeholder(int(s * 16000)) for s in seconds)
        pixels, sizes = slices([(4, 5), (4, 5), (4, 5)], seed)
        feats = audio_features([sound])
        media.update(pixel_values=pixels, tgt_sizes=sizes, video_slices=torch.ones(3, dtype=torch.bool),
                     input_features=feats.input_features, feature_lens=feats.feature_lens)
        return text + ids_of(units + "Describe what you see and hear.") + tail, media
    raise ValueError(kind)


def batch(rows: list[tuple[list[int], dict]]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Left-padded ids and the rows' media concatenated in row order (audio padded to the longest piece)."""
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, (ids, _) in enumerate(rows):
        input_ids[r, longest - len(ids):] = torch.tensor(ids)
        mask[r, longest - len(ids):] = 1
    media: dict = {}
    for name in ("pixel_values", "tgt_sizes", "video_slices", "input_features", "feature_lens"):
        parts = [m[name] for _, m in rows if name in m]
        if name == "video_slices" and parts:
            parts = [m.get(name, torch.zeros(len(m["tgt_sizes"]), dtype=torch.bool)) for _, m in rows if "tgt_sizes" in m]
        if name == "input_features" and parts:
            frames = max(p.shape[-1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, frames - p.shape[-1])) for p in parts]
        if parts:
            media[name] = torch.cat(parts)
    return input_ids, mask, media
