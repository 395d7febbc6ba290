"""Tiny random checkpoints laid out as the released ones: a Hugging Face folder (``config.json``,
safetensors, tokenizer, preprocessor config) with the released token ids, vocabulary, chat
template and preprocessing, and tiny dimensions (2 LLM layers of width 64). What
``HookedAVLLM.from_pretrained(folder)`` and ``model.prepare(prompt, video="clip.mp4")`` do on a
real checkpoint, they do on these in seconds on a CPU: the notebooks' real-checkpoint branches run
on them (``tests/test_notebooks_real_branch.py``). The weights are written by ``transformers``
(the reference implementation), so the folder is what a user downloads, not what we write.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np

from reference_models import randomize_
from test_inputs_support import encode_mp4

HUB = Path(__file__).parent / "fixtures" / "hub"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json")
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1)
TINY_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, fullatt_block_indexes=[1])
TINY_AUDIO = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, output_dim=64)
MROPE = {"rope_type": "default", "mrope_section": [2, 3, 3]}  # head width 16: 8 rotary pairs


def _copy_files(source: Path, folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (source / name).exists():
            shutil.copyfile(source / name, folder / name)


def _fast_tokenizer(folder: Path) -> None:
    """``tokenizer.json`` (the fast tokenizer, as the released repositories ship it) from the
    vocabulary and merges: each later load then reads it instead of converting them again (2 s)."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as saved:
        AutoTokenizer.from_pretrained(str(folder)).save_pretrained(saved)
        shutil.copyfile(Path(saved) / "tokenizer.json", folder / "tokenizer.json")


def omni_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Qwen2.5-Omni-3B's thinker, tiny: its config with the dimensions shrunk, its tokenizer, chat
    template and preprocessor config."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    released = json.loads((HUB / "Qwen__Qwen2.5-Omni-3B" / "config.json").read_text())["thinker_config"]
    cfg = copy.deepcopy(released)
    cfg["text_config"].update(TINY_TEXT, rope_scaling=dict(MROPE), rope_parameters={**MROPE, "rope_theta": 1e6})
    cfg["vision_config"].update(TINY_VISION)
    cfg["audio_config"].update(TINY_AUDIO)
    model = Qwen2_5OmniThinkerForConditionalGeneration(Qwen2_5OmniThinkerConfig(**cfg)).eval()
    randomize_(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _copy_files(HUB / "Qwen__Qwen2.5-Omni-7B", folder, (*TOKENIZER_FILES, "chat_template.json"))
    _copy_files(HUB / "Qwen__Qwen2.5-Omni-3B", folder, ("preprocessor_config.json", "generation_config.json"))
    _fast_tokenizer(folder)
    return folder


def vl_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Qwen2.5-VL-3B-Instruct, tiny (the vision-language base of Qwen2.5-Omni-3B): its config with
    the dimensions shrunk, the Qwen2 tokenizer, its own chat template and preprocessor config."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    released = json.loads((HUB / "Qwen__Qwen2.5-VL-3B-Instruct" / "config.json").read_text())
    ids = {k: v for k, v in released.items() if k.endswith("token_id")}
    text = {**TINY_TEXT, "vocab_size": released["vocab_size"], "rope_parameters": {**MROPE, "rope_theta": 1e6},
            "tie_word_embeddings": True}
    vision = {**released["vision_config"], **TINY_VISION}
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                                tie_word_embeddings=True, **ids)).eval()
    randomize_(model, seed)
    model.tie_weights()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    _copy_files(HUB / "Qwen__Qwen2.5-Omni-7B", folder, TOKENIZER_FILES)  # the Qwen2 BPE both models share
    _copy_files(HUB / "Qwen__Qwen2.5-VL-7B-Instruct", folder, ("tokenizer_config.json", "chat_template.json"))
    _copy_files(HUB / "Qwen__Qwen2.5-VL-3B-Instruct", folder, ("preprocessor_config.json", "generation_config.json"))
    _fast_tokenizer(folder)
    return folder


def clip_file(path: Path, seed: int, seconds: float = 2.0, fps: int = 4, size: tuple[int, int] = (56, 84),
              sound: bool = True) -> Path:
    """An H.264 mp4 of random frames with an AAC sound track (a tone with noise) of ``seconds``."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(int(seconds * fps), *size, 3), dtype=np.uint8)
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    track = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.shape))[None]
    return encode_mp4(path, frames, fps, track if sound else None, audio_rate=rate)


def wav_file(path: Path, seed: int, seconds: float = 2.0) -> Path:
    """A mono 16-kHz WAV of a tone with noise."""
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32),
                    16000)
    return path
