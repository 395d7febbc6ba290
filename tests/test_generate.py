"""Greedy generation with our KV cache equals the reference's greedy generation, token for token."""

from __future__ import annotations

import pytest
import torch

from cases import build_case
from hooked_avllm import HookedAVLLM
from reference_models import build_omni_thinker


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    reference = build_omni_thinker("b", seed=8)
    folder = tmp_path_factory.mktemp("generate")
    reference.save_pretrained(folder)
    return reference, HookedAVLLM.from_pretrained(folder)


@pytest.mark.parametrize("case", ["audio_in_video", "padded_batch", "text"])
def test_greedy_generation_matches_reference(pair, case):
    reference, ours = pair
    inputs = build_case(case, seed=9, padding_side="left")
    with torch.no_grad():
        expected = reference.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    produced = ours.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(produced, expected)


def test_generation_needs_left_padding(pair):
    _, ours = pair
    inputs = build_case("padded_batch", seed=9, padding_side="right")
    with pytest.raises(ValueError, match="left padding"):
        ours.generate(**inputs, max_new_tokens=2)


def test_hooks_fire_at_every_step(pair):
    _, ours = pair
    inputs = build_case("text", seed=1)
    seen = []
    with ours.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: seen.append(x.shape[1]))]):
        ours.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    assert seen == [inputs["input_ids"].shape[1], 1, 1]
