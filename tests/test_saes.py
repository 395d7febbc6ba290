"""SAEs on our hook points (hooked_avllm.saes), on the shipped toy model.

A tiny hand-made SAE tests the mechanism in every environment; a real SAELens SAE is tested where
``sae_lens`` is installed (``HOOKED_AVLLM_REQUIRE_SAE_LENS=1`` turns its absence into a failure).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformer_lens.hook_points import HookPoint

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule

import hooked_avllm
from hooked_avllm.cache import AVActivationCache
from hooked_avllm.components.hook_state import watched
from hooked_avllm.saes import SAEHookPoint
from hooked_avllm.toy import ToyScenes, load_toy

RESID = "blocks.3.hook_resid_post"
ACTS = RESID + ".hook_sae_acts_post"
D_SAE = 48
N_AUDIO = 50  # audio tokens of the counterfactual clip (2 s at 25 tokens/s)


class TinySAE(HookedRootModule):
    """A ReLU SAE with SAELens's hook point names and config fields, random weights."""

    def __init__(self, hook_name: str | None, d_in: int, d_sae: int = D_SAE, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cfg = SimpleNamespace(d_in=d_in, d_sae=d_sae, metadata=SimpleNamespace(hook_name=hook_name))
        self.use_error_term = False
        self.W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(0.01 * torch.randn(d_in, generator=g))
        self.hook_sae_input = HookPoint()  # [..., d_in]
        self.hook_sae_acts_pre = HookPoint()  # [..., d_sae]
        self.hook_sae_acts_post = HookPoint()  # [..., d_sae]
        self.hook_sae_recons = HookPoint()  # [..., d_in]
        self.setup()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_sae_acts_pre((self.hook_sae_input(x) - self.b_dec) @ self.W_enc + self.b_enc)
        return self.hook_sae_acts_post(torch.relu(pre))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return self.hook_sae_recons(acts @ self.W_dec + self.b_dec)


@pytest.fixture(scope="module")
def model():
    return load_toy("omni")


@pytest.fixture(scope="module")
def inputs(model):
    clip = ToyScenes(seed=1).clip("counterfactual", 0)
    return model.prepare(prompt="What do you hear?", **clip.media())


@pytest.fixture(scope="module")
def plain(model, inputs):
    """Logits and cache without any SAE."""
    with torch.no_grad():
        return model.run_with_cache(inputs)


@pytest.fixture(autouse=True)
def clean_model(model):
    """Every test starts and ends with no SAE and no hook on the shared model."""
    yield
    model.reset_hooks(including_permanent=True)
    if model.acts_to_saes:
        model.reset_saes()
    model.zero_grad(set_to_none=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ------------------------------------------------------------------ the mechanism (hand-made SAE)


@torch.no_grad()
def test_error_term_keeps_the_logits_and_caches_the_features(model, inputs, plain):
    plain_logits, plain_cache = plain
    sae = TinySAE(RESID, model.cfg.d_model)
    model.add_sae(sae, use_error_term=True)
    assert isinstance(model.hook_dict[RESID], SAEHookPoint) and model.acts_to_saes == {RESID: sae}
    logits, cache = model.run_with_cache(inputs)
    assert max_diff(logits, plain_logits) < 1e-5
    features = cache.select(ACTS, "audio")
    assert features.shape == (N_AUDIO, D_SAE)
    assert max_diff(features, sae.encode(plain_cache.select(RESID, "audio"))) < 1e-5
    for point in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_recons", "hook_sae_error", "hook_sae_output"):
        assert f"{RESID}.{point}" in cache.cache_dict
    assert torch.equal(cache[RESID], plain_cache[RESID])  # the hooked point itself: x, bit for bit


@torch.no_grad()
def test_without_error_term_the_reconstruction_flows_on(model, inputs, plain):
    plain_logits, plain_cache = plain
    sae = TinySAE(RESID, model.cfg.d_model)
    logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae])  # the SAE's own use_error_term: False
    assert max_diff(logits, plain_logits) > 1e-2
    assert max_diff(cache[RESID + ".hook_sae_input"], plain_cache[RESID]) < 1e-5
    assert max_diff(cache[RESID], sae.decode(sae.encode(plain_cache[RESID]))) < 1e-5
    assert model.acts_to_saes == {}  # reset_saes_end


