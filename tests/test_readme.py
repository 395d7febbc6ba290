"""The README as a contract: every Python block runs, in order, against the shipped toy model.

Two substitutions make that possible without downloads, and they are the only ones:
``HookedAVLLM.from_pretrained`` returns the toy Omni thinker for ``Qwen/Qwen2.5-Omni-*`` ids, the
toy vision-language base for ``Qwen/Qwen2.5-VL-*`` ids, a tiny random VideoLLaMA2.1-AV (with
the toy tokenizer) for ``DAMO-NLP-SG/VideoLLaMA2.1-*``, a tiny random Qwen3-Omni thinker for
``Qwen/Qwen3-Omni-*`` and tiny random MiniCPM-o / MiniCPM-V 2.6 models (with MiniCPM-o's tokenizer)
for ``openbmb/MiniCPM-*`` (dtype and device are ignored: they run in float32 on the CPU), and the media files the README names exist in the working directory as toy
clips (``clip.mp4``: a dog that sounds like a dog; ``dog.wav``: barking; ``car.mp4``: a silent car).
A block that imports ``sae_lens`` runs where SAELens is installed (CI's second environment, which
sets ``HOOKED_AVLLM_REQUIRE_SAE_LENS=1`` so that it cannot be skipped there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hooked_avllm import HookedAVLLM
from hooked_avllm.toy import ToyScenes, load_toy
from hooked_avllm.toy.data import OBJECT_WORDS
from test_inputs_support import encode_mp4

README = Path(__file__).resolve().parents[1] / "README.md"
REAL_FROM_PRETRAINED = HookedAVLLM.from_pretrained


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def toy_from_pretrained(name_or_path, *args, **kwargs):
    name = str(name_or_path)
    if name.startswith("Qwen/Qwen2.5-Omni"):
        return load_toy("omni")
    if name.startswith("Qwen/Qwen2.5-VL"):
        return load_toy("vl")
    if name.startswith("DAMO-NLP-SG/VideoLLaMA2.1"):
        return tiny_videollama2()
    if name.startswith("Qwen/Qwen3-Omni"):
        return tiny_qwen3_omni()
    if name.startswith("openbmb/MiniCPM-o-2_6"):
        return tiny_minicpm(audio=True)
    if name.startswith("openbmb/MiniCPM-V-2_6"):
        return tiny_minicpm(audio=False)
    if Path(name).is_dir():  # a local folder (load_toy itself) loads as usual
        return REAL_FROM_PRETRAINED(name_or_path, *args, **kwargs)
    raise AssertionError(f"the README loads {name!r}, which has no toy stand-in here")


def tiny_videollama2() -> HookedAVLLM:
    """A random tiny VideoLLaMA2.1-AV that reads prompts with the toy tokenizer."""
    import tempfile

    from transformers import AutoTokenizer

    from hooked_avllm.architectures.videollama2.config import tiny_config
    from hooked_avllm.toy.tokenizer import save_tokenizer

    model = HookedAVLLM.from_config(tiny_config(vocab_size=264))
    with tempfile.TemporaryDirectory() as folder:
        save_tokenizer(folder, "vl")
        model.tokenizer = AutoTokenizer.from_pretrained(folder)
    return model


def tiny_qwen3_omni() -> HookedAVLLM:
    """A random tiny Qwen3-Omni thinker that reads prompts with the toy Omni tokenizer (its media ids)."""
    import tempfile

    from transformers import AutoTokenizer

    from hooked_avllm.architectures.qwen3_omni.config import config_from_hf, tiny_config_json
    from hooked_avllm.toy.tokenizer import SPECIAL_IDS, save_tokenizer

    config = tiny_config_json(vocab_size=264)
    for kind in ("audio", "image", "video", "audio_start", "audio_end", "vision_start", "vision_end"):
        config[f"{kind}_token_id"] = SPECIAL_IDS[kind]
    model = HookedAVLLM.from_config(config_from_hf(config)).eval()
    with tempfile.TemporaryDirectory() as folder:
        save_tokenizer(folder, "omni")
        model.tokenizer = AutoTokenizer.from_pretrained(folder)
    return model


def tiny_minicpm(audio: bool) -> HookedAVLLM:
    """A random tiny MiniCPM-o 2.6 (``audio=False``: MiniCPM-V 2.6) of width 128 (one resampler head)
    with MiniCPM-o's tokenizer (the Qwen2 BPE and its released tokenizer config; vocabulary 151700)."""
    import tempfile

    from hooked_avllm.architectures.minicpm_o.config import config_from_hf, tiny_config_json
    from minicpm_reference_processor import build_minicpm_tokenizer_folder

    config = tiny_config_json(audio=audio)
    config.update(hidden_size=128, intermediate_size=128)
    model = HookedAVLLM.from_config(config_from_hf(config)).eval()
    with tempfile.TemporaryDirectory() as folder:
        model.tokenizer = model.architecture.load_tokenizer(build_minicpm_tokenizer_folder(folder))
    return model


