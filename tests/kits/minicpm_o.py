"""MiniCPM-o 2.6's test kit: the tiny model of ``tiny_config_json`` (a 2-layer Qwen2 of width 256,
because the released resampler takes ``d_model / 128`` heads; 8 resampler queries; vocab 512 with the
layout's ids at 300-310, ``minicpm_cases.TOKENS``), inputs laid out from their ids as the released
model finds its bounds, and the reference assembly of ``minicpm_reference.py`` (transformers' Qwen2,
Idefics2 vision and Whisper modules, the resampler written from the published code), whose LLM reads
embeddings from its own embedding table and towers.

Audio: Whisper at 100 feature frames a second, pooled to 25 tokens a second (0.04 s each), in
bounds of at most 25. A video with its sound is the audio-visual recipe: one ``<unit>`` a second, each
a frame (one slice of 4 x 4 patches -> 8 resampler rows) and that second's audio; its frames sit at
the recipe's times (unit ``u`` at ``u + 1`` s, the last repeating the previous one). A video without
sound is its frames as images, one a second from 0 s. Video tokens are resampler queries, not grid
cells: frame heatmaps route them onto each frame's patches (``clip_grid`` is that grid).
"""

from __future__ import annotations

import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.minicpm_o.config import config_from_hf, tiny_config_json
from hooked_avllm.architectures.minicpm_o.layout import FrameInfo, layout_from_ids
from hooked_avllm.architectures.minicpm_o.preprocess import audio_placeholder, image_placeholder
from hooked_avllm.components.rotary import rotary_1d
from hooked_avllm.inputs import ModelInputs
from hooked_avllm.vocabulary import KIND_CODE
from kits import ClipAnswers, FamilyKit
from kits._hf_thinker import rows
from minicpm_cases import QUERIES, STRINGS, TOKENS, VOCAB, ids_of
from parity import load_ours

FEATURE_FRAMES_PER_SECOND = 100  # Whisper log-mel: 10-ms frames
SAMPLES_PER_SECOND = 16000
PATCHES = (4, 4)  # one 56 x 56 frame: 4 x 4 patches of 14 px


def minicpm_config_json(vocab_size: int | None = None, audio: bool = True, vision: bool = True) -> dict:
    return tiny_config_json(vocab_size=vocab_size or VOCAB, audio=audio, vision=vision)


def minicpm_model(seed: int = 0, audio: bool = True, vision: bool = True, vocab_size: int | None = None) -> HookedAVLLM:
    """A random tiny MiniCPM-o (``audio=False``: the MiniCPM-V 2.6 shape) in float32, eval mode."""
    cfg = config_from_hf(minicpm_config_json(vocab_size, audio, vision), TOKENS)
    return HookedAVLLM.from_config(cfg, seed=seed).eval()