@torch.no_grad()
def test_zeroing_a_feature_moves_the_activation_along_its_decoder_row(model, inputs, plain):
    plain_logits, plain_cache = plain
    sae = TinySAE(RESID, model.cfg.d_model)
    x = plain_cache[RESID]  # [1, pos, d_model]
    acts = sae.encode(x)  # [1, pos, d_sae]
    f = int(acts[0][inputs.layout.audio[0]].sum(0).argmax())  # the feature most active on the audio

    def zero_feature(feature_acts, hook):
        feature_acts[..., f] = 0.0

    expected = x - acts[..., f, None] * sae.W_dec[f]  # [1, pos, d_model]
    model.add_sae(sae, use_error_term=True)
    with model.hooks(fwd_hooks=[(ACTS, zero_feature)]):
        logits, cache = model.run_with_cache(inputs)
    assert max_diff(cache[RESID], expected) < 1e-5
    assert max_diff(cache[ACTS][..., f], torch.zeros_like(acts[..., f])) == 0.0
    model.reset_saes()

    shifted = model.run_with_hooks(inputs, fwd_hooks=[(RESID, lambda a, hook: expected)])  # no SAE: the same move
    assert max_diff(logits, shifted) < 1e-5 and max_diff(logits, plain_logits) > 1e-4
    again = model.run_with_hooks_with_saes(inputs, saes=[sae], use_error_term=True, fwd_hooks=[(ACTS, zero_feature)])
    assert max_diff(again, shifted) < 1e-5


@torch.no_grad()
def test_an_edited_error_reaches_the_output(model, inputs, plain):
    plain_cache = plain[1]
    sae = TinySAE(RESID, model.cfg.d_model)

    def halve(error, hook):
        error.mul_(0.5)  # in place

    model.add_sae(sae, use_error_term=True)
    with model.hooks(fwd_hooks=[(RESID + ".hook_sae_error", halve)]):
        _, cache = model.run_with_cache(inputs)
    x = plain_cache[RESID]
    recons = sae.decode(sae.encode(x))
    assert max_diff(cache[RESID], recons + 0.5 * (x - recons)) < 1e-5


@pytest.mark.parametrize("name", ["audio.blocks.1.hook_resid_post", "audio_proj.hook_out", "vision.blocks.0.hook_mlp_out"])
@torch.no_grad()
def test_tower_hook_points(model, inputs, plain, name):
    plain_logits, plain_cache = plain
    x = plain_cache[name]  # [1, frames or patches, d]
    sae = TinySAE(name, x.shape[-1])
    logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae], use_error_term=True)
    assert max_diff(logits, plain_logits) < 1e-5
    assert cache[name + ".hook_sae_acts_post"].shape == (1, x.shape[1], D_SAE)
    assert max_diff(cache[name + ".hook_sae_acts_post"], sae.encode(x)) < 1e-5
    assert max_diff(model.run_with_saes(inputs, saes=[sae]), plain_logits) > 1e-4  # reconstruction only


@torch.no_grad()
def test_per_head_sae_on_hook_z(model, inputs, plain):
    name, t = "blocks.2.attn.hook_z", model.cfg.text
    sae = TinySAE(name, t.d_head)  # one SAE shared by the heads: reads [..., head, d_head] as is
    logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae], use_error_term=True)
    assert max_diff(logits, plain[0]) < 1e-5
    assert cache[name + ".hook_sae_acts_post"].shape == (1, inputs.input_ids.shape[1], t.n_heads, D_SAE)
    assert cache.select(name + ".hook_sae_acts_post", "audio").shape == (N_AUDIO, t.n_heads, D_SAE)


@torch.no_grad()
def test_reset_puts_the_original_point_back_with_its_permanent_hooks(model, inputs):
    before = model(inputs)
    original = model.hook_dict[RESID]
    calls = []
    original.add_perma_hook(lambda act, hook: calls.append(hook.name))
    sae = TinySAE(RESID, model.cfg.d_model)
    with pytest.warns(UserWarning, match="do not run while the SAE is attached"):
        model.add_sae(sae)
    assert model.hook_dict[RESID] is not original and model.hook_dict[RESID].original is original
    model(inputs)
    assert calls == []
    model.reset_saes(RESID)
    assert model.hook_dict[RESID] is original
    assert not [n for n in model.hook_dict if "hook_sae" in n]
    assert sae.hook_sae_acts_post.name == "hook_sae_acts_post"  # the SAE's own names again
    assert torch.equal(model(inputs), before) and calls == [RESID]  # the permanent hook fires again


