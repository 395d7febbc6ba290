"""Logit lens: known answers against the model's own logits and a hand-made unembedding, on every
family (each family's test kit in ``tests/kits/``)."""

import pytest
import torch

from hooked_avllm.analysis.logit_lens import hook_names_for, logit_lens
from hooked_avllm.inputs.select import select_positions


@pytest.fixture(scope="module")
def inputs(family, model):
    return family.clip(model, seconds=3, seed=0)


@pytest.fixture(scope="module")
def run(model, inputs):
    return model.run_with_cache(inputs, names_filter=lambda name: name.startswith("blocks.") and "resid" in name)


def assert_top_k_equal(got_ids, got_probs, probs, k):
    """The lens's top-k against the softmax ``probs`` [n, vocab]: ids agree wherever the
    probabilities are not (near-)tied."""
    want_probs, want_ids = probs.topk(k, dim=-1)
    assert (got_probs - want_probs).abs().max() < 1e-5
    assert (probs.gather(-1, got_ids) - want_probs).abs().max() < 1e-5
    distinct = (want_probs[:, :-1] - want_probs[:, 1:]).abs() > 1e-6
    assert torch.equal(got_ids[:, :-1][distinct], want_ids[:, :-1][distinct])


def test_final_norm_lens_at_last_layer_equals_model_logits(model, inputs):
    """The last layer's ``hook_resid_post`` is the final residual stream wherever that layer adds no
    injection after its block. The tiny Qwen3-Omni adds DeepStack rows after its last layer too (2
    taps, 2 layers), so at its visual positions the stream the final norm reads is ``hook_resid_post +
    hook_injection``: the lens reads the named hook only. ``ln_final.hook_normalized`` (the normed final
    stream) through the unembedding alone is the logits at every position, in every family."""
    last = model.cfg.n_layers - 1
    names = (f"blocks.{last}.hook_injection", "ln_final.hook_normalized")
    logits, cache = model.run_with_cache(inputs, names_filter=lambda name: name in names or name.endswith("resid_post"))
    k = 7
    lens = logit_lens(model, cache, positions="all", k=k, apply_final_norm=True)
    assert lens.top_ids.shape == (model.cfg.n_layers, inputs.input_ids.shape[1], k)
    probs = logits[0].float().softmax(-1)  # [seq, vocab]
    injection = cache.cache_dict.get(names[0])
    injected = torch.zeros(len(probs), dtype=torch.bool)
    if injection is not None:  # DeepStack: rows at the visual positions only
        injected = (injection[0] != 0).any(-1)
        assert torch.equal(injected, inputs.layout.video[0] | inputs.layout.image[0])
    plain = ~injected
    assert_top_k_equal(lens.top_ids[-1][plain], lens.top_probs[-1][plain], probs[plain], k)
    if bool(injected.any()):  # the injection matters: the named hook alone is not the final stream there
        assert (lens.top_probs[-1][injected] - probs[injected].topk(k, dim=-1).values).abs().max() > 1e-5
    final = logit_lens(model, cache, positions="all", hooks="ln_final.hook_normalized", k=k, apply_final_norm=False)
    assert final.layers == [-1]
    assert_top_k_equal(final.top_ids[0], final.top_probs[0], probs, k)


def test_lens_without_norm_equals_unembed_by_hand(model, run):
    _, cache = run
    lens = logit_lens(model, cache, positions="audio", apply_final_norm=False, k=3, track=[5, 77])
    audio = cache.layout.audio
    for i, layer in enumerate(range(model.cfg.n_layers)):
        resid = cache[f"blocks.{layer}.hook_resid_post"][audio]  # [n_audio, d_model]
        logits = resid @ model.unembed.weight.T  # [n_audio, vocab]
        probs = logits.softmax(-1)
        want_probs, want_ids = probs.topk(3, dim=-1)
        assert (lens.top_probs[i] - want_probs).abs().max() < 1e-5
        assert (probs.gather(-1, lens.top_ids[i]) - want_probs).abs().max() < 1e-5
        assert (lens.track_probs[i] - probs[:, [5, 77]]).abs().max() < 1e-6
        want_rank = (logits[:, None, :] > logits[:, [5, 77], None]).sum(-1)
        assert torch.equal(lens.track_ranks[i], want_rank)
    # the last layer without the norm differs from the model's logits (the norm matters)
    with_norm = logit_lens(model, cache, positions="audio", apply_final_norm=True, k=3)
    assert (with_norm.top_probs[-1] - lens.top_probs[-1]).abs().max() > 1e-3


