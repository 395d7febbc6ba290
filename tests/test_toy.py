"""The shipped toy model organism: data generator, tokenizer, checkpoints against the Hugging Face
reference, and the trained behaviour on a few clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.qwen import PreprocessorConfig
from hooked_avllm.inputs import audio_features
from hooked_avllm.toy import OMNI_PATH, VL_PATH, ToyScenes, toy_config
from hooked_avllm.toy.data import (
    OBJECT_WORDS,
    OBJECTS,
    QUESTIONS,
    SOUND_WORDS,
    K,
    answer,
    parse_answer,
)
from hooked_avllm.toy.evaluate import probe_accuracy
from hooked_avllm.toy.export import hf_state_dict, hf_tensor_shapes, save_pretrained
from hooked_avllm.toy.tokenizer import EOS_ID, PAD_ID, SPECIAL_IDS, UNK, build_tokenizer

TOL = 1e-4


# ------------------------------------------------------------------------------------ data

def test_generator_is_deterministic():
    for kind in ("congruent", "counterfactual", "audio_only", "video_only"):
        a, b = ToyScenes(3).clip(kind, 7), ToyScenes(3).clip(kind, 7)
        assert (a.visible, a.sound) == (b.visible, b.sound)
        for x, y in ((a.frames, b.frames), (a.audio, b.audio)):
            assert (x is None and y is None) or np.array_equal(x, y)
    c, d = ToyScenes(3).clip("congruent", 8), ToyScenes(4).clip("congruent", 7)
    assert not np.array_equal(c.frames, ToyScenes(3).clip("congruent", 7).frames)
    assert not np.array_equal(d.audio, ToyScenes(3).clip("congruent", 7).audio)


def test_clip_kinds_and_labels():
    scenes = ToyScenes(0)
    for i in range(20):
        cf = scenes.clip("counterfactual", i)
        assert cf.visible != cf.sound and cf.frames.shape == (4, 112, 112, 3) and cf.audio.shape == (32000,)
        co = scenes.clip("congruent", i)
        assert co.visible == co.sound
        assert scenes.clip("audio_only", i).frames is None and scenes.clip("video_only", i).audio is None
    assert abs(float(scenes.clip("congruent", 0).audio.std())) > 0.01


def test_classes_are_distinct():
    assert len(set(OBJECT_WORDS)) == len(set(SOUND_WORDS)) == K >= 8
    for attribute in ("colour", "shape", "motion"):
        assert len({getattr(o, attribute) for o in OBJECTS}) == K
    # a linear classifier on simple features tells the classes apart on held-out clips: log-mel mean and
    # spread over time for the sounds, the colour of the pixels that differ from the background for the pictures
    scenes = ToyScenes(5)
    clips = [scenes.clip("congruent", i, visible=i % K) for i in range(8 * K)]
    mels = audio_features([torch.from_numpy(c.audio) for c in clips], PreprocessorConfig(), padding="longest").input_features
    sound_x = torch.cat([mels.mean(-1), mels.std(-1)], 1)
    colour_x = torch.tensor(np.stack([_object_colour(c.frames) for c in clips]))
    labels = torch.tensor([c.visible for c in clips])
    train, test = slice(0, 5 * K), slice(5 * K, None)
    for x in (sound_x, colour_x):
        assert probe_accuracy(x[train], labels[train], x[test], labels[test]) >= 0.9


def _object_colour(frames: np.ndarray) -> np.ndarray:
    pixels = frames.reshape(-1, 3).astype(np.float32)
    background = np.median(pixels, 0)
    return pixels[np.abs(pixels - background).sum(1) > 80].mean(0)


def test_answers_parse_back():
    clip = ToyScenes(0).clip("counterfactual", 1)
    assert parse_answer(answer("describe", clip)) == (clip.visible_name, clip.sound_word)
    assert parse_answer(answer("hear", clip)) == (None, clip.sound_word)
    assert parse_answer("I see a zebra.") == (None, None)


# ------------------------------------------------------------------------------------ tokenizer

@pytest.mark.parametrize("kind", ["omni", "vl"])
def test_tokenizer_round_trips_templates(kind):
    tok = build_tokenizer(kind)
    texts = list(QUESTIONS.values())
    for obj in OBJECTS:
        clip = ToyScenes(0).clip("congruent", 0, visible=OBJECTS.index(obj))
        texts += [answer(q, clip) for q in QUESTIONS]
    for text in texts:
        encoding = tok.encode(text)
        assert UNK not in encoding.tokens
        assert tok.decode(encoding.ids) == text
    assert len(tok.encode("I hear barking.").ids) == 4  # one token per word


@pytest.mark.parametrize("kind, path", [("omni", OMNI_PATH), ("vl", VL_PATH)])
def test_tokenizer_ids_match_config(kind, path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    cfg = HookedAVLLM.from_pretrained(path, load_tokenizer=False).cfg
    expected = toy_config(kind)
    for part in ("text", "vision", "audio", "tokens", "position_id_per_second", "seconds_per_chunk", "architecture"):
        assert getattr(cfg, part) == getattr(expected, part), part
    t = cfg.tokens
    names = {"image": t.image, "video": t.video, "vision_start": t.vision_start, "vision_end": t.vision_end}
    if kind == "omni":
        names.update(audio=t.audio, audio_start=t.audio_start, audio_end=t.audio_end)
        assert tok.convert_ids_to_tokens([t.audio, t.audio_start, t.audio_end, t.video]) == [
            "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|VIDEO|>"]
    else:
        assert t.audio is None and tok.convert_ids_to_tokens([t.video, t.vision_start]) == ["<|video_pad|>", "<|vision_start|>"]
    for key, value in names.items():
        assert SPECIAL_IDS[key] == value
    assert tok.eos_token_id == EOS_ID == t.eos[0] and tok.pad_token_id == PAD_ID == t.pad
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]) == [241, 242, 240]
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What do you see?"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text.endswith("What do you see?<|im_end|>\n<|im_start|>assistant\n")
    assert UNK not in tok.tokenize(text)


# ------------------------------------------------------------------------------------ checkpoints vs the reference

@pytest.fixture(scope="module")
def omni():
    return HookedAVLLM.from_pretrained(OMNI_PATH)


@pytest.fixture(scope="module")
def vl():
    return HookedAVLLM.from_pretrained(VL_PATH)


def test_omni_checkpoint_matches_reference(omni):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    reference, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        str(OMNI_PATH), dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference.eval()
    clip = ToyScenes(11).clip("counterfactual", 0)
    inputs = omni.prepare(prompt="Describe what you see and hear.", **clip.media())
    assert inputs.use_audio_in_video and int(inputs.layout.audio.sum()) == 50 and int(inputs.layout.video.sum()) == 32
    assert inputs.input_ids.shape[1] < 150
    with torch.no_grad():
        ours = omni(inputs)
        theirs = reference(**inputs.model_kwargs()).logits
    assert (ours - theirs).abs().max() < TOL


def test_vl_checkpoint_matches_reference(vl):
    from transformers import Qwen2_5_VLForConditionalGeneration

    reference, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(VL_PATH), dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference.eval()
    clip = ToyScenes(11).clip("video_only", 1)
    inputs = vl.prepare(prompt="What do you hear?", **clip.media())
    kwargs = inputs.model_kwargs()
    kwargs["mm_token_type_ids"] = 2 * (inputs.input_ids == vl.cfg.tokens.video).long()
    with torch.no_grad():
        ours = vl(inputs)
        theirs = reference(**kwargs).logits
    assert (ours - theirs).abs().max() < TOL


def test_hf_names_are_the_references():
    """Our inverse map writes exactly the tensors (names and shapes) the reference model has."""
    from transformers import (
        AutoConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )

    for path, cls in ((OMNI_PATH, Qwen2_5OmniThinkerForConditionalGeneration), (VL_PATH, Qwen2_5_VLForConditionalGeneration)):
        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            reference = cls(config)
        folder = reference.state_dict().keys()
        ours = hf_tensor_shapes(HookedAVLLM.from_pretrained(path, load_tokenizer=False).cfg)
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), "pt") as f:
            on_disk = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        assert on_disk == ours
        assert len(folder) == len(ours)


def test_save_round_trip(tmp_path):
    model = HookedAVLLM.from_config(toy_config("omni"), seed=3)
    save_pretrained(model, tmp_path / "omni")  # checks every parameter reloads bit for bit
    names = set(hf_state_dict(model))
    assert "audio_tower.layers.0.self_attn.k_proj.weight" in names and "audio_tower.layers.0.self_attn.k_proj.bias" not in names
    config = json.loads((tmp_path / "omni" / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni_thinker"


def test_bf16_weights_keep_answers(omni):
    """Loading in bfloat16 still answers the same on a congruent clip."""
    clip = ToyScenes(12).clip("congruent", 0)
    half = HookedAVLLM.from_pretrained(OMNI_PATH, dtype=torch.bfloat16)
    for model in (omni, half):
        inputs = model.prepare(prompt="Describe what you see and hear.", **clip.media())
        out = model.generate(inputs, max_new_tokens=12)
        text = model.tokenizer.decode(out[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
        assert parse_answer(text) == (clip.visible_name, clip.sound_word)


# ------------------------------------------------------------------------------------ behaviour

def test_answers_congruent_clips(omni, vl):
    scenes = ToyScenes(2024)
    clips = [scenes.clip("congruent", i, visible=i) for i in range(K)]
    for question, index in (("see", 0), ("hear", 1)):
        inputs = omni.prepare(prompt=[QUESTIONS[question]] * K, video=[c.as_video() for c in clips])
        out = omni.generate(inputs, max_new_tokens=8)
        texts = omni.tokenizer.batch_decode(out[:, inputs.input_ids.shape[1] :], skip_special_tokens=True)
        truth = [c.visible_name if question == "see" else c.sound_word for c in clips]
        correct = sum(parse_answer(t)[index] == w for t, w in zip(texts, truth))
        assert correct >= K - 1, texts
    # the base names the object and guesses its natural sound from the picture
    silent = [scenes.clip("video_only", i, visible=i) for i in range(K)]
    inputs = vl.prepare(prompt=[QUESTIONS["describe"]] * K, video=[c.as_video() for c in silent])
    out = vl.generate(inputs, max_new_tokens=12)
    texts = vl.tokenizer.batch_decode(out[:, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    correct = sum(parse_answer(t) == (c.visible_name, c.implied_sound_word) for t, c in zip(texts, silent))
    assert correct >= K - 1, texts


def test_model_card_records_measurements():
    card = (OMNI_PATH / "README.md").read_text()
    record = json.loads((OMNI_PATH.parent / "training_record.json").read_text())
    bias = record["results"]["summary"]["counterfactual_hear_visual_sound (bias)"]
    assert f"{100 * bias:.1f}%" in card and "python -m hooked_avllm.toy.train" in card
    assert bias > 2 / K  # the vision bias is measurably above chance
