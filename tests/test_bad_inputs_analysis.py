"""The bad-input catalogue, area "analysis": layer arguments and modalities of knockout, token
dropping, attention share, frame heatmaps and the logit lens, for every family; and the figures of
those tools explaining themselves.

Layers are checked where a tool meets the model (its depth), once, by
``hooked_avllm.analysis.arguments``: negative indices count from the end as in Python (``[-1]`` is
the last layer, in every tool alike; ``drop_tokens``'s ``after_layer=-1`` keeps its meaning "before
layer 0"), a bare int where a list or window belongs is a ``TypeError``, and a layer the model
lacks, a reversed, empty or repeated window, or a layer named twice is a ``ValueError`` naming the
argument, the value and the model's depth. A tool asked to act on a media kind the inputs do not
hold would do nothing: it raises when no row (clip) holds it and warns (``AnalysisWarning``,
naming the rows) when only some do, since a batch or a sweep may mix clips on purpose. Every case
leaves the model as a fresh one (``ModelSnapshot``).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bad_inputs import Case, ModelSnapshot, check, family_cases
from hooked_avllm.analysis import (
    DropTokens,
    Knockout,
    KnockoutRule,
    KnockoutSweep,
    LogitLensResult,
    attention_share,
    attention_to_video,
    drop_tokens,
    frame_heatmap,
    generate_with_knockout,
    knockout,
    knockout_sweep,
    logit_lens,
    plot_frame_heatmaps,
)
from hooked_avllm.analysis.arguments import AnalysisWarning, check_layers, check_window, check_windows
from hooked_avllm.analysis.attention_share import AttentionShare

# ESPnet's BEATs (the VideoLLaMA2 reference) uses a deprecated autocast spelling
pytestmark = pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning")

DEPTH = r"\d+-layer model"  # every message names the model's depth (the kits' tiny models have 2 layers)
GEN_VIDEO = {"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}


def zero(new_tokens, clip):
    return 0.0


def under(ctx, rules, inputs=None):
    """Logits of one forward under knockout ``rules``."""
    with torch.no_grad(), knockout(ctx.model, rules):
        return ctx.model(ctx.inputs if inputs is None else inputs)


def dropped(ctx, kinds, after_layer, inputs=None):
    with torch.no_grad(), drop_tokens(ctx.model, kinds, after_layer):
        return ctx.model(ctx.inputs if inputs is None else inputs)


def edited(ctx, *edits):
    with torch.no_grad(), ctx.model.edit_attention(*edits):
        return ctx.model(ctx.inputs)


def shares_of_a_dict(ctx):
    """The tensors a processor returns, as a dict, are inputs like the prepared ones."""
    given = {"input_ids": ctx.inputs.input_ids, "attention_mask": ctx.inputs.attention_mask, **ctx.inputs.media}
    as_dict = attention_share(ctx.model, given, max_new_tokens=2, eos_token_id=[])
    prepared = attention_share(ctx.model, ctx.inputs, max_new_tokens=2, eos_token_id=[])
    assert torch.equal(as_dict.values, prepared.values) and torch.equal(as_dict.step, prepared.step)


def bare_rule_is_a_knockout(ctx):
    """``edit_attention(rule)`` wraps the rule in a checked ``Knockout``: the same logits as
    ``knockout(model, rule)``, and not the plain run's."""
    rule = KnockoutRule("any", "video", [-1, 0])
    with torch.no_grad():
        plain = ctx.model(ctx.inputs)
    assert torch.equal(edited(ctx, rule), under(ctx, rule))
    assert not torch.equal(edited(ctx, rule), plain)


def sweep(ctx, windows, clips=None, rules=GEN_VIDEO):
    return knockout_sweep(ctx.model, [ctx.inputs] if clips is None else clips, rules, windows, zero, max_new_tokens=1,
                          eos_token_id=[], progress=False)


def last_layer(ctx) -> int:
    return ctx.model.cfg.n_layers - 1


# ------------------------------------------------------------------------------------- handled


