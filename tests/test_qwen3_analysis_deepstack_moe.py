"""What Qwen3-Omni adds that analysis must respect, on its tiny random thinker (``tests/kits/qwen3_omni.py``:
2 MoE decoder layers, 8 experts top-2, DeepStack rows added after both layers at the visual positions):

* DeepStack injections (``blocks.{i}.hook_injection``): residual, not attention. A knockout of
  text -> video holds at the layers that receive them; zero-ablating them changes the logits only
  when the prompt has visual tokens; they patch between runs, following the video rows across layouts;
  TransformerLens decompositions list them, so components still sum to the stream.
* The MoE LLM: the chosen experts are cached and selected by modality, and equal the router's top-k
  recomputed by hand; dense-MLP weight views and neuron methods refuse MoE layers with a pointer to
  what to read; SAEs refuse the integer expert ids.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kits import kit_named
from test_saes import TinySAE

from hooked_avllm.analysis.knockout import KnockoutRule, generate_with_knockout, knockout
from hooked_avllm.analysis.metrics import logit_diff
from hooked_avllm.analysis.patching import patch, patching_sweep

FAMILY = kit_named("qwen3_omni")
INJECTIONS = ("blocks.0.hook_injection", "blocks.1.hook_injection")
EXPERTS = "blocks.{l}.mlp.hook_expert_indices"


@pytest.fixture(scope="module")
def model():
    return FAMILY.model(seed=3)


def other_video(inputs, seed: int):
    """The same prompt (ids, layout, audio) with other random video pixels."""
    pixels = torch.randn(inputs.pixel_values_videos.shape, generator=torch.Generator().manual_seed(seed))
    return replace(inputs, pixel_values_videos=pixels)


def zero(act, hook):
    return torch.zeros_like(act)


# ----------------------------------------------------------------------------- injections and knockout


def test_every_layer_receives_deepstack_rows_at_the_visual_positions_only(model):
    """Both tiny layers are DeepStack layers (taps 0 and 2 of the ViT -> after decoder layers 0, 1)."""
    assert [n for n in model.hook_dict if n.endswith("hook_injection")] == list(INJECTIONS)
    inputs = FAMILY.clip(model, seconds=2, seed=1)
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n in INJECTIONS or "resid" in n)
    video = inputs.layout.video[0]
    for layer, name in enumerate(INJECTIONS):
        rows = cache[name][0]
        assert (rows[video] != 0).any(-1).all() and (rows[~video] == 0).all()
        # the next layer reads the layer's output plus the rows
        if layer + 1 < model.cfg.n_layers:
            after = cache[f"blocks.{layer}.hook_resid_post"] + cache[name]
            assert torch.equal(cache[f"blocks.{layer + 1}.hook_resid_pre"], after)


def test_text_to_video_knockout_holds_at_deepstack_layers(model):
    """On a video-only clip, text can read the video only by attending to it: with text -> video
    blocked in every layer, two clips with other pixels (other embeddings at the video positions,
    other DeepStack rows added after layers 0 and 1) give the same logits at every text position,
    in a forward and in generation. The rows still enter the stream at the video positions: the
    knockout removes edges, not injections."""
    a = FAMILY.clip(model, audio=False, seconds=2, seed=4)
    b = other_video(a, seed=11)
    text = ~a.layout.video[0]
    with torch.no_grad():
        assert (model(a)[0, text] - model(b)[0, text]).abs().max() > 1e-3  # the video matters without the rule
        with knockout(model, KnockoutRule("text", "video")):
            (la, ca), (lb, cb) = (model.run_with_cache(x, names_filter=lambda n: n in INJECTIONS) for x in (a, b))
    assert (la[0, text] - lb[0, text]).abs().max() < 1e-6
    for name in INJECTIONS:  # not removed: the video positions still receive (different) rows
        assert (ca[name][0, a.layout.video[0]] - cb[name][0, b.layout.video[0]]).abs().max() > 1e-3
    # the layers the rule leaves open let the video through: layer 0 reads it, layer 1 is blocked
    with torch.no_grad(), knockout(model, KnockoutRule("text", "video", layers=(1, 2))):
        assert (model(a)[0, text] - model(b)[0, text]).abs().max() > 1e-3
    rule = KnockoutRule(("text", "generated"), "video")  # prefill (with its injections) and every step
    tokens = [generate_with_knockout(model, x, rule, max_new_tokens=5, eos_token_id=[]) for x in (a, b)]
    assert torch.equal(tokens[0], tokens[1])
    assert not torch.equal(model.generate(a, 5, eos_token_id=[]), model.generate(b, 5, eos_token_id=[]))


def test_zero_ablating_the_injections_changes_logits_only_with_visual_tokens(model):
    """A hook zeroing ``blocks.{i}.hook_injection`` removes the DeepStack rows: the result is the
    decoder run without injections; on an audio-only or text-only prompt nothing was injected
    (the hook fires on zeros) and the logits stay bit for bit."""
    hooks = [(name, zero) for name in INJECTIONS]
    video = FAMILY.clip(model, seconds=2, seed=2)
    audio = FAMILY.clip(model, video=False, seconds=2, seed=2)
    text = FAMILY.text(model, torch.tensor([[5, 6, 7, 8, 9]]))
    with torch.no_grad():
        plain = model(video)
        ablated = model.run_with_hooks(video, fwd_hooks=hooks)
        llm = model.llm_inputs(video)
        assert [injection.layer for injection in llm.pop("injections")] == [0, 1]  # one video: one row set per layer
        without = model.run_decoder(**llm)
        assert (ablated - plain).abs().max() > 1e-3
        assert (ablated - without).abs().max() < 1e-6
        for inputs in (audio, text):
            seen = []

            def record(act, hook, seen=seen):
                seen.append(float(act.abs().max()))
                return torch.zeros_like(act)

            fired = [(name, record) for name in INJECTIONS]
            assert torch.equal(model.run_with_hooks(inputs, fwd_hooks=fired), model(inputs))
            assert seen == [0.0, 0.0]  # the hooks ran, on nothing injected


def test_generation_cache_holds_the_injections_on_every_position(model):
    """The injection hooks fire at every decoding step too (zeros: only the prefill injects), so the
    concatenated cache covers prompt + generated positions like every other activation."""
    inputs = FAMILY.clip(model, seconds=2, seed=3)
    tokens, cache = model.generate_with_cache(inputs, 3, names_filter=list(INJECTIONS), eos_token_id=[])
    _, prompt = model.run_with_cache(inputs, names_filter=list(INJECTIONS))
    for name in INJECTIONS:
        assert cache[name].shape[:2] == tuple(tokens.shape)
        assert torch.equal(cache.select(name, "video"), prompt.select(name, "video"))
        assert (cache.select(name, "generated") == 0).all()


# ----------------------------------------------------------------------------- patching the injections


def test_patching_an_injection_between_two_runs(model):
    """Same layout, other pixels: ``blocks.0.hook_injection`` from the source at the video positions
    replaces exactly those rows (layer 1's stay the target's), and moves the logits."""
    source = FAMILY.clip(model, seconds=2, seed=0, audio_seed=1)
    target = other_video(source, seed=9)
    with torch.no_grad():
        _, src = model.run_with_cache(source, names_filter=list(INJECTIONS))
        target_logits, tgt = model.run_with_cache(target, names_filter=list(INJECTIONS))
    logits, cache = patch(model, source, target, "blocks.0.hook_injection", modality="video", return_cache=True)
    assert torch.equal(cache["blocks.0.hook_injection"], src["blocks.0.hook_injection"])  # zero off video in both
    # (the patched run caches every hook, the ViT's patterns too: its explicit attention rounds otherwise)
    assert torch.allclose(cache["blocks.1.hook_injection"], tgt["blocks.1.hook_injection"], atol=1e-6)
    assert (logits - target_logits).abs().max() > 1e-4


def test_injections_follow_the_video_rows_across_layouts(model):
    """A video-only source into an audio+video target (video tokens at other positions, interleaved
    with audio): the video embeddings and both DeepStack injections, aligned video token to video
    token, give exactly the target run with the source's pixels."""
    source = FAMILY.clip(model, audio=False, seconds=2, seed=5)
    target = FAMILY.clip(model, seconds=2, seed=6)
    assert not torch.equal(torch.nonzero(source.layout.video[0]), torch.nonzero(target.layout.video[0]))
    with torch.no_grad():
        want = model(replace(target, pixel_values_videos=source.pixel_values_videos))
        plain = model(target)
    patched = patch(model, source, target, ["hook_embed", *INJECTIONS], modality="video")
    assert (patched - want).abs().max() < 1e-5 and (plain - want).abs().max() > 1e-3
    # a sweep batches copies of the target: each copy keeps its DeepStack rows at its video rows
    metric = logit_diff(3, 5)
    sweep = patching_sweep(model, source, target, metric, components=("resid_pre", "injection"), modality="video",
                           progress=False)
    for i, component in enumerate(("resid_pre", "injection")):
        for layer in range(model.cfg.n_layers):
            one = float(metric(patch(model, source, target, (component, layer), modality="video"), target).mean())
            assert abs(float(sweep.values[i, layer]) - one) < 1e-5, (component, layer)


