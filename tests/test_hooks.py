"""Hook points: all fire, identity hooks change nothing, patterns equal the reference's eager
attention weights, and the SDPA and explicit-pattern paths agree."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utilities import get_act_name

from cases import build_case
from hooked_avllm.components import Attention
from parity import reference_pair
from reference_models import build_omni_thinker


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return reference_pair(build_omni_thinker("a", seed=5), tmp_path_factory.mktemp("hooks"))


def test_every_hook_fires_on_audio_video(pair):
    _, model = pair
    inputs = build_case("audio_in_video", seed=1)
    fired = set()
    model.set_use_attn_result(True)
    try:
        with torch.no_grad():
            model.run_with_hooks(**inputs, fwd_hooks=[(lambda name: True, lambda x, hook: fired.add(hook.name))])
    finally:
        model.set_use_attn_result(False)
    assert set(model.hook_dict) == fired
    for prefix, n_layers in (("", 2), ("vision.", 4), ("audio.", 2)):
        for layer in range(n_layers):
            assert f"{prefix}blocks.{layer}.attn.hook_pattern" in fired
    assert {"vision_proj.hook_out", "audio_proj.hook_out", "audio.hook_out", "vision.hook_out", "hook_embed"} <= fired


def test_identity_hooks_leave_logits_unchanged(pair):
    _, model = pair
    inputs = build_case("padded_batch", seed=2)
    with torch.no_grad():
        plain = model(**inputs)
        hooked = model.run_with_hooks(**inputs, fwd_hooks=[(lambda name: True, lambda x, hook: x)])
    mask = inputs["attention_mask"].bool()
    # identity hooks on patterns switch every attention to the explicit path: same math, other kernels
    assert (plain[mask] - hooked[mask]).abs().max() < 1e-5


def test_cache_addressing(pair):
    _, model = pair
    inputs = build_case("image_audio_text", seed=3)
    with torch.no_grad():
        _, cache = model.run_with_cache(**inputs)
    assert torch.equal(cache["resid_post", 1], cache["blocks.1.hook_resid_post"])
    assert torch.equal(cache["resid_post", -1], cache[get_act_name("resid_post", 1)])
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    n_pos = inputs["input_ids"].shape[1]
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, 4, n_pos, n_pos)
    assert cache["blocks.0.attn.hook_k"].shape == (1, n_pos, 2, 16)  # GQA: 2 kv heads
    # encoders run as one packed row; their patterns are per attention segment
    assert cache["audio.blocks.0.attn.hook_pattern"].shape[1:] == (4, 100, 100)
    assert cache["vision.blocks.1.attn.hook_pattern"].shape == (1, 4, 32, 32)  # one full-attention frame


@pytest.mark.parametrize("case", ["audio_in_video", "padded_batch"])
def test_pattern_equals_reference_eager_weights(pair, case):
    reference, model = pair
    reference.set_attn_implementation("eager")
    inputs = build_case(case, seed=4)
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        ref = reference(**inputs, output_attentions=True)
        _, cache = model.run_with_cache(**inputs, names_filter=lambda n: n.endswith("hook_pattern") and not n.startswith(("audio", "vision")))
    for layer, ref_pattern in enumerate(ref.attentions):
        ours = cache["pattern", layer]
        for row in range(mask.shape[0]):
            valid = mask[row]
            diff = ours[row][:, valid][:, :, valid] - ref_pattern[row][:, valid][:, :, valid]
            assert diff.abs().max() < 1e-5, f"layer {layer} row {row}"


@pytest.mark.parametrize("case", ["audio_in_video", "padded_batch", "image"])
def test_sdpa_and_explicit_paths_agree(pair, case):
    _, model = pair
    inputs = build_case(case, seed=6)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    with torch.no_grad():
        fast = model(**inputs)
        for m in attentions:
            m.force_explicit = True
        try:
            explicit = model(**inputs)
        finally:
            for m in attentions:
                m.force_explicit = False
    mask = inputs["attention_mask"].bool()
    assert (fast[mask] - explicit[mask]).abs().max() < 1e-5


def test_editing_a_hook_changes_the_output(pair):
    """Hooks are live: zeroing the audio tokens' projector output changes the logits."""
    _, model = pair
    inputs = build_case("audio", seed=7)
    with torch.no_grad():
        plain = model(**inputs)
        ablated = model.run_with_hooks(**inputs, fwd_hooks=[("audio_proj.hook_out", lambda x, hook: torch.zeros_like(x))])
    assert (plain - ablated).abs().max() > 1e-3