@torch.no_grad()
def test_saes_context_restores_the_previous_sae_and_add_sae_replaces(model, inputs, plain):
    sae_a, sae_b = TinySAE(RESID, model.cfg.d_model, seed=1), TinySAE(RESID, model.cfg.d_model, seed=2)
    original = model.hook_dict[RESID]
    model.add_sae(sae_a)
    point_a = model.hook_dict[RESID]
    logits_a = model(inputs)
    with model.saes(saes=[sae_b], use_error_term=True):
        assert model.acts_to_saes == {RESID: sae_b}
        assert max_diff(model(inputs), plain[0]) < 1e-5
    assert model.hook_dict[RESID] is point_a and model.acts_to_saes == {RESID: sae_a}
    assert torch.equal(model(inputs), logits_a)

    model.add_sae(sae_b)  # a second SAE at the same hook replaces the first
    assert model.acts_to_saes == {RESID: sae_b} and model.hook_dict[RESID].original is original
    model.reset_saes()
    assert model.hook_dict[RESID] is original

    model.run_with_saes(inputs, saes=sae_a, reset_saes_end=False)  # one SAE, not a list; stays attached
    assert model.acts_to_saes == {RESID: sae_a}


def test_sae_parameters_stay_out_of_the_model(model):
    keys, n_params = list(model.state_dict()), len(list(model.parameters()))
    sae = TinySAE(RESID, model.cfg.d_model)
    model.add_sae(sae)
    assert list(model.state_dict()) == keys and len(list(model.parameters())) == n_params
    assert not any(p is sae.W_enc for p in model.parameters())


def test_gradients_reach_the_model_through_the_sae(model, inputs):
    sae = TinySAE(RESID, model.cfg.d_model)
    model.add_sae(sae, use_error_term=True)
    model(inputs, return_type="loss").backward()
    assert sae.W_enc.grad is not None and float(sae.W_enc.grad.abs().sum()) > 0
    assert model.blocks[0].attn.qkv.weight.grad is not None


@torch.no_grad()
def test_generation_runs_the_sae_at_every_step(model, inputs):
    expected = model.generate(inputs, max_new_tokens=4)
    sae = TinySAE(RESID, model.cfg.d_model)
    shapes, forwards = [], []
    model.add_sae(sae, use_error_term=True)
    with model.hooks(fwd_hooks=[(ACTS, lambda a, hook: shapes.append(tuple(a.shape))),
                                ("hook_embed", lambda a, hook: forwards.append(1))]):
        tokens = model.generate(inputs, max_new_tokens=4)
    assert torch.equal(tokens, expected)
    assert len(shapes) == len(forwards) == 4  # the prefill and 3 decoding steps (the last token needs none)
    assert shapes[0] == (1, inputs.input_ids.shape[1], D_SAE) and set(shapes[1:]) == {(1, 1, D_SAE)}
    tokens, cache = model.generate_with_cache(inputs, 4, names_filter=ACTS)
    assert cache[ACTS].shape == (1, tokens.shape[1], D_SAE)


# ------------------------------------------------------------------ refusals


def test_unknown_hook_names_similar_ones(model):
    with pytest.raises(ValueError, match=r"no hook point 'blocks.3.hook_resid_pots'.*'blocks.3.hook_resid_post'"):
        model.add_sae(TinySAE("blocks.3.hook_resid_pots", model.cfg.d_model))


@torch.no_grad()
def test_width_mismatch_raises_at_the_first_forward(model, inputs):
    model.add_sae(TinySAE(RESID, 64))
    with pytest.raises(ValueError, match=rf"SAE at {RESID} has d_in=64 but the activation there is 96 wide"):
        model(inputs)


@torch.no_grad()
def test_hook_z_sae_of_all_heads_must_flatten_them(model, inputs):
    model.add_sae(TinySAE("blocks.2.attn.hook_z", model.cfg.text.n_heads * model.cfg.text.d_head))
    with pytest.raises(ValueError, match="reshape_activations='hook_z'"):
        model(inputs)


@torch.no_grad()
def test_device_mismatch(model, inputs):
    sae = TinySAE(RESID, model.cfg.d_model).to("meta")
    with pytest.raises(ValueError, match=r"parameters on meta but the model is on cpu: move it first with sae.to\('cpu'\)"):
        model.add_sae(sae)
    sae = TinySAE(RESID, model.cfg.d_model)
    model.add_sae(sae)
    sae.to("meta")  # moved after attaching
    with pytest.raises(ValueError, match=r"is on meta but its activation is on cpu: move it with sae.to\('cpu'\)"):
        model(inputs)


def test_unsupported_options_and_points(model):
    sae = TinySAE(RESID, model.cfg.d_model)
    with pytest.raises(ValueError, match="exclude_special_tokens is not supported"):
        model.add_sae(sae, exclude_special_tokens=True)
    transcoder = TinySAE(RESID, model.cfg.d_model)
    transcoder.cfg.metadata.hook_name_out = "blocks.3.hook_mlp_out"
    with pytest.raises(ValueError, match="transcoders"):
        model.add_sae(transcoder)
    with pytest.raises(ValueError, match="set_use_attn_result"):
        model.add_sae(TinySAE("blocks.1.attn.hook_result", model.cfg.d_model))
    with pytest.raises(ValueError, match="no SAE is attached at"):
        model.reset_saes(RESID)
    model.add_sae(sae)
    with pytest.raises(ValueError, match="is a hook point of the SAE at"):
        model.add_sae(TinySAE(ACTS, D_SAE))


