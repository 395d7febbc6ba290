"""Activation patching across layouts: known answers on tiny random models (float32, CPU), on every
family (each family's test kit in ``tests/kits/``: tiny Qwen2.5-Omni and Qwen3-Omni thinkers, a tiny
VideoLLaMA2.1-AV, ...)."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching

from hooked_avllm.analysis.patching import (
    align_positions,
    answer_prob,
    final_logits,
    kl_to_source,
    logit_diff,
    patch,
    patching_hooks,
    patching_sweep,
    restoration,
)
from hooked_avllm.inputs import ModelInputs

COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@pytest.fixture(scope="module")
def model_seed():
    return 3


@pytest.fixture(scope="module")
def same_layout(family, model):
    """Two audio+video clips with the same token ids and layout but different audio and video."""
    a = family.clip(model, seed=0, audio_seed=1)
    b = family.clip(model, seed=0, audio_seed=2)
    pixels = getattr(b, family.video_pixels)
    b = replace(b, **{family.video_pixels: torch.randn(pixels.shape, generator=torch.Generator().manual_seed(9))})
    assert torch.equal(a.input_ids, b.input_ids)
    return a, b


@pytest.fixture(scope="module")
def conflict(family, model):
    """Audio-only source and audio+video target carrying the same audio features."""
    return family.clip(model, video=False, seed=1, audio_seed=7), family.clip(model, video=True, seed=2, audio_seed=7)


def _metric_at(metric, logits, inputs):
    return float(metric(logits, inputs).float().mean())


# ------------------------------------------------------------------ full patches reproduce the source


def injections_from(model, layer: int) -> list[str]:
    """The hooks of the rows added to the stream after block ``layer`` or a later one (DeepStack's,
    where the family injects): inputs of the later layers beside the stream itself."""
    names = [f"blocks.{l}.hook_injection" for l in range(layer, model.cfg.n_layers)]
    return [name for name in names if name in model.hook_dict]


def test_patching_every_position_reproduces_source(model, same_layout):
    """The stream at every position from the source, and every row injected from that layer on
    (the later layers' other input: Qwen3-Omni's DeepStack rows of the target's own video): the
    rest of the run is the source's."""
    a, b = same_layout
    with torch.no_grad():
        logits_a, logits_b = model(a), model(b)
    assert (logits_a - logits_b).abs().max() > 1e-3  # the runs really differ
    for layer in range(model.cfg.n_layers):
        later = injections_from(model, layer)
        patched = patch(model, a, b, [f"blocks.{layer}.hook_resid_pre", *later], modality="all")
        assert (patched - logits_a).abs().max() < 1e-6
        if later:  # without them the target's DeepStack rows still enter the later layers
            assert (patch(model, a, b, f"blocks.{layer}.hook_resid_pre", modality="all") - logits_a).abs().max() > 1e-4
    # the last layer's output (and the (component, layer) spelling) too
    last = model.cfg.n_layers - 1
    patched = patch(model, a, b, [("resid_post", last), *injections_from(model, last)], modality="all")
    assert (patched - logits_a).abs().max() < 1e-6
    several = ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", *injections_from(model, 0))
    patched = patch(model, a, b, several, modality="all")  # several hooks
    assert (patched - logits_a).abs().max() < 1e-6


# ------------------------------------------------------------------ audio-only -> audio+video


def test_audio_positions_patch_across_layouts(model, conflict):
    src, tgt = conflict
    name = "blocks.1.hook_resid_pre"
    with torch.no_grad():
        # caching hook_pattern switches attention to the explicit path (other rounding): the source
        # side caches only what patch itself caches, so the comparison can be exact
        _, src_cache = model.run_with_cache(src, names_filter=["hook_embed", name])
        tgt_logits, tgt_cache = model.run_with_cache(tgt)
    # same audio features in both runs: the audio embeddings agree, the residuals at layer 1 do not
    assert torch.allclose(src_cache["hook_embed"][src.layout.audio], tgt_cache["hook_embed"][tgt.layout.audio], atol=1e-6)
    assert (src_cache[name][src.layout.audio] - tgt_cache[name][tgt.layout.audio]).abs().max() > 1e-4

    logits, cache = patch(model, src, tgt, name, modality="audio", return_cache=True)
    audio = tgt.layout.audio
    assert torch.equal(cache[name][audio], src_cache[name][src.layout.audio])
    assert torch.equal(cache[name][~audio], tgt_cache[name][~audio])
    assert torch.equal(cache["blocks.0.hook_resid_post"], tgt_cache["blocks.0.hook_resid_post"])  # earlier: untouched
    later = cache["blocks.1.hook_resid_post"] - tgt_cache["blocks.1.hook_resid_post"]
    assert later[0, -1].abs().max() > 1e-5  # the patch propagates to the last position
    assert (logits[0, -1] - tgt_logits[0, -1]).abs().max() > 1e-6


# the kit's answers.aligned_windows: (window both clips cover, its tokens), the 3-s clip's audio tokens,
# (a window, its tokens, its first token's time)


def test_time_window_alignment(family, model):
    (common, n_common), n_three, (window, n_window, first) = family.answers.aligned_windows
    three = family.clip(model, video=False, seconds=3, seed=1)
    two = family.clip(model, video=True, seconds=2, seed=2)
    align = align_positions(three, two, "audio", time=common)
    assert len(align) == n_common
    src_t = three.layout.audio_time[align.source_batch, align.source_pos]
    tgt_t = two.layout.audio_time[align.target_batch, align.target_pos]
    assert torch.equal(src_t, tgt_t)
    assert int(three.layout.audio.sum()) == n_three  # the layout's own masks are left alone
    part = align_positions(three, three, "audio", time=window)
    assert len(part) == n_window and float(three.layout.audio_time[0, part.target_pos].min()) == first


# the kit's answers.patching_counts: audio tokens of 3 s and 2 s, text tokens of the source and the text
# target, the target's last audio position and the 2-s audio-only run's length


def test_alignment_errors_are_clear(family, model, conflict):
    src, tgt = conflict
    n = family.answers.patching_counts
    two = family.clip(model, video=False, seconds=2, seed=4)
    with pytest.raises(ValueError, match=rf"source has {n['audio'][0]} audio tokens, target {n['audio'][1]}.*time=\(start_s, end_s\)"):
        align_positions(src, two, "audio")
    # audio inside the video's bracket (Qwen): the audio+video run has two more bracket tokens; without
    # (VideoLLaMA2) the text target gets 2 more prompt tokens
    text_target = tgt if family.audio_inside_video_bracket else family.clip(model, video=True, seed=2, audio_seed=7, prefix=7)
    with pytest.raises(ValueError, match=f"source has {n['text'][0]} text tokens, target {n['text'][1]}"):
        align_positions(src, text_target, "text")
    with pytest.raises(ValueError, match="source_rows.*out of range"):
        align_positions(src, tgt, "audio", source_rows=[3])
    with pytest.raises(ValueError, match="the source has 2 rows and the target 3"):
        align_positions(family.batch(model, [src, src]).layout, family.batch(model, [tgt, tgt, tgt]).layout)
    with pytest.raises(ValueError, match="mask has shape"):
        align_positions(src, tgt, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown positions .sound."):
        align_positions(src, tgt, "sound")
    with pytest.raises(ValueError, match="query and key positions"):
        patch(model, src, tgt, "blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="no hook"):
        patch(model, src, tgt, "blocks.9.hook_resid_pre")
    # encoder hooks are patched whole: a 3 s source into a 2 s target does not fit
    one = torch.zeros(1, src.input_ids.shape[1], dtype=torch.bool), torch.zeros(1, two.input_ids.shape[1], dtype=torch.bool)
    one[0][0, 0] = one[1][0, 0] = True
    d = model.cfg.d_model
    with pytest.raises(ValueError, match=rf"audio_proj.hook_out has shape \(1, {n['audio'][0]}, {d}\) in the source .* \(1, {n['audio'][1]}, {d}\)"):
        patch(model, src, two, "audio_proj.hook_out", modality=one)
    # an alignment built for other runs: out of range in the target
    align = align_positions(src, tgt, "audio")
    store = {"blocks.0.hook_resid_pre": torch.zeros(len(align), model.cfg.d_model)}
    with pytest.raises(ValueError, match=rf"position {n['last_audio']} but blocks.0.hook_resid_pre has shape \(1, {n['two']}\)"):
        model.run_with_hooks(two, fwd_hooks=patching_hooks(store, align, list(store)))


# ------------------------------------------------------------------ heads


def test_all_heads_of_z_equal_attn_out_and_one_head_stays_put(model, conflict):
    src, tgt = conflict
    for layer in range(model.cfg.n_layers):
        via_z = patch(model, src, tgt, f"blocks.{layer}.attn.hook_z")
        via_out = patch(model, src, tgt, f"blocks.{layer}.hook_attn_out")
        assert (via_z - via_out).abs().max() < 1e-5  # attn_out = W_O z at each position (no out bias)
    name = "blocks.0.attn.hook_z"
    with torch.no_grad():
        _, src_cache = model.run_with_cache(src, names_filter=name)
        _, tgt_cache = model.run_with_cache(tgt)
    _, cache = patch(model, src, tgt, name, heads=2, return_cache=True)
    audio, z = tgt.layout.audio, cache[name]
    assert torch.equal(z[audio][:, 2], src_cache[name][src.layout.audio][:, 2])
    assert torch.equal(z[audio][:, [0, 1, 3]], tgt_cache[name][audio][:, [0, 1, 3]])
    assert torch.equal(z[~audio], tgt_cache[name][~audio])


# ------------------------------------------------------------------ the batched sweep


def test_sweep_matches_one_patch_at_a_time(model, conflict):
    src, tgt = conflict
    metric = logit_diff(3, 5)
    sweep = patching_sweep(model, src, tgt, metric, components=COMPONENTS, progress=False)
    n_layers = model.cfg.n_layers
    assert sweep.values.shape == (len(COMPONENTS), n_layers)
    assert sweep.n_forwards == n_layers  # one LLM forward per layer, every component in it
    for i, comp in enumerate(COMPONENTS):
        for layer in range(n_layers):
            one = _metric_at(metric, patch(model, src, tgt, (comp, layer)), tgt)
            assert abs(float(sweep.values[i, layer]) - one) < 1e-5, (comp, layer)
    with torch.no_grad():
        assert abs(float(sweep.target_value[0]) - _metric_at(metric, model(tgt), tgt)) < 1e-5
        assert abs(float(sweep.source_value[0]) - _metric_at(metric, model(src), src)) < 1e-5
    grouped = patching_sweep(model, src, tgt, metric, components=COMPONENTS, layers_per_forward=2, progress=False)
    assert grouped.n_forwards == 1
    assert torch.allclose(grouped.values, sweep.values, atol=1e-5)


def test_sweep_on_a_left_padded_batch(family, model):
    rows = [(dict(seconds=3), 7, 1), (family.other_length, 8, 2)]  # length, audio seed, text seed
    src = family.batch(model, [family.clip(model, video=False, seed=t, audio_seed=a, **n) for n, a, t in rows])
    tgt = family.batch(model, [family.clip(model, video=True, seed=t + 10, audio_seed=a, **n) for n, a, t in rows])
    assert bool((tgt.attention_mask == 0).any()) and bool((src.attention_mask == 0).any())
    metric = logit_diff([3, 4], [5, 6])  # one answer pair per row
    sweep = patching_sweep(model, src, tgt, metric, components=("resid_pre", "attn_out"), progress=False)
    assert sweep.n_forwards == model.cfg.n_layers
    for i, comp in enumerate(("resid_pre", "attn_out")):
        for layer in range(model.cfg.n_layers):
            one = _metric_at(metric, patch(model, src, tgt, (comp, layer)), tgt)
            assert abs(float(sweep.values[i, layer]) - one) < 1e-5, (comp, layer)
    assert abs(float(sweep.values[0, 1] - sweep.target_value[0])) > 1e-6  # a real effect was measured


def test_head_and_encoder_sweeps_and_pairs(family, model, conflict):
    src, tgt = conflict
    metric = logit_diff(3, 5)
    heads = patching_sweep(model, src, tgt, metric, components=("z",), progress=False)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.text.n_heads
    assert heads.values.shape == (n_layers, n_heads) and heads.n_forwards == n_layers
    for layer in range(n_layers):
        for h in range(n_heads):
            one = _metric_at(metric, patch(model, src, tgt, f"blocks.{layer}.attn.hook_z", heads=h), tgt)
            assert abs(float(heads.values[layer, h]) - one) < 1e-5
    # encoders are patched whole (other audio of the same length), one full forward per cell
    other = family.clip(model, video=True, seed=2, audio_seed=8)
    comps = ("resid_pre", "audio.blocks.{l}.hook_resid_post", "audio_proj.hook_out")
    sweep = patching_sweep(model, src, other, metric, components=comps, progress=False)
    n_audio_layers = len([n for n in model.hook_dict if re.fullmatch(r"audio\.blocks\.\d+\.hook_resid_post", n)])
    assert sweep.n_forwards == n_layers + n_audio_layers + 1
    for layer in range(n_audio_layers):
        one = _metric_at(metric, patch(model, src, other, f"audio.blocks.{layer}.hook_resid_post"), other)
        assert abs(float(sweep.values[1, layer]) - one) < 1e-5
    one = _metric_at(metric, patch(model, src, other, "audio_proj.hook_out"), other)
    assert torch.allclose(sweep.values[2], torch.full((n_layers,), one), atol=1e-5)
    assert abs(one - float(sweep.target_value[0])) > 1e-6
    # several clip pairs: per pair kept, values averaged
    both = patching_sweep(model, [src, src], [tgt, other], metric, components=("resid_pre",), progress=False)
    first = patching_sweep(model, src, tgt, metric, components=("resid_pre",), progress=False)
    assert both.per_pair.shape == (2, 1, n_layers)
    assert torch.allclose(both.per_pair[0], first.values) and torch.allclose(both.per_pair[1], sweep.values[:1])
    assert torch.allclose(both.values, both.per_pair.mean(0))


# ------------------------------------------------------------------ metrics


def test_metrics_by_hand():
    logits = torch.zeros(2, 3, 6)
    logits[0, 2] = torch.tensor([0.0, 1.0, 3.0, 0.0, 0.0, 0.0])  # row 0: last real position is 2
    logits[1, 1] = torch.tensor([2.0, 0.0, 0.5, 0.0, 0.0, 0.0])  # row 1: right padded, last real position is 1
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert torch.equal(final_logits(logits, mask), torch.stack([logits[0, 2], logits[1, 1]]))
    assert torch.allclose(logit_diff(2, 1)(logits, mask), torch.tensor([2.0, 0.5]))
    assert torch.allclose(logit_diff(1, 2)(logits, mask), torch.tensor([-2.0, -0.5]))  # sign flips
    assert torch.allclose(logit_diff([2, 0], [1, 2])(logits, mask), torch.tensor([2.0, 1.5]))  # per-row answers
    inputs = SimpleNamespace(attention_mask=mask)
    assert torch.allclose(logit_diff(2, 1)(logits, inputs), torch.tensor([2.0, 0.5]))
    expected = torch.softmax(torch.tensor([0.0, 1.0, 3.0, 0, 0, 0]), -1)[2]
    assert torch.allclose(answer_prob(2)(logits, mask)[0], expected)
    # strings: single tokens, through the model's tokenizer; a word of several tokens is refused
    tokenizer = SimpleNamespace(encode=lambda text, add_special_tokens=False: {" dog": [2], " car": [1], " hot dog": [5, 2]}[text])
    fake_model = SimpleNamespace(cfg=None, tokenizer=tokenizer)
    assert torch.allclose(logit_diff(" dog", " car", fake_model)(logits, mask), torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match=r"answer_a ' hot dog' is 2 tokens .*ids \[5, 2\]"):
        logit_diff(" hot dog", " car", fake_model)
    with pytest.raises(ValueError, match="no tokenizer"):
        logit_diff(" dog", " car")
    # KL to the source: 0 on the source itself, the textbook value elsewhere
    source = torch.randn(2, 3, 6)
    kl = kl_to_source(source, mask)
    assert kl(source, mask).abs().max() < 1e-6
    p, q = final_logits(source, mask).log_softmax(-1), final_logits(logits, mask).log_softmax(-1)
    assert torch.allclose(kl(logits, mask), (p.exp() * (p - q)).sum(-1))
    assert restoration(1.5, 1.0, 2.0) == 0.5
    assert torch.allclose(restoration(torch.tensor([1.0, 3.0]), torch.tensor(1.0), torch.tensor(3.0)), torch.tensor([0.0, 1.0]))


def test_full_patch_restores_everything(model, same_layout):
    """A full patch of the stream restores the source, with the later injections patched too. A
    sweep over ``resid_pre`` alone restores the last position's metric fully at a layer L unless the
    target's rows are injected after a block L .. n_layers - 2, where a later block's attention
    carries them to the last (text) position: VideoLLaMA2 and Qwen2.5-Omni inject nothing; the tiny
    Qwen3-Omni injects after both its layers, so layer 0 is not restored and layer 1 is (the rows
    added after the last block reach the visual positions' logits only)."""
    a, b = same_layout
    metric = logit_diff(3, 5)
    with torch.no_grad():
        source_value, target_value = _metric_at(metric, model(a), a), _metric_at(metric, model(b), b)
    full = ["blocks.0.hook_resid_pre", *injections_from(model, 0)]
    patched = _metric_at(metric, patch(model, a, b, full, modality="all"), b)
    assert abs(restoration(patched, target_value, source_value) - 1.0) < 1e-4
    sweep = patching_sweep(model, a, b, metric, components=("resid_pre",), modality="all", progress=False)
    last = model.cfg.n_layers - 1
    read_later = lambda layer: [n for n in injections_from(model, layer) if n != f"blocks.{last}.hook_injection"]  # noqa: E731
    reached = torch.tensor([bool(read_later(layer)) for layer in range(model.cfg.n_layers)])
    assert torch.allclose(sweep.restoration[0][~reached], torch.ones(int((~reached).sum())), atol=1e-4)
    assert ((sweep.restoration[0][reached] - 1).abs() > 1e-3).all()


# ------------------------------------------------------------------ TransformerLens


def _shaped(inputs: ModelInputs) -> ModelInputs:
    """ModelInputs with the ``.shape`` TransformerLens reads from ``corrupted_tokens`` (if missing)."""
    if hasattr(inputs, "shape"):
        return inputs

    class Shaped(ModelInputs):
        @property
        def shape(self):
            return self.input_ids.shape

    return Shaped(**{f.name: getattr(inputs, f.name) for f in fields(inputs)})


def test_transformer_lens_generic_patch(family, model, same_layout, monkeypatch):
    # TransformerLens reads cfg.n_heads and cfg.device (and cfg.n_key_value_heads for k/v patches)
    cfg_type = type(model.cfg)
    for attr, value in (("n_heads", lambda c: c.text.n_heads), ("n_key_value_heads", lambda c: c.text.n_kv_heads),
                        ("device", lambda c: "cpu")):
        if not hasattr(model.cfg, attr):
            monkeypatch.setattr(cfg_type, attr, property(value), raising=False)

    def metric(logits):
        return logits[:, -1, 3] - logits[:, -1, 5]

    # plain token ids: the whole [layer, pos] sweep against our patch at single positions
    ids = torch.randint(0, 199, (2, 8), generator=torch.Generator().manual_seed(0))
    text = [family.text(model, ids[i : i + 1]) for i in range(2)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(ids[:1])
    tl_values = tl_patching.get_act_patch_resid_pre(model, ids[1:], clean_cache, lambda x: metric(x)[0])
    assert tl_values.shape == (model.cfg.n_layers, 8)
    for layer in range(model.cfg.n_layers):
        for pos in (0, 3, 7):
            mask = torch.zeros(1, 8, dtype=torch.bool)
            mask[0, pos] = True
            ours = metric(patch(model, text[0], text[1], ("resid_pre", layer), modality=mask))[0]
            assert abs(float(ours) - float(tl_values[layer, pos])) < 1e-5

    # prepared inputs with media (same layout): pass ModelInputs as the corrupted "tokens"
    a, b = same_layout
    with torch.no_grad():
        _, cache_a = model.run_with_cache(a)
    df = pd.DataFrame({"layer": [0, 1, 1], "pos": [a.input_ids.shape[1] - 1, 8, a.input_ids.shape[1] - 1]})
    tl_flat = tl_patching.generic_activation_patch(
        model, _shaped(b), cache_a, lambda x: metric(x)[0], tl_patching.layer_pos_patch_setter, "resid_pre", index_df=df
    )
    for k, (layer, pos) in enumerate(df.itertuples(index=False)):
        mask = torch.zeros_like(b.attention_mask, dtype=torch.bool)
        mask[0, pos] = True
        ours = metric(patch(model, a, b, ("resid_pre", layer), modality=mask))[0]
        assert abs(float(ours) - float(tl_flat[k])) < 1e-5
    with torch.no_grad():
        assert (tl_flat - metric(model(b))[0]).abs().max() > 1e-6  # the patches did something


# ------------------------------------------------------------------ table and plot


def test_table_and_plot(model, conflict, tmp_path):
    src, tgt = conflict
    sweep = patching_sweep(model, src, tgt, logit_diff(3, 5), components=("resid_pre", "mlp_out", "audio_proj.hook_out"),
                           progress=False)
    table = sweep.table()
    n_layers = model.cfg.n_layers
    assert list(table.columns) == ["component", "layer", "value", "restoration"]
    assert len(table) == 2 * n_layers + 1
    assert table["component"].tolist() == ["resid_pre"] * n_layers + ["mlp_out"] * n_layers + ["audio_proj.hook_out"]
    assert table["layer"].tolist()[:n_layers] == list(range(n_layers)) and pd.isna(table["layer"].iloc[-1])
    assert torch.allclose(torch.tensor(table["value"].to_numpy()[:n_layers], dtype=torch.float32), sweep.values[0])
    fig = sweep.plot(tmp_path / "patching.png")
    assert (tmp_path / "patching.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    heads = patching_sweep(model, src, tgt, logit_diff(3, 5), components=("z",), progress=False)
    assert list(heads.table().columns) == ["layer", "head", "value", "restoration"]
    assert len(heads.table()) == n_layers * model.cfg.text.n_heads
    heads.plot(tmp_path / "heads.png", normalized=False)
    assert (tmp_path / "heads.png").stat().st_size > 0
    from hooked_avllm.analysis.plotting import pyplot

    pyplot().close("all")
    del fig
