"""Greedy generation with our KV cache equals the reference's greedy generation, token for token, on
every family: the Hugging Face Qwen2.5-Omni and Qwen3-Omni thinkers (the latter's DeepStack rows added
at the prefill only, its MoE routing each decoding step), and VideoLLaMA2.1-AV assembled from
transformers' Qwen2 and SigLIP, timm and ESPnet's BEATs (``videollama2_reference.py``), whose LLM
generates from the embeddings of its own embedding table and towers."""

from __future__ import annotations

import pytest
import torch

from analysis_support import FAMILIES, Family, videollama2_reference_embeds, videollama2_reference_pair
from cases import build_case
from hooked_avllm import HookedAVLLM
from qwen3_reference import build_case as build_qwen3_case
from qwen3_reference import build_thinker as build_qwen3_thinker
from reference_models import build_omni_thinker

# the Hugging Face thinkers: (reference builder, named-case builder) per family
HF_THINKERS = {"qwen2_5_omni": (build_omni_thinker, build_case), "qwen3_omni": (build_qwen3_thinker, build_qwen3_case)}

# ESPnet's BEATs (the VideoLLaMA2 reference) uses a deprecated autocast spelling
pytestmark = pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return Family(request.param)


@pytest.fixture(scope="module")
def pair(family, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generate")
    if family.name not in HF_THINKERS:
        return videollama2_reference_pair(seed=8, folder=folder)
    reference = HF_THINKERS[family.name][0]("b", seed=8)
    reference.save_pretrained(folder)
    return reference, HookedAVLLM.from_pretrained(folder)


def videollama2_case(family: Family, ours: HookedAVLLM, name: str, seed: int, padding_side: str = "left"):
    """VideoLLaMA2 inputs for a named case: a video with its sound track (its video tokens, then its
    audio tokens), a padded batch (that clip and an audio-only clip with a longer prompt), or text."""
    if name == "audio_in_video":
        return family.clip(ours, seed=seed)
    if name == "padded_batch":
        rows = [family.clip(ours, seed=seed), family.clip(ours, video=False, seed=seed + 1, prefix=9)]
        return family.batch(ours, rows, padding_side)
    return family.text(ours, torch.randint(0, 199, (1, 11), generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("case", ["audio_in_video", "padded_batch", "text"])
def test_greedy_generation_matches_reference(family, pair, case):
    reference, ours = pair
    if family.name in HF_THINKERS:
        inputs = HF_THINKERS[family.name][1](case, seed=9, padding_side="left")
        with torch.no_grad():
            expected = reference.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        produced = ours.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    else:
        inputs = videollama2_case(family, ours, case, seed=9)
        with torch.no_grad():
            new = reference.llm.generate(inputs_embeds=videollama2_reference_embeds(reference, inputs),
                                         attention_mask=inputs.attention_mask, max_new_tokens=12, do_sample=False,
                                         eos_token_id=None, pad_token_id=0)
        expected = torch.cat([inputs.input_ids, new], dim=1)  # from embeddings, transformers returns the new tokens only
        produced = ours.generate(inputs, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(produced, expected)


def test_generation_needs_left_padding(family, pair):
    _, ours = pair
    if family.name in HF_THINKERS:
        inputs = HF_THINKERS[family.name][1]("padded_batch", seed=9, padding_side="right")
        with pytest.raises(ValueError, match="left padding"):
            ours.generate(**inputs, max_new_tokens=2)
    else:
        inputs = videollama2_case(family, ours, "padded_batch", seed=9, padding_side="right")
        assert bool((inputs.attention_mask[:, -1] == 0).any())
        with pytest.raises(ValueError, match="left padding"):
            ours.generate(inputs, max_new_tokens=2)


def test_hooks_fire_at_every_step(family, pair):
    _, ours = pair
    if family.name in HF_THINKERS:
        inputs = HF_THINKERS[family.name][1]("text", seed=1)
    else:
        inputs = videollama2_case(family, ours, "text", seed=1).model_kwargs()
    seen = []
    with ours.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: seen.append(x.shape[1]))]):
        ours.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    assert seen == [inputs["input_ids"].shape[1], 1, 1]