def test_a_failed_attach_in_the_context_rolls_back(model):
    good, bad = TinySAE(RESID, model.cfg.d_model), TinySAE("blocks.9.hook_resid_post", model.cfg.d_model)
    with pytest.raises(ValueError, match="no hook point"):
        with model.saes(saes=[good, bad], reset_saes_end=False):
            pass
    assert model.acts_to_saes == {}


@torch.no_grad()
@pytest.mark.parametrize("name, width", [("audio.blocks.1.ln1.hook_normalized", "audio"),
                                         ("blocks.2.ln1.hook_scale", 1), ("blocks.2.attn.hook_pattern", "keys")])
def test_points_computed_only_when_watched(model, inputs, plain, name, width):
    """Norm scales, LayerNorm outputs and patterns are computed only when watched; an SAE there
    counts as watching, so it runs (the error term keeps the logits)."""
    d_in = {"audio": model.cfg.audio.d_model, "keys": inputs.input_ids.shape[1]}.get(width, width)
    assert watched(SAEHookPoint(TinySAE(name, d_in), HookPoint()))
    logits, cache = model.run_with_cache_with_saes(inputs, saes=[TinySAE(name, d_in)], use_error_term=True)
    assert max_diff(logits, plain[0]) < 1e-5 and name + ".hook_sae_acts_post" in cache.cache_dict


def test_the_package_does_not_import_sae_lens():
    """sae_lens is optional: no module of hooked_avllm imports it at import time."""
    for path in Path(hooked_avllm.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "sae_lens" for n in names), path


# ------------------------------------------------------------------ a real SAELens SAE


@pytest.fixture(scope="module")
def sae_lens():
    if os.environ.get("HOOKED_AVLLM_REQUIRE_SAE_LENS") == "1":
        import sae_lens  # this environment must have it: fail, do not skip

        return sae_lens
    return pytest.importorskip("sae_lens")


def real_sae(sae_lens, hook_name: str, d_in: int, d_sae: int = 128, seed: int = 0, **cfg):
    """A SAELens StandardSAE with random weights (fixed seed)."""
    from sae_lens.saes.sae import SAEMetadata

    sae = sae_lens.StandardSAE(
        sae_lens.StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook_name), **cfg)
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
        sae.b_enc.copy_(0.01 * torch.randn(d_sae, generator=g))
    return sae


@torch.no_grad()
def test_sae_lens_sae_on_the_residual_stream(sae_lens, model, inputs, plain):
    plain_logits, plain_cache = plain
    sae = real_sae(sae_lens, RESID, model.cfg.d_model)
    original, before = model.hook_dict[RESID], model(inputs)
    model.add_sae(sae, use_error_term=True)
    assert torch.equal(model(inputs), before)
    assert sae.use_error_term is False  # the SAE itself is left as it was
    model.reset_saes()
    assert model.hook_dict[RESID] is original and torch.equal(model(inputs), before)

    logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae], use_error_term=True)
    assert isinstance(cache, AVActivationCache) and max_diff(logits, plain_logits) < 1e-5
    features = cache.select(ACTS, "audio")
    assert features.shape == (N_AUDIO, 128)
    assert max_diff(features, sae.encode(plain_cache.select(RESID, "audio"))) < 1e-5
    assert model.hook_dict[RESID] is original and model.acts_to_saes == {}

    _, cache = model.run_with_cache_with_saes(inputs, saes=[sae])  # no error term: SAELens's own forward
    assert max_diff(cache[RESID], sae(plain_cache[RESID])) < 1e-5


@torch.no_grad()
def test_sae_lens_sae_on_hook_z_flattens_the_heads(sae_lens, model, inputs, plain):
    name, t = "blocks.2.attn.hook_z", model.cfg.text
    sae = real_sae(sae_lens, name, t.n_heads * t.d_head, d_sae=64, reshape_activations="hook_z")
    logits, cache = model.run_with_cache_with_saes(inputs, saes=[sae], use_error_term=True)
    assert max_diff(logits, plain[0]) < 1e-5
    assert cache.select(name + ".hook_sae_acts_post", "audio").shape == (N_AUDIO, 64)
    _, cache = model.run_with_cache_with_saes(inputs, saes=[sae])
    z = plain[1][name]  # [1, pos, head, d_head]
    assert cache[name].shape == z.shape and max_diff(cache[name], sae(z)) < 1e-5