def negative_layer_is_the_last(ctx):
    """``[-1]`` knocks out the last layer exactly as ``(n - 1, n)`` does, and the rule matters."""
    n = ctx.model.cfg.n_layers
    with torch.no_grad():
        plain = ctx.model(ctx.inputs)
    by_index = under(ctx, KnockoutRule("any", "video", layers=[-1]))
    by_window = under(ctx, KnockoutRule("any", "video", layers=(n - 1, n)))
    from_the_end = under(ctx, KnockoutRule("any", "video", layers=(-1, n)))
    assert torch.equal(by_index, by_window) and torch.equal(from_the_end, by_window)
    assert not torch.allclose(by_index, plain)


def drop_before_layer_zero_equals_knocking_out_every_layer(ctx):
    """``after_layer=-1`` hides the video tokens from every layer: what blocking every query from
    every video key in every layer does (both keep each position's own key)."""
    knocked = under(ctx, KnockoutRule("any", "video"))
    assert torch.equal(dropped(ctx, "video", -1), knocked)


def attention_to_video_of_the_last_layer(ctx):
    """``layers=[-1]`` averages the last layer's full attention pattern (read from a cache here)."""
    scores = attention_to_video(ctx.model, ctx.inputs, queries="last", layers=[-1])
    _, cache = ctx.model.run_with_cache(ctx.inputs, names_filter=f"blocks.{last_layer(ctx)}.attn.hook_pattern")
    want = cache[f"blocks.{last_layer(ctx)}.attn.hook_pattern"][0, :, -1].mean(0)  # [key], mean over heads
    video = ctx.inputs.layout.video[0]
    assert (scores[0, video] - want[video]).abs().max() < 1e-6
    assert f"layer {last_layer(ctx)} (of {ctx.model.cfg.n_layers})" in scores.description


def share_layers_from_the_end(ctx):
    shares = attention_share(ctx.model, ctx.inputs, queries="last", layers=[-1, 0])
    assert shares.layers == [0, last_layer(ctx)]
    assert (shares.values.sum(-1) - 1).abs().max() < 1e-5


def lens_layers_from_the_end(ctx):
    lens = logit_lens(ctx.model, ctx.inputs, positions="last", layers=[-1], progress=False)
    assert lens.hook_names == [f"blocks.{last_layer(ctx)}.hook_resid_post"]


def sweep_window_from_the_end(ctx):
    result = sweep(ctx, [(-1, ctx.model.cfg.n_layers)])
    assert result.windows == [(last_layer(ctx), ctx.model.cfg.n_layers)]


def mixed_batch_keeps_the_rows_with_video(ctx):
    """A batch where one row lacks video warns, and still knocks out the row that has it."""
    with torch.no_grad():
        plain = ctx.model(ctx.mixed)
    knocked = under(ctx, KnockoutRule("any", "video"), ctx.mixed)
    assert not torch.allclose(knocked[0], plain[0])
    if ctx.model.cfg.text.n_experts:
        # MoE: each expert multiplies the tokens routed to it from the whole batch, so row 1's rows sit
        # in GEMMs whose size depends on row 0's routing (knocked or not); BLAS may round them
        # differently (7e-10 in an expert's output on an AMD EPYC CPU, 1.5e-7 in the logits)
        torch.testing.assert_close(knocked[1], plain[1], rtol=0, atol=1e-6)
    else:
        assert torch.equal(knocked[1], plain[1])  # no video in row 1: nothing to block
    return knocked