# ----------------------------------------------------------------------------- TransformerLens decompositions


def test_decompositions_list_the_injections_and_sum_to_the_logits(model):
    """``decompose_resid``, ``accumulated_resid`` and ``get_full_resid_decomposition`` include the
    injected rows (the last layer injects too, so the final stream is its resid_post plus them):
    direct logit attributions add up to the logits at the video positions as elsewhere."""
    inputs = FAMILY.clip(model, seconds=2, seed=7)
    logits, cache = model.run_with_cache(inputs)
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "0_attn_out", "0_mlp_out", "0_injection", "1_attn_out", "1_mlp_out", "1_injection"]
    final = cache["blocks.1.hook_resid_post"] + cache["blocks.1.hook_injection"]
    assert (stack.sum(0) - final).abs().max() < 1e-5
    assert (cache.accumulated_resid()[-1] - final).abs().max() < 1e-6
    _, full_labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    assert full_labels[-4:] == ["0_injection", "1_injection", "embed", "bias"]
    for modality in ("video", "audio", "last"):
        chosen, where = cache.restrict(modality), cache.positions(modality)
        token = logits.argmax(-1)[where]
        expected = logits[where].gather(-1, token[:, None])[:, 0]
        for parts in (chosen.decompose_resid(), chosen.get_full_resid_decomposition(expand_neurons=False)):
            assert (chosen.logit_attrs(parts, token).sum(0) - expected).abs().max() < 1e-5
    _, partial = model.run_with_cache(inputs, names_filter=lambda n: n.endswith(("attn_out", "mlp_out", "hook_embed")))
    with pytest.raises(ValueError, match="blocks.0.hook_injection is not in this cache"):
        partial.decompose_resid()
    assert partial.decompose_resid(incl_injections=False).shape[0] == 5


