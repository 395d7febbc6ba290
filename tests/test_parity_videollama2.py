"""VideoLLaMA2.1-AV against a reference assembled from independent parts
(``tests/videollama2_reference.py``: transformers' Qwen2 and SigLIP, timm's RegStage, ESPnet's
BEATs), saved in the release's checkpoint layout and loaded through our ``from_pretrained``.

Every input kind (text, image, video, audio, a video with a sound track, a padded batch mixing
them) is prepared by our ``model.prepare``; the reference gets the same media tensors and builds
its own prompt ids with one placeholder, as the released code does. Logits are compared at every
real position, each tower stage on its own, and greedy generation token for token.

Precision: audio always fills 30 s (1,496 BEATs tokens), and over that many keys float32 rounding
alone reaches the 1e-4 bound (measured on these weights: our float32 BEATs is 7.9e-5 from its
float64 self, ESPnet's 9.5e-5, and a plain float32 softmax attention over the same q/k/v 1.5e-4).
So every comparison runs in float64, where any difference of implementation shows and rounding
does not, and the inputs without audio are compared in float32 as well.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.toy.tokenizer import save_tokenizer
from parity import TOL, assert_rows_close, assert_same_tokens, assert_stages, load_ours, save_released
from videollama2_reference import NUM_FRAMES, ReferenceVideoLLaMA2

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning"),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ReferenceVideoLLaMA2(seed=0)
        folder = save_released(reference, tmp_path_factory.mktemp("videollama2"))  # the release's layout
        save_tokenizer(folder, "vl")
        model = load_ours(folder)
    return reference, model


@pytest.fixture(scope="module")
def pair64(pair):
    _, model = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ReferenceVideoLLaMA2(seed=0).double()  # the same weights (seeded; ESPnet's weight norm cannot be deep-copied)
    return reference, copy.deepcopy(model).to(torch.float64)


def pair_in(request, dtype):
    return request.getfixturevalue("pair64" if dtype == torch.float64 else "pair")


def frames(n: int, seed: int, h: int = 40, w: int = 52) -> np.ndarray:
    return (torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8).numpy()


def sound(seconds: float, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


CASES = {
    "text": dict(prompt="What do you see ?"),
    "image": dict(prompt="What do you see ?", images=frames(1, 1)[0]),
    "video": dict(prompt="Describe what you see .", video=frames(9, 2), use_audio_in_video=False),
    "audio": dict(prompt="What do you hear ?", audio=sound(2.37, 3)),
    "video+audio": dict(prompt="Describe what you see and hear .", video=frames(7, 4), audio=sound(1.5, 5)),
}
TAGS = {"text": None, "image": "<image>", "video": "<video>", "audio": "<audio>", "video+audio": "<video>"}


def reference_media(reference, inputs, kinds: list[str]) -> list[torch.Tensor | None]:
    """Each row's features from the reference towers, in the released order (video, then audio)."""
    out, v, a, i = [], 0, 0, 0
    with torch.no_grad():
        for kind in kinds:
            parts = []
            if kind in ("video", "video+audio"):
                parts.append(reference.encode_frames(inputs.pixel_values_videos[v : v + 1])[0])
                v += 1
            if kind in ("audio", "video+audio"):
                parts.append(reference.encode_audio(inputs.input_features[a : a + 1])[0])
                a += 1
            if kind == "image":
                parts.append(reference.encode_image(inputs.pixel_values[i : i + 1])[0])
                i += 1
            out.append(torch.cat(parts) if parts else None)
    return out


@pytest.mark.parametrize(
    "kind, dtype",
    [(kind, torch.float64) for kind in CASES] + [(kind, torch.float32) for kind in ("text", "image", "video")],
)
def test_logits_match_the_reference(request, kind, dtype):
    reference, model = pair_in(request, dtype)
    inputs = model.prepare(**CASES[kind]).to(dtype=dtype)
    ids = reference.prompt_ids(model.tokenizer, CASES[kind]["prompt"], TAGS[kind])
    with torch.no_grad():
        ours = model(inputs)
        theirs, their_mask = reference([ids], reference_media(reference, inputs, [kind]))
    assert_rows_close(ours, inputs.attention_mask, theirs, their_mask, f"logits ({kind}, {dtype})", TOL)


