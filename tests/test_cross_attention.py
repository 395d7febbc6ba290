"""``CrossAttention`` against ``torch.nn.MultiheadAttention`` (batch-first, separate key and value
inputs, a key padding mask), fused and explicit paths, float32 and float64; hooks and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hooked_avllm.components.cross_attention import CrossAttention
from minicpm_reference_vision import Parts, randomize_

D, HEADS = 24, 4


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(D, HEADS, batch_first=True).eval()
    randomize_(reference, seed=3)
    ours = CrossAttention(D, HEADS).eval()
    with torch.no_grad():  # nn.MultiheadAttention's names -> ours (what weights_conversion.resampler maps)
        ours.qkv.weight.copy_(reference.in_proj_weight)
        ours.qkv.bias.copy_(reference.in_proj_bias)
        ours.out.weight.copy_(reference.out_proj.weight)
        ours.out.bias.copy_(reference.out_proj.bias)
    return reference, Parts(attn=ours)


def data(dtype, padded: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query, key, value = (torch.randn(3, n, D, generator=generator, dtype=torch.float64).to(dtype) for n in (5, 7, 7))
    valid = torch.ones(3, 7, dtype=torch.bool)
    if padded:
        valid[1, 4:] = False
        valid[2, 1:] = False
        key[~valid] = 1e3  # garbage that must be masked
        value[~valid] = -1e3
    return query, key, value, valid


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_matches_multihead_attention(pair, dtype, padded):
    reference, parts = copy.deepcopy(pair[0]).to(dtype), copy.deepcopy(pair[1]).to(dtype)
    ours = parts.attn
    query, key, value, valid = data(dtype, padded)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    with torch.no_grad():
        expected, weights = reference(query, key, value, key_padding_mask=~valid, need_weights=True,
                                      average_attn_weights=False)
        fused = ours(query, key, value, key_valid=valid)
        explicit, cache = parts.run_with_cache("attn", query, key, value, valid)
    print(f"{dtype} {'padded' if padded else 'full'}: fused {(fused - expected).abs().max():.3g}, "
          f"explicit {(explicit - expected).abs().max():.3g}")
    assert (fused - expected).abs().max() < tol
    assert (explicit - expected).abs().max() < tol
    assert (cache["attn.hook_pattern"] - weights).abs().max() < tol


def test_hooks_and_views(pair):
    reference, parts = pair
    ours = parts.attn
    query, key, value, valid = data(torch.float32, padded=True)
    ours.use_attn_result = True
    try:
        with torch.no_grad():
            out, cache = parts.run_with_cache("attn", query, key, value, valid)
    finally:
        ours.use_attn_result = False
    expected = {"attn.hook_q": (3, 5, HEADS, 6), "attn.hook_k": (3, 7, HEADS, 6), "attn.hook_v": (3, 7, HEADS, 6),
                "attn.hook_attn_scores": (3, HEADS, 5, 7), "attn.hook_pattern": (3, HEADS, 5, 7),
                "attn.hook_z": (3, 5, HEADS, 6), "attn.hook_result": (3, 5, HEADS, D)}
    assert {k: tuple(v.shape) for k, v in cache.items()} == expected
    assert bool((cache["attn.hook_pattern"][2, :, :, 1:] == 0).all())
    assert bool(torch.isinf(cache["attn.hook_attn_scores"][1, :, :, 4:]).all())
    with torch.no_grad():
        assert (out - reference(query, key, value, key_padding_mask=~valid)[0]).abs().max() < 1e-5
    # TransformerLens views: hook_q = query @ W_Q + b_Q per head, out = sum_h z_h @ W_O[h] + b_O
    q = torch.einsum("bpd,hde->bphe", query, ours.W_Q) + ours.b_Q
    assert (q - cache["attn.hook_q"]).abs().max() < 1e-5
    assert (torch.einsum("bphe,hed->bpd", cache["attn.hook_z"], ours.W_O) + ours.b_O - out).abs().max() < 1e-5
    assert torch.equal(ours.W_K[1], reference.in_proj_weight[D + 6 : D + 12].T)


def test_watched_by_a_backward_hook_only(pair):
    _, parts = pair
    ours = parts.attn
    assert not ours.watched
    ours.hook_pattern.add_hook(lambda grad, hook: None, dir="bwd")
    try:
        assert ours.watched
    finally:
        ours.hook_pattern.remove_hooks(dir="bwd")
    assert not ours.watched


def test_errors_name_the_problem(pair):
    _, parts = pair
    query, key, value, valid = data(torch.float32, padded=True)
    valid[0] = False
    with pytest.raises(ValueError, match=r"leaves batch rows \[0\] without any valid key"):
        parts.attn(query, key, value, valid)
    with pytest.raises(ValueError, match=r"key_valid must be a bool tensor \[batch, key_pos\] = \(3, 7\)"):
        parts.attn(query, key, value, torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="one batch"):
        parts.attn(query, key, value[:, :5])