MODEL_CASES = [
    # ---------------------------------------------------------------- knockout: layers
    Case("knockout window (10, 12) past the model's depth", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=(10, 12))), ValueError,
         rf"knockout rule generated->video: layers=\(10, 12\) lies outside this {DEPTH}"),
    Case("knockout reversed window (1, 0)", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=(1, 0))), ValueError,
         r"layers=\(1, 0\) is reversed: a window is \(first, end\) with end exclusive.*e\.g\. \(0, 1\); "
         r"this model has \d+ layers"),
    Case("knockout empty window (1, 1)", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=(1, 1))), ValueError,
         r"layers=\(1, 1\) is empty: it covers no layer.*this model has \d+ layers"),
    Case("knockout reversed range(1, 0)", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=range(1, 0))), ValueError,
         r"layers=range\(1, 0\) is reversed"),
    Case("knockout layers=[] selects nothing", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=[])), ValueError,
         rf"layers=\[\] selects no layer; pass at least one layer of this {DEPTH} \(layers 0\.\.\d+"),
    Case("knockout layers=[5] the model lacks", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=[5])), ValueError,
         rf"layers=\[5\]: layer 5 does not exist in this {DEPTH}"),
    Case("knockout layers=[-9] past the first layer", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=[-9])), ValueError,
         rf"layers=\[-9\]: layer -9 does not exist in this {DEPTH}.*counted from the end"),
    Case("knockout [1, -1] names the last layer twice", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=[1, -1])), ValueError,
         rf"layers=\[1, -1\] names layer 1 more than once \(-1 is layer 1 of this {DEPTH}\)"),
    Case("knockout layers=[0.5]", "analysis",
         lambda ctx: under(ctx, KnockoutRule("generated", "video", layers=[0.5])), TypeError,
         r"layers=\[0\.5\]: layer indices are ints, got 0\.5 \(float\)"),
    Case("generate_with_knockout on layers the model lacks (checked before generating)", "analysis",
         lambda ctx: generate_with_knockout(ctx.model, ctx.inputs, KnockoutRule("generated", "audio", (30, 36)), 2),
         ValueError, rf"layers=\(30, 36\) lies outside this {DEPTH}"),
    Case("model.edit_attention(Knockout) on layers the model lacks", "analysis",
         lambda ctx: edited(ctx, Knockout(KnockoutRule("generated", "video", (10, 12)))), ValueError,
         rf"layers=\(10, 12\) lies outside this {DEPTH}"),
    Case("model.edit_attention(a bare KnockoutRule) on layers the model lacks", "analysis",
         lambda ctx: edited(ctx, KnockoutRule("generated", "video", (4, 2))), ValueError, r"layers=\(4, 2\)"),
    Case("model.edit_attention of something that is not an edit", "analysis", lambda ctx: edited(ctx, "video"),
         TypeError, r"edit_attention: edit 0 is str 'video', not an attention edit.*Knockout\(\[\.\.\.rules\]\)"),
    Case("model.edit_attention(drop tokens after a layer the model lacks)", "analysis",
         lambda ctx: edited(ctx, DropTokens("video", 36)), ValueError, r"drop_tokens: after_layer=36 is out of range"),
    Case("knockout_sweep with a 36-layer window list", "analysis",
         lambda ctx: sweep(ctx, [(first, first + 4) for first in range(0, 36, 4)]), ValueError,
         rf"knockout_sweep: windows \(0, 4\), \(4, 8\), .*\(9 in all\) lie outside this {DEPTH}.*deeper model"),
    Case("knockout_sweep with one reversed window", "analysis", lambda ctx: sweep(ctx, [(0, 1), (2, 1)]), ValueError,
         r"knockout_sweep: windows\[1\]=\(2, 1\) is reversed"),
    Case("knockout_sweep with a repeated window", "analysis", lambda ctx: sweep(ctx, [(0, 1), (0, 1)]), ValueError,
         r"knockout_sweep: windows\[1\]=\(0, 1\) repeats knockout_sweep: windows\[0\]=\(0, 1\)"),
    Case("knockout_sweep with no window", "analysis", lambda ctx: sweep(ctx, []), ValueError,
         rf"knockout_sweep: windows=\[\] is empty: pass at least one \(first, end\) layer window of this {DEPTH}"),
    Case("knockout_sweep windows=(0, 2), one window not a list", "analysis", lambda ctx: sweep(ctx, (0, 2)), TypeError,
         r"knockout_sweep: windows=\(0, 2\) is one window; pass a list of windows: windows=\[\(0, 2\)\]"),
    Case("knockout_sweep with no rule", "analysis", lambda ctx: sweep(ctx, [(0, 1)], rules={}), ValueError,
         r"rules=\{\}: pass a dict of at least one name -> function of the layer range"),
    # ---------------------------------------------------------------- knockout: modalities
    Case("knockout of video keys on audio-only inputs", "analysis",
         lambda ctx: under(ctx, KnockoutRule("any", "video"), ctx.audio_only), ValueError,
         r"knockout rule any->video: key='video' names video tokens, but the inputs hold none \(they hold text, "
         r"audio\): the call would change nothing"),
    Case("generate_with_knockout of video queries on audio-only inputs", "analysis",
         lambda ctx: generate_with_knockout(ctx.model, ctx.audio_only, KnockoutRule("video", "text"), 2), ValueError,
         r"knockout rule video->text: query='video' names video tokens, but the inputs hold none"),
    Case("knockout of 'media' keys on text-only inputs", "analysis",
         lambda ctx: under(ctx, KnockoutRule("text", "media"), ctx.text), ValueError,
         r"key='media' names audio or video or image tokens, but the inputs hold none \(they hold text\)"),
    Case("knockout of video on a batch where row 1 lacks video", "analysis", mixed_batch_keeps_the_rows_with_video,
         AnalysisWarning, r"knockout rule any->video: key='video' names video tokens, but row 1 of 2 holds none "
         r"\(only text, audio\): there the call changes nothing"),
    Case("knockout_sweep over clips of which one lacks video", "analysis",
         lambda ctx: sweep(ctx, [(0, 1)], clips=[ctx.inputs, ctx.audio_only]), AnalysisWarning,
         r"knockout rule generated->video: key='video' names video tokens, but clip 1 of 2 holds none"),
    Case("knockout_sweep over clips of which none holds video", "analysis",
         lambda ctx: sweep(ctx, [(0, 1)], clips=[ctx.audio_only, ctx.audio_only]), ValueError,
         r"key='video' names video tokens, but the inputs hold none"),
    # ---------------------------------------------------------------- token dropping
    Case("drop_tokens after the last layer (drops nothing)", "analysis",
         lambda ctx: dropped(ctx, "video", last_layer(ctx)), ValueError,
         rf"drop_tokens: after_layer=\d+ is out of range for this {DEPTH}: pass -1 \(drop before layer 0\) up to \d+"),
    Case("drop_tokens after_layer=-2", "analysis", lambda ctx: dropped(ctx, "video", -2), ValueError,
         rf"drop_tokens: after_layer=-2 is out of range for this {DEPTH}.*-1 does not count from the end here"),
    Case("drop_tokens after_layer=36 (a deeper model's)", "analysis", lambda ctx: dropped(ctx, "audio", 36), ValueError,
         rf"drop_tokens: after_layer=36 is out of range for this {DEPTH}"),
    Case("drop_tokens after_layer=0.5", "analysis", lambda ctx: dropped(ctx, "video", 0.5), TypeError,
         r"drop_tokens: after_layer=0\.5 is the int index of the last layer that still reads the tokens"),
    Case("drop_tokens of video on audio-only inputs", "analysis", lambda ctx: dropped(ctx, "video", 0, ctx.audio_only),
         ValueError, r"drop_tokens: kinds='video' names video tokens, but the inputs hold none \(they hold text, audio\)"),
    Case("drop_tokens of an unknown kind 'sound'", "analysis", lambda ctx: dropped(ctx, "sound", 0), ValueError,
         r"unknown kind 'sound'; use one of text, audio, video"),
    # ---------------------------------------------------------------- attention share
    Case("attention_share(layers=[7]) on a shallower model", "analysis",
         lambda ctx: attention_share(ctx.model, ctx.inputs, queries="last", layers=[7]), ValueError,
         rf"attention_share: layers=\[7\]: layer 7 does not exist in this {DEPTH}"),
    Case("attention_share(layers=-1), an int", "analysis",
         lambda ctx: attention_share(ctx.model, ctx.inputs, queries="last", layers=-1), TypeError,
         r"attention_share: layers=-1 is a single int; pass a list of layers \(layers=\[-1\]\) or a range"),
    Case("attention_share(layers=[0, 0])", "analysis",
         lambda ctx: attention_share(ctx.model, ctx.inputs, queries="last", layers=[0, 0]), ValueError,
         r"attention_share: layers=\[0, 0\] names layer 0 more than once"),
    Case("attention_share(queries='video') on audio-only inputs", "analysis",
         lambda ctx: attention_share(ctx.model, ctx.audio_only, queries="video"), ValueError,
         r"attention_share: queries='video' names video tokens, but the inputs hold none"),
    # ---------------------------------------------------------------- frame heatmaps
    Case("attention_to_video on inputs without video", "analysis",
         lambda ctx: attention_to_video(ctx.model, ctx.audio_only), ValueError,
         r"attention_to_video: it reads video tokens, but the inputs hold none \(they hold text, audio\): the call "
         r"would measure nothing"),
    Case("attention_to_video on a batch where row 1 lacks video", "analysis",
         lambda ctx: attention_to_video(ctx.model, ctx.mixed), AnalysisWarning,
         r"attention_to_video: it reads video tokens, but row 1 of 2 holds none"),
    Case("attention_to_video heads=[99]", "analysis", lambda ctx: attention_to_video(ctx.model, ctx.inputs, heads=[99]),
         ValueError, r"attention_to_video: heads=\[99\]: head 99 does not exist in this \d+-head model"),
    Case("attention_to_video layers=[5]", "analysis", lambda ctx: attention_to_video(ctx.model, ctx.inputs, layers=[5]),
         ValueError, rf"attention_to_video: layers=\[5\]: layer 5 does not exist in this {DEPTH}"),
    # ---------------------------------------------------------------- logit lens
    Case("logit_lens layers=[7]", "analysis", lambda ctx: logit_lens(ctx.model, ctx.inputs, layers=[7]), ValueError,
         rf"logit_lens: layers=\[7\]: layer 7 does not exist in this {DEPTH}"),
    Case("logit_lens layers=[]", "analysis", lambda ctx: logit_lens(ctx.model, ctx.inputs, layers=[]), ValueError,
         rf"logit_lens: layers=\[\] selects no layer; pass at least one layer of this {DEPTH}"),
    # ---------------------------------------------------------------- valid but unusual
    Case("knockout layers=[-1] is the last layer", "analysis", negative_layer_is_the_last, None),
    Case("drop_tokens after_layer=-1 hides the tokens from every layer", "analysis",
         drop_before_layer_zero_equals_knocking_out_every_layer, None),
    Case("attention_to_video layers=[-1]", "analysis", attention_to_video_of_the_last_layer, None),
    Case("attention_share layers=[-1, 0]", "analysis", share_layers_from_the_end, None),
    Case("logit_lens layers=[-1]", "analysis", lens_layers_from_the_end, None),
    Case("knockout_sweep window (-1, n)", "analysis", sweep_window_from_the_end, None),
    Case("model.edit_attention(a bare KnockoutRule) equals Knockout([rule])", "analysis", bare_rule_is_a_knockout, None),
    Case("attention_share of a dict of processor tensors equals the prepared inputs'", "analysis", shares_of_a_dict, None),
]