def write_media(folder: Path) -> None:
    scenes = ToyScenes(seed=7)
    dog, car = OBJECT_WORDS.index("dog"), OBJECT_WORDS.index("car")
    clip = scenes.clip("congruent", 0, visible=dog, sound=dog)
    fps = 2
    encode_mp4(folder / "clip.mp4", clip.frames, fps, track=clip.audio[None].repeat(2, 0), audio_rate=16000)
    soundfile.write(folder / "dog.wav", clip.audio, 16000)
    silent = scenes.clip("congruent", 1, visible=car, sound=car)
    encode_mp4(folder / "car.mp4", silent.frames, fps)


def test_readme_blocks_run_against_the_toy(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    blocks = python_blocks()
    assert len(blocks) >= 4
    monkeypatch.setattr(HookedAVLLM, "from_pretrained", staticmethod(toy_from_pretrained))
    monkeypatch.chdir(tmp_path)
    write_media(tmp_path)
    namespace: dict = {}
    ran = 0
    for i, block in enumerate(blocks):
        if "sae_lens" in block:
            try:
                import sae_lens  # noqa: F401
            except ImportError:
                if os.environ.get("HOOKED_AVLLM_REQUIRE_SAE_LENS") == "1":
                    raise
                continue  # runs in CI's SAELens environment
        exec(compile(block, f"README.md[python block {i}]", "exec"), namespace)
        ran += 1
    assert ran >= len(blocks) - 1
    for name in ("share.png", "patching.png", "attribution.png", "heatmap.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    # the examples computed what their comments say
    audio_tokens = int(namespace["inputs"].layout.audio.sum())
    assert namespace["stack"].shape[1] == namespace["dla"].shape[1] == audio_tokens
    assert namespace["layer_logits"].shape[-1] == namespace["model"].cfg.d_vocab
    assert namespace["estimate"].components.values.shape == namespace["sweep"].values.shape
    assert len(namespace["rows"]) == len(namespace["knocked"].table()) == 2 * 3  # clips x (baseline + 2 windows)
    mc = namespace["mc_inputs"].layout  # MiniCPM-o: the clip's sound inside its 1-s units, every frame on the heatmap
    assert mc.use_audio_in_video and mc.audio.any() and mc.video.any()
    assert namespace["heat"].grid.shape[0] == int(mc.frame_group[mc.video].max()) + 1
    assert namespace["mc_shift"].shared_vocab == namespace["mini_v"].cfg.d_vocab


def test_readme_names_only_what_the_library_exports():
    """Every name a README block imports from hooked_avllm exists (a typo fails here first)."""
    import importlib

    for block in python_blocks():
        for module, grouped, single in re.findall(r"from (hooked_avllm[\w.]*) import (?:\(([^)]*)\)|([^\n]*))", block):
            imported = importlib.import_module(module)
            names = (grouped or single).split("#")[0]
            for name in (n.strip() for n in names.replace("\n", " ").split(",")):
                if name:
                    assert hasattr(imported, name), f"{module}.{name}"


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-Omni-3B", "Qwen/Qwen2.5-VL-3B-Instruct"])
def test_stand_ins_are_the_toys(name):
    model = toy_from_pretrained(name)
    assert model.cfg.architecture in ("qwen2_5_omni_thinker", "qwen2_5_vl") and not model.training
    assert np.isfinite(float(model.W_U.detach().sum()))