# audio tokens of the 3-s clip in [1, 2) s: Whisper 25 a second; AuT k / 13 s for k = 13 .. 25; BEATs time
# patches at 1.12 .. 1.92 s, 8 bands each
def test_positions_by_modality_select_the_layout_positions(family, model, inputs, run):
    _, cache = run
    layout = inputs.layout
    for kind in ("audio", "video", "text"):
        lens = logit_lens(model, cache, positions=kind, k=2, layers=[0])
        want = torch.nonzero(getattr(layout, kind)[0]).flatten()
        assert torch.equal(lens.positions, want)
        assert set(lens.kinds) == {kind}
        assert torch.equal(lens.input_ids, inputs.input_ids[0, want])
    audio = logit_lens(model, cache, positions="audio", k=1, layers=[-1])
    assert torch.equal(audio.audio_time, layout.audio_time[0][layout.audio[0]])
    assert audio.hook_names == [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    last = select_positions(layout, "last")
    assert torch.nonzero(last).tolist() == [[0, inputs.input_ids.shape[1] - 1]]
    window = logit_lens(model, cache, positions="audio", time=(1.0, 2.0), k=1, layers=[0])
    in_window = layout.audio[0] & (layout.audio_time[0] >= 1.0) & (layout.audio_time[0] < 2.0)
    assert torch.equal(window.positions, torch.nonzero(in_window).flatten())
    assert len(window.positions) == family.answers.audio_in_second_two
    both = select_positions(layout, ["audio", "video"])
    assert torch.equal(both, layout.audio | layout.video)
    assert torch.nonzero(select_positions(layout, [0, -1])).tolist() == [[0, 0], [0, inputs.input_ids.shape[1] - 1]]
    with pytest.raises(ValueError, match="no image positions"):
        select_positions(layout, "image")


def test_from_inputs_equals_from_cache_and_table_is_tidy(model, inputs, run):
    _, cache = run
    from_cache = logit_lens(model, cache, positions="video", hooks="resid_mid", k=4, track=[9])
    from_inputs = logit_lens(model, inputs, positions="video", hooks="blocks.{l}.hook_resid_mid", k=4, track=[9])
    assert from_inputs.hook_names == from_cache.hook_names == hook_names_for(model, "resid_mid")
    assert torch.equal(from_inputs.top_ids, from_cache.top_ids)
    assert (from_inputs.top_probs - from_cache.top_probs).abs().max() < 1e-6
    table = from_inputs.table()
    n_video = int(inputs.layout.video.sum())
    assert len(table) == model.cfg.n_layers * n_video * 4
    assert list(table.columns) == ["hook", "layer", "batch", "position", "kind", "audio_time", "rank", "token_id", "token", "prob"]
    row = table[(table.layer == 1) & (table["rank"] == 2)].iloc[3]
    assert row.token_id == int(from_inputs.top_ids[1, 3, 2]) and row.token == str(row.token_id)  # no tokenizer: ids
    assert abs(row.prob - float(from_inputs.top_probs[1, 3, 2])) < 1e-7
    track = from_inputs.track_table()
    assert len(track) == model.cfg.n_layers * n_video and (track.token_id == 9).all()


def test_regex_hooks_and_decoding_with_a_tokenizer(model, inputs):
    class Tok:
        def decode(self, ids):
            return f"<t{ids[0]}>"

        def encode(self, text, add_special_tokens=False):
            return [int(text[1:]), 0]

    model.tokenizer = Tok()
    try:
        lens = logit_lens(model, inputs, positions="last", hooks=r"blocks\.\d+\.hook_resid_(mid|post)", k=2, track="t42")
    finally:
        model.tokenizer = None
    assert lens.hook_names == ["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
    assert lens.layers == [0, 0, 1, 1]
    assert lens.top_tokens[2][0][1] == f"<t{int(lens.top_ids[2, 0, 1])}>"
    assert lens.track_ids == [42] and lens.track_labels == ["t42"]


def test_padded_batch(family, model):
    rows = [family.clip(model, seed=3, **family.other_length), family.clip(model, seconds=3, seed=4)]
    batch = family.batch(model, rows)
    lens = logit_lens(model, batch, positions="audio", k=3)
    assert lens.batch_index.tolist() == [0] * int(rows[0].layout.audio.sum()) + [1] * int(rows[1].layout.audio.sum())
    for b, row in enumerate(rows):
        alone = logit_lens(model, row, positions="audio", k=3)
        assert (lens.top_probs[:, lens.batch_index == b] - alone.top_probs).abs().max() < 1e-4
    last = logit_lens(model, batch, positions="last", k=3, apply_final_norm=True, layers=[-1])
    logits = model(batch)
    want = logits[:, -1].softmax(-1).topk(3, dim=-1).values
    assert (last.top_probs[0] - want).abs().max() < 1e-5


def test_plot_writes_png(model, inputs, tmp_path):
    lens = logit_lens(model, inputs, positions="video", k=2, track=[3, 4])
    lens.plot(tmp_path / "lens.png")
    many = logit_lens(model, inputs, positions="audio", k=1)  # too many positions to annotate
    many.plot(tmp_path / "lens_audio.png")
    for name in ("lens.png", "lens_audio.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