def test_dense_mlp_views_and_neuron_methods_refuse_moe_layers(model):
    inputs = FAMILY.clip(model, seconds=2, seed=7)
    _, cache = model.run_with_cache(inputs)
    for view in ("W_in", "W_gate", "W_out", "b_in", "b_out"):
        with pytest.raises(ValueError, match=rf"{view} needs dense MLP layers.*\[0, 1\].*mixture of experts"):
            getattr(model, view)
    with pytest.raises(ValueError, match=r"model\.blocks\[0\]\.mlp\.W_in \(\[n_experts, d_model, d_expert\]\)"):
        _ = model.W_in
    with pytest.raises(ValueError, match="stack_neuron_results.*hook_expert_out"):
        cache.stack_neuron_results(1)
    with pytest.raises(ValueError, match="get_neuron_results"):
        cache.get_neuron_results(0)
    with pytest.raises(ValueError, match="expand_neurons=False"):
        cache.get_full_resid_decomposition()
    assert torch.equal(model.accumulated_bias(2), torch.zeros(model.cfg.d_model))  # no bias anywhere
    assert model.W_Q.shape == (2, 4, 64, 16)  # attention views are unaffected


# ----------------------------------------------------------------------------- experts by modality


def test_cached_expert_choices_by_modality_equal_the_router_by_hand(model):
    """``hook_expert_indices`` [batch, pos, top_k] is cached like any activation and selected by
    modality; each token's experts are the top-2 of softmax(ln2(resid_mid) @ W_gate), recomputed
    here from the cached MLP input."""
    inputs = FAMILY.clip(model, seconds=2, seed=8)
    names = [EXPERTS.format(l=l) for l in range(2)] + ["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized"]
    _, cache = model.run_with_cache(inputs, names_filter=names)
    layout = inputs.layout
    for layer in range(model.cfg.n_layers):
        name = EXPERTS.format(l=layer)
        chosen = cache[name]
        assert chosen.shape == (1, layout.shape[1], 2) and chosen.dtype == torch.long
        router = model.blocks[layer].mlp.W_gate  # [d_model, n_experts]
        probs = (cache[f"blocks.{layer}.ln2.hook_normalized"] @ router).softmax(-1)
        assert torch.equal(chosen, probs.topk(2, dim=-1).indices)
        per_kind = {kind: cache.select(name, kind) for kind in ("audio", "video", "text")}
        for kind, experts in per_kind.items():
            assert torch.equal(experts, chosen[getattr(layout, kind)])
            assert experts.shape == (int(getattr(layout, kind).sum()), 2)
        counts = {kind: torch.bincount(e.flatten(), minlength=8) for kind, e in per_kind.items()}
        assert int(sum(counts.values()).sum()) == 2 * layout.shape[1]  # every slot of every token, once
        assert cache.restrict("audio")[name].shape == per_kind["audio"].shape
        assert cache.select(name, "audio", time=(1.0, 2.0)).shape[0] == 13  # AuT tokens 13 .. 25 at k / 13 s