PLAIN_CASES = [  # no model needed: the argument's type is wrong whatever the model
    Case("KnockoutRule(layers=-1), an int", "analysis", lambda ctx: KnockoutRule("generated", "video", layers=-1),
         TypeError, r"KnockoutRule\(layers=-1\): layers is a \(first, end\) window, a range or a list of layers, not a "
                    r"single int; for one layer pass layers=\[-1\]"),
    Case("KnockoutRule(layers='18-30'), a string", "analysis",
         lambda ctx: KnockoutRule("generated", "video", layers="18-30"), TypeError,
         r"KnockoutRule\(layers='18-30'\): pass a \(first, end\) window, a range or a list of layer indices, not a str"),
    Case("a window of three numbers", "analysis", lambda ctx: check_window(6, (0, 2, 4), "windows[0]"), TypeError,
         r"windows\[0\]=\(0, 2, 4\): a window is a \(first, end\) pair of ints"),
    Case("a window (-2, 0) that means 'to the end'", "analysis", lambda ctx: check_window(6, (-2, 0)), ValueError,
         r"window=\(-2, 0\) is reversed: end 0 is layer 0, not the end of the model; to reach the last layer write "
         r"\(-2, 6\)"),
    Case("a window with a stride range(0, 6, 2)", "analysis", lambda ctx: check_window(6, range(0, 6, 2)), ValueError,
         r"window=range\(0, 6, 2\): a window is a range of step 1"),
    Case("layers=[True]", "analysis", lambda ctx: check_layers(6, [True]), TypeError,
         r"layers=\[True\]: layer indices are ints, got True \(bool\)"),
    Case("layers='0,1'", "analysis", lambda ctx: check_layers(6, "0,1"), TypeError,
         r"layers='0,1': pass a list of layer indices \(ints\) or a range, not a str"),
    Case("layers as a tensor of indices", "analysis", lambda ctx: _tensor_layers(), None),
]


