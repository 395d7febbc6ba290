"""Gradients: the text-target loss, cached gradients and backward hooks on attention patterns,
against transformers' Qwen2.5-Omni thinker run on the toy checkpoint (float32, CPU)."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm.vocabulary import GENERATED, TEXT
from hooked_avllm.toy import OMNI_PATH, ToyScenes, load_toy
from hooked_avllm.toy.evaluate import prepare_clips

TOL = 1e-4


@pytest.fixture(scope="module")
def toy():
    return load_toy("omni")


def reference(attn: str = "sdpa"):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        str(OMNI_PATH), dtype=torch.float32, attn_implementation=attn
    ).eval()


@pytest.fixture(scope="module")
def padded(toy):
    clips = [ToyScenes(seed=3).clip("counterfactual", 1), ToyScenes(seed=4).clip("congruent", 2)]
    return prepare_clips(toy, clips, "describe")


def text_labels(inputs) -> torch.Tensor:
    """The reference's labels for a loss over text targets only: -100 at media and padding."""
    layout = inputs.layout
    keep = layout.text | layout.generated
    return inputs.input_ids.masked_fill(~keep, -100)


def test_return_type_is_checked(toy, padded):
    for bad in ("bogus", "Loss", 3):
        with pytest.raises(ValueError, match=r"return_type=.* is not one of \['logits', 'loss', 'both', 'normalized', None\]"):
            toy(padded, return_type=bad)
        with pytest.raises(ValueError, match="is not one of"):
            toy.run_with_cache(padded, return_type=bad)
    with torch.no_grad():
        logits = toy(padded)
        both = toy(padded, return_type="both")
        normalized = toy(padded, return_type="normalized")
        assert toy(padded, return_type=None) is None
    assert torch.equal(both[0], logits) and torch.allclose(normalized @ toy.W_U, logits, atol=1e-5)


def test_loss_over_text_targets_equals_the_reference(toy, padded):
    """transformers' thinker with labels -100 at media placeholders and padding computes the same loss."""
    ref = reference()
    with torch.no_grad():
        theirs = ref(**padded.model_kwargs(), labels=text_labels(padded)).loss
        ours = toy(padded, return_type="loss")
        per_token = toy(padded, return_type="loss", loss_per_token=True)
    assert abs(float(ours) - float(theirs)) < TOL
    n_targets = int(((padded.layout.text | padded.layout.generated)[:, 1:] & ~padded.layout.padding[:, :-1]).sum())
    assert per_token.shape == (2, padded.input_ids.shape[1] - 1)
    assert abs(float(per_token.sum()) / n_targets - float(ours)) < 1e-5
    assert bool((per_token[padded.layout.audio[:, 1:]] == 0).all())  # audio placeholders are no targets


def test_cached_gradients_equal_the_reference(toy, padded):
    """run_with_cache(return_type="loss", incl_bwd=True) caches d loss / d activation by hook name;
    the reference's hidden states, retained, get the same gradients."""
    ref = reference()
    out = ref(**padded.model_kwargs(), labels=text_labels(padded), output_hidden_states=True)
    for h in out.hidden_states:
        h.retain_grad()
    out.loss.backward()
    loss, cache = toy.run_with_cache(padded, return_type="loss", incl_bwd=True)
    assert abs(float(loss.detach()) - float(out.loss.detach())) < TOL
    real = padded.attention_mask.bool()
    scale = float(out.hidden_states[1].grad[real].abs().max())
    for layer in range(toy.cfg.n_layers - 1):  # hidden_states[l + 1] is layer l's output (the last one is normed)
        ours = cache[f"blocks.{layer}.hook_resid_post_grad"][real]
        theirs = out.hidden_states[layer + 1].grad[real]
        assert (ours - theirs).abs().max() < 1e-4 * max(1.0, scale), layer
    assert (cache["hook_embed_grad"][real] - out.hidden_states[0].grad[real]).abs().max() < 1e-4 * max(1.0, scale)
    # the cache keeps its layout: gradients by modality
    assert cache.select("blocks.2.hook_resid_post_grad", "audio").shape == (int(padded.layout.audio.sum()), toy.cfg.d_model)
    assert cache["audio.hook_out_grad"].shape == cache["audio.hook_out"].shape  # towers get gradients too
    toy.zero_grad(set_to_none=True)


def test_backward_hook_on_a_pattern_fires_with_the_reference_gradient(toy):
    """A backward hook on hook_pattern (no forward hook) switches that layer to the explicit path and
    receives d metric / d pattern, equal to the gradient of the reference's eager attention weights."""
    clip = ToyScenes(seed=5).clip("counterfactual", 0)
    inputs = toy.prepare(prompt="What do you hear?", **clip.media())
    ref = reference("eager")
    out = ref(**inputs.model_kwargs(), output_attentions=True)
    layer, token = 2, 17
    out.attentions[layer].retain_grad()
    out.logits[0, -1, token].backward()
    expected = out.attentions[layer].grad

    grads, score_grads = [], []
    point = toy.blocks[layer].attn.hook_pattern
    assert not toy.blocks[layer].attn.watched
    with toy.hooks(bwd_hooks=[(point.name, lambda g, hook: grads.append(g.detach().clone())),
                              ("blocks.4.attn.hook_attn_scores", lambda g, hook: score_grads.append(g.detach().clone()))]):
        assert toy.blocks[layer].attn.watched and toy.blocks[4].attn.watched
        assert not toy.blocks[0].attn.watched  # other layers keep the fused path
        logits = toy(inputs)
        logits[0, -1, token].backward()
    assert len(grads) == 1 and len(score_grads) == 1
    assert grads[0].shape == expected.shape
    assert (grads[0] - expected).abs().max() < 1e-5 * max(1.0, float(expected.abs().max()))
    # the score gradient is the softmax backward of the pattern gradient (reference layer 4, retained)
    ref.zero_grad()
    out = ref(**inputs.model_kwargs(), output_attentions=True)
    out.attentions[4].retain_grad()
    out.logits[0, -1, token].backward()
    p, g = out.attentions[4].detach(), out.attentions[4].grad
    softmax_backward = p * (g - (p * g).sum(-1, keepdim=True))
    assert (score_grads[0] - softmax_backward).abs().max() < 1e-5 * max(1.0, float(softmax_backward.abs().max()))
    assert not toy.blocks[layer].attn.watched  # the hook is gone with its context
    toy.zero_grad(set_to_none=True)


def test_the_loss_skips_media_targets_without_a_layout(toy):
    """Bare ids: placeholder positions are found from the ids, so they are no targets either."""
    tok = toy.cfg.tokens
    ids = torch.tensor([[10, 11, tok.audio_start, tok.audio, tok.audio, tok.audio_end, 12]])
    from hooked_avllm.loss import text_target_loss, text_target_mask
    from analysis_support import placeholder_kinds

    kinds = placeholder_kinds(ids, None, tok)
    assert text_target_mask(kinds).tolist() == [[True, True, False, False, True, True]]
    logits = torch.randn(1, 7, toy.cfg.d_vocab)
    manual = torch.nn.functional.cross_entropy(logits[0, [0, 1, 4, 5]], ids[0, [1, 2, 5, 6]])
    assert abs(float(text_target_loss(logits, ids, kinds)) - float(manual)) < 1e-6
    generated = torch.tensor([[TEXT, TEXT, GENERATED]])
    assert text_target_mask(generated).tolist() == [[True, True]]
    with pytest.raises(ValueError, match="no text targets"):
        text_target_loss(logits[:, :3], ids[:, 2:5], placeholder_kinds(ids[:, 2:5], None, tok))
