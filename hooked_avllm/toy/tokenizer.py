"""The toy models' word-level tokenizer, built with the ``tokenizers`` library.

Every word of the prompts and answers is one token (words, punctuation marks and newlines are
split apart; spaces are dropped and put back when decoding). The special tokens sit at the end of
the vocabulary in Qwen's order (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, then the
media tokens), at ids ``SPECIAL_BASE + offset`` where Qwen has ``151643 + offset``. The
vision-language base uses Qwen2.5-VL's names for them (``<|vision_start|>``, ``<|video_pad|>``
...), the audio-visual model Qwen2.5-Omni's (``<|vision_bos|>``, ``<|VIDEO|>``, ``<|AUDIO|>``
...): same ids, as in the real pair.

Example:
    >>> tok = build_tokenizer("omni")
    >>> tok.encode("What do you hear?").tokens
    ['What', 'do', 'you', 'hear', '?']
    >>> tok.token_to_id("<|AUDIO|>") == SPECIAL_IDS["audio"]
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from hooked_avllm.architectures.qwen.spec import OMNI_SYSTEM_PROMPT, VL_SYSTEM_PROMPT
from hooked_avllm.toy.data import OBJECT_WORDS, QUESTIONS, SOUND_WORDS

Kind = Literal["omni", "vl"]

VOCAB_SIZE = 256
SPECIAL_BASE = 240
UNK = "[UNK]"

# (offset from SPECIAL_BASE, Qwen2.5-Omni name, Qwen2.5-VL name); offsets are Qwen's (151643 + offset)
SPECIALS: tuple[tuple[int, str, str], ...] = (
    (0, "<|endoftext|>", "<|endoftext|>"),
    (1, "<|im_start|>", "<|im_start|>"),
    (2, "<|im_end|>", "<|im_end|>"),
    (3, "<|AUDIO|>", "<|object_ref_start|>"),
    (4, "<|audio_bos|>", "<|object_ref_end|>"),
    (5, "<|audio_eos|>", "<|box_start|>"),
    (6, "<|box_end|>", "<|box_end|>"),
    (7, "<|quad_start|>", "<|quad_start|>"),
    (8, "<|quad_end|>", "<|quad_end|>"),
    (9, "<|vision_bos|>", "<|vision_start|>"),
    (10, "<|vision_eos|>", "<|vision_end|>"),
    (11, "<|vision_pad|>", "<|vision_pad|>"),
    (12, "<|IMAGE|>", "<|image_pad|>"),
    (13, "<|VIDEO|>", "<|video_pad|>"),
)
SPECIAL_IDS = {
    "pad": SPECIAL_BASE + 0,
    "im_start": SPECIAL_BASE + 1,
    "im_end": SPECIAL_BASE + 2,
    "audio": SPECIAL_BASE + 3,
    "audio_start": SPECIAL_BASE + 4,
    "audio_end": SPECIAL_BASE + 5,
    "vision_start": SPECIAL_BASE + 9,
    "vision_end": SPECIAL_BASE + 10,
    "image": SPECIAL_BASE + 12,
    "video": SPECIAL_BASE + 13,
}
EOS_ID = SPECIAL_IDS["im_end"]
PAD_ID = SPECIAL_IDS["pad"]

# The released chat templates (Qwen2.5-Omni's and Qwen2.5-VL's chat_template.json, verbatim).
OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}{% set video_count = "
    "namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>{% elif content['type'] == 'audio' or 'audio' in content or "
    "'audio_url' in content %}{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio "
    "{{ audio_count.value }}: {% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' or "
    "'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

SPLIT_PATTERN = r"\w+|[^\w\s]|\n"  # words, single punctuation marks, newlines; other spaces dropped

EXTRA_TEXT = (
    # chat roles, the study's other prompts, answer templates, and the templates' add_vision_id labels
    "system user assistant Describe what you see. Describe what you hear. I see a and I hear nothing silence "
    "Picture Video Audio 0 1 2 3 4 5 6 7 8 9 : the sound of an it is there no"
)


def _words(text: str) -> list[str]:
    import re

    return re.findall(SPLIT_PATTERN, text)


def vocabulary() -> list[str]:
    """The ordinary (non-special) tokens, id order: ``[UNK]``, then every word of the texts."""
    words: list[str] = [UNK, "\n"]
    texts = [OMNI_SYSTEM_PROMPT, VL_SYSTEM_PROMPT, *QUESTIONS.values(), EXTRA_TEXT, " ".join(OBJECT_WORDS), " ".join(SOUND_WORDS)]
    for text in texts:
        for word in _words(text):
            if word not in words:
                words.append(word)
    if len(words) > SPECIAL_BASE:
        raise ValueError(f"{len(words)} words do not fit below the special tokens at {SPECIAL_BASE}")
    return words


def special_names(kind: Kind) -> dict[int, str]:
    """Special token id -> name for one of the two models."""
    column = 1 if kind == "omni" else 2
    return {SPECIAL_BASE + row[0]: row[column] for row in SPECIALS}


def build_tokenizer(kind: Kind = "omni"):
    """A ``tokenizers.Tokenizer``: word level, Qwen special tokens at the toy ids."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
    )

    vocab = {word: i for i, word in enumerate(vocabulary())}
    specials = special_names(kind)
    for i in range(len(vocab), SPECIAL_BASE):  # unused rows keep their ids stable (and decodable)
        vocab[f"<|unused_{i}|>"] = i
    for i, name in specials.items():
        vocab[name] = i
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True)
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, " ." -> "."
    tokenizer.add_special_tokens(
        [AddedToken(name, special=True, normalized=False) for _, name in sorted(specials.items())]
    )
    return tokenizer


def tokenizer_config(kind: Kind) -> dict:
    """``tokenizer_config.json`` for ``transformers.AutoTokenizer`` (with the model's chat template)."""
    specials = special_names(kind)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": specials[EOS_ID],
        "pad_token": specials[PAD_ID],
        "unk_token": UNK,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "split_special_tokens": False,
        "additional_special_tokens": [name for i, name in sorted(specials.items()) if i not in (PAD_ID,)],
        "chat_template": OMNI_CHAT_TEMPLATE if kind == "omni" else VL_CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": name, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
            for i, name in sorted(specials.items())
        },
    }
    if kind == "omni":
        names = {s: specials[SPECIAL_IDS[k]] for s, k in (
            ("image_token", "image"), ("audio_token", "audio"), ("video_token", "video"),
            ("vision_bos_token", "vision_start"), ("vision_eos_token", "vision_end"),
            ("audio_bos_token", "audio_start"), ("audio_eos_token", "audio_end"),
        )}
        config["extra_special_tokens"] = names
    return config


def save_tokenizer(folder: str | Path, kind: Kind) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(kind).save(str(folder / "tokenizer.json"))
    config = tokenizer_config(kind)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    specials = special_names(kind)
    special_map = {
        "eos_token": specials[EOS_ID],
        "pad_token": specials[PAD_ID],
        "unk_token": UNK,
        "additional_special_tokens": config["additional_special_tokens"],
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