def test_per_expert_outputs_by_modality_mix_into_mlp_out(model):
    inputs = FAMILY.clip(model, seconds=2, seed=8)
    mlp = model.blocks[1].mlp
    mlp.use_expert_outputs = True
    try:
        _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.startswith("blocks.1.") and (
            n.endswith(("hook_expert_out", "hook_routing_weights", "hook_mlp_out"))))
    finally:
        mlp.use_expert_outputs = False
    outs = cache.select("blocks.1.mlp.hook_expert_out", "video")  # [n_video, top_k, d_model]
    weights = cache.select("blocks.1.mlp.hook_routing_weights", "video")
    assert outs.shape == (int(inputs.layout.video.sum()), 2, model.cfg.d_model)
    assert (torch.einsum("nkd,nk->nd", outs, weights) - cache.select("blocks.1.hook_mlp_out", "video")).abs().max() < 1e-6


def test_saes_refuse_expert_ids_and_off_expert_outputs_and_run_on_the_router(model):
    inputs = FAMILY.clip(model, seconds=2, seed=8)
    with pytest.raises(ValueError, match="integer expert ids"):
        model.add_sae(TinySAE(EXPERTS.format(l=0), d_in=2))
    with pytest.raises(ValueError, match="use_expert_outputs = True"):
        model.add_sae(TinySAE("blocks.0.mlp.hook_expert_out", d_in=model.cfg.d_model))
    assert not model.acts_to_saes
    with torch.no_grad():
        plain = model(inputs)
        logits, cache = model.run_with_cache_with_saes(inputs, saes=[TinySAE("blocks.0.mlp.hook_router_logits", d_in=8)],
                                                       use_error_term=True)
    assert (logits - plain).abs().max() < 1e-5  # the error term keeps the run (cached patterns round otherwise)
    assert cache.select("blocks.0.mlp.hook_router_logits.hook_sae_acts_post", "audio").shape == (26, 48)


def test_a_sweep_over_layers_without_an_injection_names_the_layers_that_have_one():
    """Only the first DeepStack layers receive rows: sweeping ``injection`` over other layers raises
    and says which layers to pass."""
    import dataclasses

    from hooked_avllm import HookedAVLLM
    from hooked_avllm.architectures.qwen3_omni.config import config_from_hf, tiny_config_json

    cfg = config_from_hf(tiny_config_json(n_layers=4, vocab_size=256))
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, deepstack_visual_indexes=(0,)))
    model = HookedAVLLM.from_config(cfg)
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"exists at layers \[0\] only.*pass layers=\[0\]"):
        patching_sweep(model, ids, ids, lambda logits, inputs: logits[:, -1].sum(), components=("injection",))
