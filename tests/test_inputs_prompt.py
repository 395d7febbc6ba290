"""Prompt ids: the checkpoint's chat template with placeholders expanded by the issue's rules.

Expected ids come from ``tokenizer.apply_chat_template`` (transformers' jinja rendering of the real
Qwen2.5-Omni template) with each placeholder string replaced by an expansion written here from
the rules, independently of the library.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_inputs_support import OMNI, audio_tokens, omni_tokenizer

from hooked_avllm.architectures.qwen import load_video, prepare_inputs

SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)


def expected_ids(user_content: list[dict], expansions: dict[str, list[str]], system: str = SYSTEM) -> list[int]:
    """Render with the real template, then replace each placeholder string, in order, by its expansion."""
    tok = omni_tokenizer()
    messages = [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": user_content},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for placeholder, replacements in expansions.items():
        pieces = text.split(placeholder)
        assert len(pieces) == len(replacements) + 1, placeholder
        text = pieces[0] + "".join(r + p for r, p in zip(replacements, pieces[1:]))
    return tok(text, add_special_tokens=False)["input_ids"]


def audio_in_video_string(n_groups: int, tokens_per_group: int, second_per_grid: float, n_audio: int) -> str:
    """The issue's rule: chunk j holds frame groups with floor(g*spg*25) in [50j, 50j+50), then audio k in the same range."""
    group_chunk = [math.floor(g * second_per_grid * 25) // 50 for g in range(n_groups)]
    audio_chunk = [k // 50 for k in range(n_audio)]
    text = "<|audio_bos|>"
    for j in range(max(group_chunk + audio_chunk) + 1):
        text += "<|VIDEO|>" * (tokens_per_group * group_chunk.count(j))
        text += "<|AUDIO|>" * audio_chunk.count(j)
    return text + "<|audio_eos|>"


def real_ids(inputs, row: int = 0) -> list[int]:
    return inputs.input_ids[row][inputs.attention_mask[row].bool()].tolist()


@pytest.fixture(scope="module")
def tok():
    return omni_tokenizer()


@pytest.mark.parametrize(
    "video_seconds, audio_seconds",
    [(5.0, 5.3), (5.0, 2.5), (2.0, 7.1), (4.0, 4.0)],
    ids=["audio-longer", "audio-shorter", "audio-much-longer", "equal"],
)
def test_audio_in_video_interleaving(tok, video_seconds, audio_seconds):
    n_frames = int(video_seconds * 2)
    frames = np.random.default_rng(1).integers(0, 256, (n_frames, 56, 84, 3), dtype=np.uint8)
    n_samples = int(round(audio_seconds * 16000))
    sound = (0.1 * np.random.default_rng(2).standard_normal(n_samples)).astype(np.float32)
    clip = load_video(frames, audio=(sound, 16000))
    h, w = clip.frames.shape[-2:]
    per_group = (h // 28) * (w // 28)
    inputs = prepare_inputs(
        tok, OMNI, OMNI, prompt="Describe what you see and hear.", video=clip, audio_padding="longest"
    )
    block = audio_in_video_string(n_frames // 2, per_group, 1.0, audio_tokens(n_samples))
    content = [{"type": "video"}, {"type": "text", "text": "Describe what you see and hear."}]
    assert real_ids(inputs) == expected_ids(content, {"<|VIDEO|>": [block]})
    assert inputs.use_audio_in_video and inputs.video_second_per_grid.tolist() == [1.0]


def test_low_fps_chunking_follows_the_reference(tok):
    """At 0.5 fps (4 s per frame group) groups skip chunks; the reference opens one chunk per token."""
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor

    frames = np.zeros((6, 56, 56, 3), np.uint8)
    clip = load_video(frames, fps=0.5, audio=(np.zeros(16000 * 12, np.float32) + 0.01, 16000))
    inputs = prepare_inputs(tok, None, OMNI, prompt="x", video=clip, audio_padding="longest")
    chunked = Qwen2_5OmniProcessor.get_chunked_index  # the reference's own splitter (does not use self)
    per_group = (clip.frames.shape[-2] // 28) * (clip.frames.shape[-1] // 28)
    video_t = np.repeat(np.arange(3) * 4.0 * 25, per_group)
    v_chunks = [b - a for a, b in chunked(None, video_t, 50)]
    a_chunks = [b - a for a, b in chunked(None, np.arange(300), 50)]
    block = "<|audio_bos|>"
    for j in range(max(len(v_chunks), len(a_chunks))):
        block += "<|VIDEO|>" * (v_chunks[j] if j < len(v_chunks) else 0)
        block += "<|AUDIO|>" * (a_chunks[j] if j < len(a_chunks) else 0)
    block += "<|audio_eos|>"
    assert real_ids(inputs) == expected_ids([{"type": "video"}, {"type": "text", "text": "x"}], {"<|VIDEO|>": [block]})


def test_separate_media_placed_by_placeholders(tok):
    image = np.zeros((56, 84, 3), np.uint8)  # 56x84 -> 2x3 merged tokens
    sound = np.zeros(16000 * 3, np.float32)  # 3 s -> 75 tokens
    frames = np.zeros((4, 280, 364, 3), np.uint8)  # 2 groups of 10x13 merged tokens
    prompt = "First <|AUDIO|>, then <|IMAGE|> and <|VIDEO|>. What happens?"
    inputs = prepare_inputs(
        tok, OMNI, OMNI, prompt=prompt, images=image, audio=sound, video=frames, use_audio_in_video=False
    )
    content = [
        {"type": "text", "text": "First "},
        {"type": "audio"},
        {"type": "text", "text": ", then "},
        {"type": "image"},
        {"type": "text", "text": " and "},
        {"type": "video"},
        {"type": "text", "text": ". What happens?"},
    ]
    expansions = {"<|AUDIO|>": ["<|AUDIO|>" * 75], "<|IMAGE|>": ["<|IMAGE|>" * 6], "<|VIDEO|>": ["<|VIDEO|>" * 260]}
    assert real_ids(inputs) == expected_ids(content, expansions)
    assert not inputs.use_audio_in_video


def test_media_without_placeholders_go_first_and_brackets_are_accepted(tok):
    images = [np.zeros((28, 28, 3), np.uint8), np.zeros((56, 56, 3), np.uint8)]  # 56x56 each -> 4 tokens
    plain = prepare_inputs(tok, OMNI, OMNI, prompt="Compare them.", images=images)
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare them."}]
    assert real_ids(plain) == expected_ids(content, {"<|IMAGE|>": ["<|IMAGE|>" * 4] * 2})
    bracketed = prepare_inputs(
        tok, OMNI, OMNI, prompt="<|vision_bos|><|IMAGE|><|vision_eos|><|IMAGE|>Compare them.", images=images
    )
    assert torch.equal(bracketed.input_ids, plain.input_ids)


def test_system_prompt_can_be_changed(tok):
    inputs = prepare_inputs(tok, OMNI, OMNI, prompt="Hi.", system_prompt="You are terse.")
    assert real_ids(inputs) == expected_ids([{"type": "text", "text": "Hi."}], {}, system="You are terse.")
    default = tok.decode(real_ids(prepare_inputs(tok, OMNI, OMNI, prompt="Hi.")))
    assert default.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nHi.<|im_end|>\n")


def test_chat_messages_and_raw_text(tok):
    sound = np.zeros(16000, np.float32)  # 25 tokens
    messages = [
        {"role": "user", "content": [{"type": "audio", "audio": sound}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "Silence."},
        {"role": "user", "content": "Sure?"},
    ]
    inputs = prepare_inputs(tok, OMNI, OMNI, prompt=messages)
    rendered = tok.apply_chat_template(
        [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}] + messages,
        tokenize=False,
        add_generation_prompt=True,
    )
    expected = tok(rendered.replace("<|AUDIO|>", "<|AUDIO|>" * 25), add_special_tokens=False)["input_ids"]
    assert real_ids(inputs) == expected
    raw = "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>hi<|im_end|>\n<|im_start|>assistant\n"
    raw_inputs = prepare_inputs(tok, OMNI, OMNI, prompt=raw, audio=sound, chat_template=False)
    assert (
        real_ids(raw_inputs) == tok(raw.replace("<|AUDIO|>", "<|AUDIO|>" * 25), add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_is_padded_on_the_chosen_side(tok, side):
    sound = np.zeros(16000 * 2, np.float32)  # 50 tokens
    inputs = prepare_inputs(
        tok, OMNI, OMNI, prompt=["Short.", "A longer prompt <|AUDIO|> here."], audio=[None, sound], padding_side=side
    )
    short = expected_ids([{"type": "text", "text": "Short."}], {})
    long = expected_ids(
        [{"type": "text", "text": "A longer prompt "}, {"type": "audio"}, {"type": "text", "text": " here."}],
        {"<|AUDIO|>": ["<|AUDIO|>" * 50]},
    )
    width = len(long)
    assert inputs.input_ids.shape == (2, width)
    pad = width - len(short)
    row = inputs.input_ids[0].tolist()
    assert (row[pad:] if side == "left" else row[: len(short)]) == short
    assert (row[:pad] if side == "left" else row[len(short) :]) == [tok.pad_token_id] * pad
    mask = inputs.attention_mask[0].tolist()
    assert mask == ([0] * pad + [1] * len(short) if side == "left" else [1] * len(short) + [0] * pad)
    assert real_ids(inputs, 1) == long
    assert inputs.input_features.shape[0] == 1 and inputs.layout.spans[0].batch == 1


def test_batched_media_follow_sequence_order(tok):
    a, b, c = (np.full((56, 56, 3), v, np.uint8) for v in (0, 100, 200))
    inputs = prepare_inputs(tok, OMNI, OMNI, prompt=["<|IMAGE|> then <|IMAGE|>", "one"], images=[[a, b], c])
    per_image = inputs.pixel_values.reshape(3, -1, 1176)  # 3 images of 4x4 patches
    firsts = per_image[:, 0, 0].tolist()
    assert firsts[0] < firsts[1] < firsts[2]  # a, b (row 0, in order), then c (row 1)
    assert [(s.batch, s.index) for s in inputs.layout.spans] == [(0, 0), (0, 1), (1, 2)]