def _tensor_layers():
    assert check_layers(6, torch.tensor([0, -1])) == [0, 5]
    assert check_windows(6, [range(0, 3), (3, 6)]) == [range(0, 3), range(3, 6)]


CASES = MODEL_CASES + PLAIN_CASES



@pytest.fixture(scope="module")
def ctx(family, model):
    inputs = family.clip(model, seconds=2, seed=1)
    audio_only = family.clip(model, video=False, seconds=2, seed=2)
    return SimpleNamespace(model=model, family=family, inputs=inputs, audio_only=audio_only,
                           mixed=family.batch(model, [inputs, audio_only]),
                           text=family.text(model, torch.tensor([[5, 6, 7, 8]])))


@pytest.mark.parametrize("case, family", family_cases(MODEL_CASES), indirect=["family"])
def test_bad_analysis_argument(case, family, model, ctx):
    snapshot = ModelSnapshot(model)
    check(case, ctx)
    snapshot.assert_unchanged()


@pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
def test_bad_analysis_argument_without_a_model(case):
    check(case, None)


# ------------------------------------------------------------------------------------- figures


def test_knockout_plot_ticks_window_ranges_and_joins_only_windows_of_one_width(tmp_path):
    windows = [(0, 4), (4, 8), (0, 2), (2, 4), (4, 6), (6, 8)]  # two widths, listed out of order
    scores = np.random.default_rng(0).random((2, len(windows), 3))
    result = KnockoutSweep(scores, np.full(3, 0.5), ["gen->video", "gen->audio"], windows)
    fig = result.plot(tmp_path / "knockout.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0-1", "0-3", "2-3", "4-5", "4-7", "6-7"]
    slots = {"0-1": 0, "0-3": 1, "2-3": 2, "4-5": 3, "4-7": 4, "6-7": 5}
    by_label = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # each errorbar's data line
    assert set(by_label) == {"gen->video, 2-layer windows", "gen->video, 4-layer windows", "gen->audio, 2-layer windows",
                             "gen->audio, 4-layer windows"}
    assert "no knockout" in [t.get_text() for t in ax.get_legend().get_texts()]
    narrow = by_label["gen->video, 2-layer windows"]
    x = np.asarray(narrow.get_xdata(), dtype=float)  # each rule a little to the side of the window's slot
    assert np.round(x).tolist() == [slots["0-1"], slots["2-3"], slots["4-5"], slots["6-7"]]  # in order: no zig-zag
    assert np.abs(x - np.round(x)).max() < 0.2
    assert list(narrow.get_ydata()) == [scores[0, w].mean() for w in (2, 3, 4, 5)]
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "error bars: ±1 SEM over the clips" in caption and "3 clips" in caption
    one_clip = KnockoutSweep(scores[:, :, :1], np.full(1, 0.5), ["gen->video", "gen->audio"], windows).plot()
    assert "one clip: no error bars" in " ".join(t.get_text() for t in one_clip.texts)