def minicpm_clip_inputs(model: HookedAVLLM, *, video: bool = True, audio: bool = True, seconds: int = 3, seed: int = 0,
                        audio_seed: int | None = None, prefix: int = 5, suffix: int = 4) -> ModelInputs:
    """One row: ``prefix`` text ids, the clip, ``suffix`` text ids (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    ga = torch.Generator().manual_seed(audio_seed if audio_seed is not None else seed + 1000)
    head, tail = rows(prefix, g), rows(suffix, g)
    frame = image_placeholder(None, use_image_id=False, n_queries=QUERIES)
    media: dict = {}
    frames: dict[int, FrameInfo] = {}
    if video and audio:  # one unit a second: the frame, then that second's sound
        body = ids_of("".join("<unit>" + frame + audio_placeholder(SAMPLES_PER_SECOND) for _ in range(seconds)))
    elif video:  # the frames as images, one a second
        body = []
        for u in range(seconds):
            frames[len(head) + len(body)] = FrameInfo(video=0, time=float(u))
            body += ids_of(frame)
    else:
        body = ids_of(audio_placeholder(seconds * SAMPLES_PER_SECOND))
    if video:
        h, w = PATCHES
        media.update(pixel_values=torch.randn(seconds * h * w, 3 * 14 * 14, generator=g),
                     tgt_sizes=torch.tensor([PATCHES] * seconds), video_slices=torch.ones(seconds, dtype=torch.bool))
    if audio:
        n = seconds * FEATURE_FRAMES_PER_SECOND
        media.update(input_features=torch.randn(1, 80, n, generator=ga), feature_lens=torch.tensor([n]))
    input_ids = torch.tensor([head + body + tail])
    if frames:  # only the prompt builder knows that these images are a video's frames
        layout = layout_from_ids(input_ids, None, model.cfg.tokens, n_queries=QUERIES, frames=[frames])
        spec = model.architecture.input_spec(model.cfg)
        return ModelInputs(layout.input_ids.clone(), layout.attention_mask.clone(), layout, media, spec)
    return model.to_inputs(input_ids, torch.ones_like(input_ids), **media)


def reference_media(inputs: ModelInputs) -> dict:
    return {k: v for k, v in inputs.media.items() if isinstance(v, torch.Tensor)}


class MiniCPMOKit(FamilyKit):
    name = "minicpm_o"
    other_length = dict(seconds=2)  # 2 s of audio and video instead of 3 (audio pieces padded to the longest)
    audio_tokens_per_second = 25
    audio_inside_video_bracket = False  # no video bracket: a unit's audio follows its frame
    lays_out_bare_ids = True  # bounds in the ids (a video's frames without sound excepted: built with their layout)
    video_pixels = "pixel_values"
    video_tokens_on_grid = False  # resampler queries
    frames_per_group = 1
    reference_generates_prompt = False  # the reference LLM generates from embeddings: new tokens only
    answers = ClipAnswers(
        early_audio=2 * 50,  # two clips, 2 s each at 25 tokens/s
        other_row_audio=50,
        window_audio=15,  # tokens at 0.52 .. 1.08 s
        audio_in_second_two=25,
        aligned_windows=(((0.0, 2.0), 50), 75, ((1.0, 1.5), 13, 1.0)),
        # source: 5 + 4 text and 3 audio bounds (6 brackets) = 15 text tokens; target with prefix 7: 7 + 4
        # + 3 units x (<unit> <image> </image> <|audio_start|> <|audio_end|>) = 26; a unit is 38 tokens
        # (5 brackets, 8 frame rows, 25 audio rows), its audio at 12..36: the last at 5 + 2 * 38 + 36 = 117;
        # the audio-only 2-s clip: 5 + 2 x 27 + 4 = 63 tokens
        patching_counts=dict(audio=(75, 50), text=(15, 26), last_audio=117, two=63),
        clip_grid=(3, 4, 4),  # 3 frames of 4 x 4 patches (the frame heatmap's grid)
        other_clip_grid=(2, 4, 4),
    )

    def model(self, seed=0, *, audio=True, vision=True, vocab_size=None):
        return minicpm_model(seed=seed, audio=audio, vision=vision, vocab_size=vocab_size)

    def clip(self, model, *, video=True, audio=True, seconds=3, seed=0, audio_seed=None, prefix=5, suffix=4):
        return minicpm_clip_inputs(model, video=video, audio=audio, seconds=seconds, seed=seed, audio_seed=audio_seed,
                                   prefix=prefix, suffix=suffix)

    def text(self, model, input_ids):
        return model.to_inputs(input_ids, torch.ones_like(input_ids))

    def audio_token_times(self, n_tokens):
        return torch.arange(n_tokens) * 0.04  # 25 tokens a second

    def token_kinds(self, input_ids, attention_mask, tokens):
        """The bounds read off the ids (all media share one placeholder): audio bodies between
        ``<|audio_start|>`` and ``<|audio_end|>``, frames (``<image>`` bodies right after ``<unit>``)
        as video, other ``<image>`` / ``<slice>`` bodies as image, brackets as text."""
        kinds = torch.full_like(input_ids, KIND_CODE["text"], dtype=torch.long)
        for b, row in enumerate(input_ids.tolist()):
            inside = None
            for i, token in enumerate(row):
                if token == tokens.audio_start:
                    inside = "audio"
                elif token == tokens.image_start:
                    inside = "video" if i > 0 and row[i - 1] == tokens.unit else "image"
                elif token == tokens.slice_start:
                    inside = "image"
                elif token in (tokens.audio_end, tokens.image_end, tokens.slice_end):
                    inside = None
                elif inside is not None:
                    kinds[b, i] = KIND_CODE[inside]
        if attention_mask is not None:
            kinds = torch.where(attention_mask == 0, KIND_CODE["padding"], kinds)
        return kinds

    def decoder_rotary(self, text_cfg, position_ids):
        return rotary_1d(position_ids[0], text_cfg.d_head, text_cfg.rope_theta)  # 1D rotary over the one row

    # ---- the reference: its LLM on its own embeddings (text and towers)
    def reference_pair(self, seed, folder, variant="a"):
        from minicpm_reference import ReferenceMiniCPMO

        reference = ReferenceMiniCPMO(minicpm_config_json(), TOKENS, seed=seed)
        tokenizer_config = {"added_tokens_decoder": {str(i): {"content": s} for s, i in STRINGS.items()},
                            "pad_token": "<|endoftext|>"}
        reference.save_checkpoint(folder, tokenizer_config, {"image_feature_size": QUERIES})  # the released layout
        return reference, load_ours(folder, load_tokenizer=False)

    def reference_forward(self, reference, inputs, mask):
        embeds = reference.embeddings(inputs.input_ids, reference_media(inputs))
        return reference.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=inputs.layout.position_ids[0],
                             output_hidden_states=True)

    def reference_decoder(self, reference, inputs):
        return reference.llm.model, inputs.layout.position_ids[0]  # Qwen2: one row of 1D positions

    def reference_generator(self, reference, inputs):
        return reference.llm, dict(inputs_embeds=reference.embeddings(inputs.input_ids, reference_media(inputs)),
                                   attention_mask=inputs.attention_mask)

    def generation_case(self, ours, case, seed, padding_side="left"):
        """A video with its sound (omni units), a padded batch (that clip and an audio-only clip), or text."""
        if case == "audio_in_video":
            return self.clip(ours, seed=seed)
        if case == "padded_batch":
            rows_ = [self.clip(ours, seed=seed), self.clip(ours, video=False, seconds=2, seed=seed + 1)]
            return self.batch(ours, rows_, padding_side)
        if case == "text":
            return self.text(ours, torch.randint(0, 199, (1, 11), generator=torch.Generator().manual_seed(seed)))
        raise KeyError(case)


KIT = MiniCPMOKit()