def test_padded_batch_matches_the_reference(pair64):
    reference, model = pair64
    kinds = ["video+audio", "text", "audio", "video"]
    inputs = model.prepare(
        prompt=[CASES[k]["prompt"] for k in kinds],
        video=[CASES["video+audio"]["video"], None, None, CASES["video"]["video"]],
        audio=[CASES["video+audio"]["audio"], None, CASES["audio"]["audio"], None],
        use_audio_in_video=False,
    ).to(dtype=torch.float64)
    assert bool((inputs.attention_mask[:, 0] == 0).any()), "the batch should be left-padded"
    rows = [reference.prompt_ids(model.tokenizer, CASES[k]["prompt"], TAGS[k]) for k in kinds]
    with torch.no_grad():
        ours = model(inputs)
        theirs, their_mask = reference(rows, reference_media(reference, inputs, kinds))
    assert_rows_close(ours, inputs.attention_mask, theirs, their_mask, "logits", TOL)  # ours left-padded, theirs right


def test_every_tower_stage_matches_its_reference(pair64):
    reference, model = pair64
    inputs = model.prepare(**CASES["video+audio"]).to(dtype=torch.float64)
    _, cache = model.run_with_cache(inputs)
    with torch.no_grad():
        hidden = reference.siglip(inputs.pixel_values_videos.flatten(0, 1), output_hidden_states=True).hidden_states
        beats, _ = reference.beats.extract_features(inputs.input_features.clone(), None)
        stc = reference.stc(hidden[-2][None])
        audio_proj = reference.audio_proj(beats)
    n_run = model.cfg.vision.siglip.n_layers_run
    stages = {f"vision.blocks.{layer}.hook_resid_post": (cache[f"vision.blocks.{layer}.hook_resid_post"], hidden[layer + 1])
              for layer in range(n_run)}
    stages.update({"vision.hook_out": (cache["vision.hook_out"], hidden[-2]),
                   "vision_proj.hook_out": (cache["vision_proj.hook_out"], stc),
                   "audio.hook_out": (cache["audio.hook_out"], beats),
                   "audio_proj.hook_out": (cache["audio_proj.hook_out"], audio_proj)})
    assert_stages(stages, TOL)


def test_layout_counts_follow_the_towers(pair):
    _, model = pair
    inputs = model.prepare(**CASES["video+audio"])
    layout = inputs.layout
    t, h, w = model.cfg.vision.token_grid(NUM_FRAMES)
    assert int(layout.video.sum()) == t * h * w
    assert int(layout.audio.sum()) == 187 * 8  # 30 s of fbank: 2998 frames -> 187 time patches x 8 bands
    video_positions = torch.nonzero(layout.video[0]).flatten()
    audio_positions = torch.nonzero(layout.audio[0]).flatten()
    assert int(video_positions.max()) + 1 == int(audio_positions.min()), "audio tokens follow the video tokens"
    assert layout.frame_group[layout.video].max() == t - 1 and layout.row[layout.video].max() == h - 1
    real = layout.audio_time[layout.audio]
    assert torch.allclose(real[~real.isnan()][::8][:3], torch.tensor([0.0, 0.16, 0.32]))
    assert real.isnan().any(), "the zero padding to 30 s has no source time"


def test_greedy_generation_matches_the_reference(pair):
    reference, model = pair
    case = CASES["video+audio"]
    inputs = model.prepare(**case)
    ours = model.generate(inputs, max_new_tokens=8, eos_token_id=[])
    ids = reference.prompt_ids(model.tokenizer, case["prompt"], "<video>")
    feats = reference_media(reference, inputs, ["video+audio"])[0]
    embed = reference.llm.get_input_embeddings()
    k = ids.index(-200)
    with torch.no_grad():
        embeds = torch.cat([embed(torch.tensor(ids[:k])), feats, embed(torch.tensor(ids[k + 1 :]))])[None]
        theirs = reference.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                        max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert_same_tokens(ours[0, inputs.input_ids.shape[1]:], theirs[0, -8:])


class NotATensor:
    """Stands for any object a pickle could smuggle in."""


def test_the_audio_tower_file_is_read_without_unpickling_code(pair, tmp_path):
    reference, _ = pair
    folder = reference.save_checkpoint(tmp_path / "ckpt")

    torch.save({"model.audio_tower.patch_embedding.weight": NotATensor()}, folder / "audio_tower.bin")
    with pytest.raises(ValueError, match="weights_only=True"):
        HookedAVLLM.from_pretrained(folder, load_tokenizer=False)