def test_share_plot_says_its_band_is_min_to_max(tmp_path):
    values = torch.softmax(torch.randn(6, 2, 4, 5), -1)
    shares = AttentionShare(values, torch.tensor([0, 0, 0, 1, 1, 1]), torch.arange(6), torch.zeros(6, dtype=torch.long),
                            [0, 1])
    fig = shares.plot(tmp_path / "share.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "shaded: min-max over 2 clips" in labels
    assert "shaded: the minimum to the maximum over 2 clips" in " ".join(t.get_text() for t in fig.texts)


def lens_result(n_hook: int, n_pos: int, tracked: bool) -> LogitLensResult:
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(n_hook, n_pos, 3, generator=generator).sort(-1, descending=True).values
    return LogitLensResult(
        hook_names=[f"blocks.{l}.hook_resid_post" for l in range(n_hook)], layers=list(range(n_hook)),
        top_ids=torch.zeros(n_hook, n_pos, 3, dtype=torch.long), top_probs=probs,
        top_tokens=[[[f"tok{p}", "b", "c"] for p in range(n_pos)] for _ in range(n_hook)],
        batch_index=torch.zeros(n_pos, dtype=torch.long), positions=torch.arange(n_pos), kinds=["audio"] * n_pos,
        audio_time=torch.arange(n_pos) * 0.04, input_ids=torch.full((n_pos,), -1), apply_final_norm=True,
        track_ids=[1] if tracked else None, track_labels=[" drill"] if tracked else None,
        track_probs=torch.rand(n_hook, n_pos, 1, generator=generator) if tracked else None,
        track_ranks=torch.zeros(n_hook, n_pos, 1, dtype=torch.long) if tracked else None,
    )


def test_lens_plot_of_many_positions_stays_small_and_keeps_token_labels(tmp_path):
    """36 layers x 250 audio tokens with a tracked token: at most 1,800 px wide (the plot was 3,468),
    top-1 tokens written at every 8th position, the tracked panel on the same layer axis."""
    fig = lens_result(36, 250, tracked=True).plot(tmp_path / "lens.png")
    width_px = fig.get_size_inches()[0] * 120
    assert width_px <= 1800
    heat = fig.axes[0]
    tracked = next(ax for ax in fig.axes if ax.get_title().startswith("tracked tokens"))
    every = int(re.search(r"written at every (\d+)(st|nd|rd|th) of 250 positions", heat.get_title()).group(1))
    columns = list(range(0, 250, every))
    assert len(columns) >= 16  # token labels across the whole selection
    written = [t.get_text() for t in heat.texts]
    wanted = [f"tok{p}" for _ in range(36) for p in columns]
    assert len(written) == len(wanted) and all(w.startswith(got) and len(got) >= min(4, len(w))
                                                for got, w in zip(written, wanted))
    assert [t.get_text() for t in tracked.get_xticklabels()][:2] == ["0", "3"]
    assert tracked.get_xlabel() == heat.get_ylabel() == "layer (resid after the block)"


def test_frame_heatmap_figure_says_what_a_frame_group_is_and_what_was_averaged(family, model, tmp_path):
    inputs = family.clip(model, seconds=3, seed=0)
    scores = attention_to_video(model, inputs, queries="last", layers=[-1], heads=[0, 2])
    assert scores.description == (f"mean attention from the last prompt position (1 per row) to each video token, "
                                   f"averaged over layer {model.cfg.n_layers - 1} (of {model.cfg.n_layers}) and heads "
                                   f"0, 2 of {model.cfg.text.n_heads}")
    heat = frame_heatmap(model, inputs, scores)
    frames = torch.rand(int(heat.first_frame.max()) + family.frames_per_group, 3, 56, 56) * 0.1  # dark frames
    fig = plot_frame_heatmaps(frames, heat, path=tmp_path / "heat.png")
    caption = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "Each panel is one frame group" in caption and scores.description in caption
    first = fig.axes[0]
    assert first.get_title() == f"t = {float(heat.time[0]):.1f} s" and [t.get_text() for t in first.texts][0].startswith("group 0: frame")
    heat_image = first.get_images()[1].get_array()
    assert heat_image.shape[-1] == 4 and float(heat_image[..., 3].max()) <= 0.8 + 1e-6  # opacity grows with the score
