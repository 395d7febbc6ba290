"""Greedy generation with our KV cache equals the reference's greedy generation, token for token, on
every family: the Hugging Face Qwen2.5-Omni and Qwen3-Omni thinkers (the latter's DeepStack rows added
at the prefill only, its MoE routing each decoding step), and VideoLLaMA2.1-AV assembled from
transformers' Qwen2 and SigLIP, timm and ESPnet's BEATs (``videollama2_reference.py``), whose LLM
generates from the embeddings of its own embedding table and towers. Each family's reference, its
named cases and how its reference generates come from its test kit (``tests/kits/``)."""

from __future__ import annotations

import pytest

from hooked_avllm.inputs import ModelInputs
from parity import assert_same_tokens

# ESPnet's BEATs (the VideoLLaMA2 reference) uses a deprecated autocast spelling
pytestmark = pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning")


@pytest.fixture(scope="module")
def pair(family, tmp_path_factory):
    return family.reference_pair(seed=8, folder=tmp_path_factory.mktemp("generate"), variant="b")


def generate(ours, inputs, **kwargs):
    """Our greedy generation on a case: prepared inputs, or the keyword arguments both models take."""
    return ours.generate(inputs, **kwargs) if isinstance(inputs, ModelInputs) else ours.generate(**inputs, **kwargs)


@pytest.mark.parametrize("case", ["audio_in_video", "padded_batch", "text"])
def test_greedy_generation_matches_reference(family, pair, case):
    reference, ours = pair
    inputs = family.generation_case(ours, case, seed=9, padding_side="left")
    expected = family.reference_generate(reference, inputs, max_new_tokens=12, do_sample=False, eos_token_id=None,
                                         pad_token_id=0)  # the prompt, then the new tokens
    produced = generate(ours, inputs, max_new_tokens=12, eos_token_id=[])
    assert_same_tokens(produced, expected)


def test_generation_needs_left_padding(family, pair):
    _, ours = pair
    inputs = family.generation_case(ours, "padded_batch", seed=9, padding_side="right")
    mask = inputs.attention_mask if isinstance(inputs, ModelInputs) else inputs["attention_mask"]
    assert bool((mask[:, -1] == 0).any())
    with pytest.raises(ValueError, match="left padding"):
        generate(ours, inputs, max_new_tokens=2)


def test_hooks_fire_at_every_step(family, pair):
    _, ours = pair
    inputs = family.generation_case(ours, "text", seed=1)
    if isinstance(inputs, ModelInputs):
        inputs = inputs.forward_kwargs()
    seen = []
    with ours.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: seen.append(x.shape[1]))]):
        ours.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    assert seen == [inputs["input_ids"].shape[1], 1, 1]
