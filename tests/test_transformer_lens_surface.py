"""TransformerLens's analysis surface on our models: config fields, weight views, token helpers, and
the cache's decomposition methods with known answers (DLA sums to the logits) at every modality."""

from __future__ import annotations

import pytest
import torch
from kits.qwen2_5_omni import tiny_model
from transformer_lens import patching as tl_patching

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.toy import OMNI_PATH, ToyScenes, load_toy
from hooked_avllm.toy.evaluate import prepare_clips
from test_inputs_support import OMNI

TOL = 1e-4


@pytest.fixture(scope="module")
def toy():
    return load_toy("omni")


@pytest.fixture(scope="module")
def reference():
    """The toy checkpoint in transformers' own Qwen2.5-Omni thinker (the independent reading of its weights)."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(str(OMNI_PATH), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def batch(toy):
    """Two counterfactual clips, left-padded to one batch (audio + video interleaved)."""
    clips = [ToyScenes(seed=1).clip("counterfactual", 0), ToyScenes(seed=2).clip("counterfactual", 3)]
    inputs = prepare_clips(toy, clips, "describe")
    logits, cache = toy.run_with_cache(inputs)
    return inputs, logits, cache


# ------------------------------------------------------------------ loading and config


def test_models_load_in_eval_mode(tmp_path):
    assert not load_toy("omni").training and not load_toy("vl").training
    assert not HookedAVLLM.from_config(AVLLMConfig.tiny()).training
    assert not HookedAVLLM.from_pretrained(OMNI_PATH).training
    assert not any(m.training for m in load_toy("omni").modules())


def test_config_speaks_transformer_lens(toy):
    cfg, t = toy.cfg, toy.cfg.text
    assert (cfg.n_layers, cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp, cfg.d_vocab) == (
        t.n_layers, t.d_model, t.d_head, t.n_heads, t.n_kv_heads, t.d_mlp, t.vocab_size)
    assert cfg.attn_only is False and cfg.normalization_type == "RMS" and cfg.positional_embedding_type == "rotary"
    assert cfg.act_fn == "silu" and cfg.parallel_attn_mlp is False and cfg.gated_mlp is True
    assert cfg.device == torch.device("cpu") and cfg.dtype == torch.float32
    assert cfg.use_attn_result is False
    toy.set_use_attn_result(True)
    try:
        assert cfg.use_attn_result is True
        _, cache = toy.run_with_cache(torch.tensor([[3, 4, 5]]), names_filter=lambda n: "hook_result" in n)
        assert cache["result", 0].shape == (1, 3, cfg.n_heads, cfg.d_model)
    finally:
        toy.set_use_attn_result(False)
    with pytest.raises(AttributeError, match="model.set_use_attn_result"):
        cfg.use_attn_result = True
    with pytest.raises(NotImplementedError, match="use_split_qkv_input"):
        toy.set_use_split_qkv_input(True)
    toy.set_use_split_qkv_input(False)  # asking for what is already so is fine


# ------------------------------------------------------------------ weights


def test_weight_views_are_the_checkpoint_weights(toy, reference):
    """W_Q ... W_out as TransformerLens shapes them, read against transformers' own modules."""
    layers = reference.model.language_model.layers
    d_head, group = toy.cfg.d_head, toy.cfg.n_heads // toy.cfg.n_key_value_heads
    assert torch.equal(toy.W_E, reference.model.language_model.embed_tokens.weight)
    assert torch.equal(toy.W_U, reference.lm_head.weight.T) and torch.equal(toy.b_U, torch.zeros(toy.cfg.d_vocab))
    assert toy.W_Q.shape == (toy.cfg.n_layers, toy.cfg.n_heads, toy.cfg.d_model, d_head)
    for l, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        for h in range(toy.cfg.n_heads):
            rows = slice(h * d_head, (h + 1) * d_head)
            kv = slice((h // group) * d_head, (h // group + 1) * d_head)  # the kv head serving query head h
            assert torch.equal(toy.W_Q[l, h], attn.q_proj.weight[rows].T)
            assert torch.equal(toy.W_K[l, h], attn.k_proj.weight[kv].T)
            assert torch.equal(toy.W_V[l, h], attn.v_proj.weight[kv].T)
            assert torch.equal(toy.W_O[l, h], attn.o_proj.weight[:, rows].T)
            assert torch.equal(toy.b_Q[l, h], attn.q_proj.bias[rows])
            assert torch.equal(toy.b_K[l, h], attn.k_proj.bias[kv])
            assert torch.equal(toy.b_V[l, h], attn.v_proj.bias[kv])
        assert torch.equal(toy.b_O[l], torch.zeros(toy.cfg.d_model))
        assert torch.equal(toy.W_gate[l], mlp.gate_proj.weight.T)
        assert torch.equal(toy.W_in[l], mlp.up_proj.weight.T)
        assert torch.equal(toy.W_out[l], mlp.down_proj.weight.T)
    assert toy.QK.shape == toy.OV.shape == (toy.cfg.n_layers, toy.cfg.n_heads, toy.cfg.d_model, toy.cfg.d_model)
    l, h = 2, 1
    assert torch.allclose(toy.OV[l, h].AB, toy.W_V[l, h] @ toy.W_O[l, h], atol=1e-6)
    assert torch.allclose(toy.QK[l, h].AB, toy.W_Q[l, h] @ toy.W_K[l, h].T, atol=1e-6)
    assert torch.equal(toy.accumulated_bias(toy.cfg.n_layers), torch.zeros(toy.cfg.d_model))
    assert toy.all_head_labels()[:2] == ["L0H0", "L0H1"] and len(toy.all_head_labels()) == 6 * 4


def test_weight_views_reproduce_the_activations(toy, batch):
    """Known answers through the cache: q = ln1 @ W_Q + b_Q, per-head results sum to attn_out, gate
    and up pre-activations, neuron results sum to mlp_out."""
    inputs, _, cache = batch
    for l in (0, 3):
        x = cache[f"blocks.{l}.ln1.hook_normalized"]
        assert (torch.einsum("bpm,hmd->bphd", x, toy.W_Q[l]) + toy.b_Q[l] - cache["q", l]).abs().max() < 1e-5
        k = torch.einsum("bpm,hmd->bphd", x, toy.W_K[l]) + toy.b_K[l]  # one column per query head
        kv = cache["k", l].repeat_interleave(toy.cfg.n_heads // toy.cfg.n_key_value_heads, dim=2)
        assert (k - kv).abs().max() < 1e-5
        heads = torch.einsum("bphd,hdm->bpm", cache["z", l], toy.W_O[l])
        assert (heads - cache["attn_out", l]).abs().max() < 1e-5
        x2 = cache[f"blocks.{l}.ln2.hook_normalized"]
        assert (x2 @ toy.W_gate[l] - cache["pre", l]).abs().max() < 1e-5
        assert (x2 @ toy.W_in[l] - cache[f"blocks.{l}.mlp.hook_pre_linear"]).abs().max() < 1e-5
        assert (cache["post", l] @ toy.W_out[l] - cache["mlp_out", l]).abs().max() < 1e-5


# ------------------------------------------------------------------ tokens


def test_token_helpers_on_the_real_qwen_tokenizer():
    from hooked_avllm.loading import load_tokenizer_from

    model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    model.tokenizer = load_tokenizer_from(OMNI)
    ids = [74785, 1128, 498, 1490, 323, 6723, 13]  # the real tokenizer's ids, recorded in tests/fixtures/hub/SOURCES.md
    assert model.to_tokens("Describe what you see and hear.").tolist() == [ids]
    assert model.to_str_tokens("Describe what you see and hear.") == ["Describe", " what", " you", " see", " and", " hear", "."]
    assert model.to_str_tokens(torch.tensor([ids])) == model.to_str_tokens(ids)
    assert model.to_string(torch.tensor(ids)) == "Describe what you see and hear."
    assert model.to_single_token(" hear") == 6723
    with pytest.raises(ValueError, match="is 2 tokens"):
        model.to_single_token(" hearing aid")
    padded = model.to_tokens(["hear", "Describe what you see"], padding_side="left")
    assert padded.shape == (2, 4) and padded[0, :3].tolist() == [151643] * 3  # <|endoftext|> pads
    with pytest.raises(ValueError, match="no BOS token"):
        model.to_tokens("hear", prepend_bos=True)


def test_token_helpers_on_the_toy(toy):
    assert toy.to_str_tokens("What do you hear?") == ["What", "do", "you", "hear", "?"]
    dog = toy.to_single_token("dog")
    direction = toy.tokens_to_residual_directions("dog")
    assert torch.equal(direction, toy.W_U[:, dog] * toy.ln_final.w)  # the final norm's weight folded in
    assert toy.tokens_to_residual_directions(torch.tensor([[dog, dog]])).shape == (1, 2, toy.cfg.d_model)
    with pytest.raises(ValueError, match="token ids must lie in"):
        toy.tokens_to_residual_directions(10_000)
    bare = HookedAVLLM.from_config(AVLLMConfig.tiny())
    with pytest.raises(ValueError, match="no tokenizer"):
        bare.to_tokens("hi")


# ------------------------------------------------------------------ the cache's decompositions


@pytest.mark.parametrize("modality", ["audio", "video", "text", "last"])
def test_direct_logit_attribution_sums_to_the_logit(toy, batch, modality):
    """decompose_resid and get_full_resid_decomposition, through logit_attrs, add up to the logit of
    each chosen token at each chosen position, the RMSNorm scale taken from the cache."""
    inputs, logits, cache = batch
    chosen = cache.restrict(modality)
    where = cache.positions(modality)
    token = logits.argmax(-1)[where]  # [n]: each position's top token
    expected = logits[where].gather(-1, token[:, None])[:, 0]
    stack, labels = chosen.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and labels[-1] == f"{toy.cfg.n_layers - 1}_mlp_out" and len(labels) == 1 + 2 * toy.cfg.n_layers
    assert stack.shape == (len(labels), int(where.sum()), toy.cfg.d_model)
    assert (chosen.logit_attrs(stack, token).sum(0) - expected).abs().max() < TOL
    full, full_labels = chosen.get_full_resid_decomposition(expand_neurons=True, return_labels=True)
    assert len(full_labels) == toy.cfg.n_layers * (toy.cfg.n_heads + toy.cfg.d_mlp) + 2  # heads, neurons, embed, bias
    assert (chosen.logit_attrs(full, token).sum(0) - expected).abs().max() < TOL
    # a logit difference attributes to the difference of the logits
    other = (token + 1) % toy.cfg.d_vocab
    diff = logits[where].gather(-1, token[:, None])[:, 0] - logits[where].gather(-1, other[:, None])[:, 0]
    assert (chosen.logit_attrs(stack, token, incorrect_tokens=other).sum(0) - diff).abs().max() < TOL


def test_accumulated_resid_and_ln_stack(toy, batch):
    inputs, logits, cache = batch
    audio = cache.restrict("audio")
    where = cache.positions("audio")
    acc, labels = audio.accumulated_resid(return_labels=True)
    assert labels[-1] == "final_post" and acc.shape[0] == toy.cfg.n_layers + 1
    assert torch.equal(acc[3], cache.select("blocks.3.hook_resid_pre", "audio"))
    lens = audio.accumulated_resid(apply_ln=True)  # the final norm recomputed per layer: a logit lens
    assert (lens[-1] @ toy.W_U - logits[where]).abs().max() < TOL
    scaled = audio.apply_ln_to_stack(acc[-1:], layer=None)
    assert torch.allclose(scaled[0] * toy.ln_final.w, cache.select("ln_final.hook_normalized", "audio"), atol=1e-5)
    mid = audio.apply_ln_to_stack(acc[2:3], layer=2)  # the input of layer 2's attention, unweighted
    assert torch.allclose(mid[0] * toy.blocks[2].ln1.w, cache.select("blocks.2.ln1.hook_normalized", "audio"), atol=1e-5)
    heads, head_labels = audio.stack_head_results(layer=2, return_labels=True)
    assert head_labels[:2] == ["L0H0", "L0H1"] and heads.shape[0] == 2 * toy.cfg.n_heads
    assert torch.allclose(heads[: toy.cfg.n_heads].sum(0), cache.select("blocks.0.hook_attn_out", "audio"), atol=1e-5)
    neurons = audio.stack_neuron_results(layer=1)
    assert torch.allclose(neurons.sum(0), cache.select("blocks.0.hook_mlp_out", "audio"), atol=1e-5)
    full = cache.decompose_resid()  # the whole padded batch: [component, batch, pos, d_model]
    assert full.shape[:3] == (1 + 2 * toy.cfg.n_layers, *inputs.input_ids.shape)
    assert (full.sum(0) - cache["resid_post", -1]).abs().max() < 1e-5


def test_restrict_and_remove_batch_dim_keep_positions(toy, batch):
    inputs, _, cache = batch
    audio = cache.restrict("audio", time=(0.0, 1.0))
    assert audio["blocks.1.hook_resid_post"].shape == (int(cache.positions("audio", time=(0.0, 1.0)).sum()), toy.cfg.d_model)
    assert audio["blocks.1.attn.hook_pattern"].shape[1:] == (toy.cfg.n_heads, inputs.input_ids.shape[1])
    assert not any(name.startswith("audio.") for name in audio.keys())
    with pytest.raises(ValueError, match="already restricted"):
        audio.select("blocks.1.hook_resid_post", "audio")
    with pytest.raises(ValueError, match="batch size 1"):
        toy.run_with_cache(inputs)[1].remove_batch_dim()
    with pytest.raises(ValueError, match="needs inputs of batch size 1; these have 2 rows"):
        toy.run_with_cache(inputs, remove_batch_dim=True)
    one = prepare_clips(toy, [ToyScenes(seed=1).clip("counterfactual", 0)], "hear")
    _, with_batch = toy.run_with_cache(one)
    _, without = toy.run_with_cache(one, remove_batch_dim=True)
    removed = toy.run_with_cache(one)[1].remove_batch_dim()
    for c in (without, removed):
        assert not c.has_batch_dim and c.layout is not None
        for name in ("blocks.2.hook_resid_post", "blocks.2.attn.hook_pattern"):
            assert torch.equal(c.select(name, "audio"), with_batch.select(name, "audio"))
        chosen = c.restrict("audio")
        stack = chosen.decompose_resid()
        assert stack.shape[1] == int(one.layout.audio.sum())


def test_transformer_lens_patching_runs_on_a_freshly_loaded_model(toy):
    """TransformerLens's patching refuses models in training mode; ours load in eval mode."""
    fresh = load_toy("omni")
    clean = torch.tensor([[5, 6, 7, 8]])
    corrupt = torch.tensor([[5, 9, 7, 8]])
    _, clean_cache = fresh.run_with_cache(clean)
    values = tl_patching.get_act_patch_resid_pre(fresh, corrupt, clean_cache, lambda logits: logits[0, -1, 3])
    assert values.shape == (fresh.cfg.n_layers, 4)
    with torch.no_grad():
        clean_value = float(fresh(clean)[0, -1, 3])
    assert abs(float(values[0, 1]) - clean_value) < 1e-4  # patching the differing token restores


def test_tiny_random_model_decomposes_too():
    """A model from from_config (GQA ratio 2, random weights): DLA on a text-only run."""
    model = tiny_model(seed=1)
    logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4, 5]]))
    stack = cache.decompose_resid(apply_ln=True)
    direction = model.tokens_to_residual_directions(7)
    assert ((stack * direction).sum(-1).sum(0)[0] - logits[0, :, 7]).abs().max() < TOL
