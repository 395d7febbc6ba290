"""The bad-input catalogue, area "analysis": metrics that say when they measure nothing.

Activation patching, attribution patching, their metrics and token shift, for every family: a
metric word the vocabulary splits or does not know, an answer id outside it, patching arguments
naming layers, heads, components, positions or time windows the model or the clips lack, an
answer prefix that cannot be teacher-forced; pairs whose clean-corrupt gap is tiny or has the
wrong sign (a ``MetricGapWarning`` naming the pairs); token shift between models that do not share
one vocabulary. The valid-but-unusual inputs are checked against an independent computation: the
answer prefix against a hand-built teacher-forced run, the per-pair table against plain forwards,
the shared vocabulary against a renormalisation by hand, the plot's ranks against the table's.
Every case leaves the model as a fresh one (``ModelSnapshot``).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from bad_inputs import Case, ModelSnapshot, check, family_cases
from hooked_avllm.analysis import answer_prob, attribution_patching, logit_diff, patch, patching_sweep, token_shift
from hooked_avllm.analysis.metrics import MetricGapWarning, final_logits, restoration
from hooked_avllm.analysis.token_shift import VocabularyWarning
from hooked_avllm.inputs import teacher_forced_inputs
from hooked_avllm.toy import load_toy

# ESPnet's BEATs (the VideoLLaMA2 reference) uses a deprecated autocast spelling
pytestmark = pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning")

TOY_TOKENIZER = load_toy("omni").tokenizer  # a real word-level tokenizer with [UNK] (vocab < every kit's)


def sweep(ctx, metric=None, **kwargs):
    kwargs.setdefault("components", ("resid_pre",))
    kwargs.setdefault("layers", [0])
    return patching_sweep(ctx.model, kwargs.pop("source", ctx.src), kwargs.pop("target", ctx.tgt),
                          logit_diff(3, 5) if metric is None else metric, progress=False, **kwargs)


def estimate(ctx, metric=None, **kwargs):
    kwargs.setdefault("components", ("resid_pre",))
    kwargs.setdefault("layers", [0])
    kwargs.setdefault("heads", False)
    return attribution_patching(ctx.model, kwargs.pop("source", ctx.src), kwargs.pop("target", ctx.tgt),
                                logit_diff(3, 5) if metric is None else metric, progress=False, **kwargs)


def close_to(reference: torch.Tensor):
    """A metric that is 0 on a run whose final logits are ``reference`` and negative elsewhere."""

    def metric(logits, inputs=None):
        return -(final_logits(logits, inputs) - reference.to(logits.dtype)).pow(2).mean(-1)

    return metric


def finals(ctx):
    with torch.no_grad():
        return final_logits(ctx.model(ctx.src), ctx.src), final_logits(ctx.model(ctx.tgt), ctx.tgt)


def recorded(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, (MetricGapWarning, VocabularyWarning))]


# ------------------------------------------------------------------------------------- handled


def answer_prefix_is_a_teacher_forced_run(ctx):
    """``answer_prefix=[ids]`` scores where a hand-built teacher-forced run scores: the sweep equals
    the sweep of the forced inputs, and the target value is the metric on a plain forward of them."""
    prefix = [7, 8]
    metric = close_to(finals(ctx)[0])
    forced_src, forced_tgt = teacher_forced_inputs(ctx.src, torch.tensor(prefix)), teacher_forced_inputs(ctx.tgt, torch.tensor(prefix))
    ours = sweep(ctx, metric, answer_prefix=prefix)
    by_hand = sweep(ctx, metric, source=forced_src, target=forced_tgt)
    assert torch.allclose(ours.per_pair, by_hand.per_pair, atol=1e-6)
    with torch.no_grad():
        target_value = float(metric(ctx.model(forced_tgt)[:, -1:]).mean())  # the last forced position
    assert abs(float(ours.target_value[0]) - target_value) < 1e-5
    assert "after the teacher-forced ids [7, 8]" in ours.scored_at and "last input position" in by_hand.scored_at
    logits = patch(ctx.model, ctx.src, ctx.tgt, "blocks.0.hook_resid_pre", answer_prefix=prefix)
    assert logits.shape[1] == ctx.tgt.input_ids.shape[1] + 2


def pair_table_matches_plain_forwards(ctx):
    """Two healthy pairs: the table's source/target values are the metric on plain forwards, the gap
    their difference, every check "ok" and no warning; ``table(per_pair=True)`` adds the gap."""
    source_final, _ = finals(ctx)
    result, caught = recorded(lambda: sweep(ctx, [close_to(source_final)] * 2, source=[ctx.src] * 2, target=[ctx.tgt] * 2))
    assert not caught, [str(w.message) for w in caught]  # healthy pairs: no warning
    table = result.pair_table()
    with torch.no_grad():
        by_hand = [float(close_to(source_final)(ctx.model(x), x)) for x in (ctx.src, ctx.tgt)]
    assert abs(table["source"][0] - by_hand[0]) < 1e-5 and abs(table["target"][0] - by_hand[1]) < 1e-5
    assert abs(table["gap"][1] - (by_hand[0] - by_hand[1])) < 1e-5
    assert table["check"].tolist() == ["ok", "ok"] and result.weak_pairs == []
    per_cell = result.table(per_pair=True)
    assert list(per_cell.columns) == ["pair", "component", "layer", "value", "restoration", "source", "target", "gap"]


def negative_layer_is_the_last(ctx):
    last = ctx.model.cfg.n_layers - 1
    metric = close_to(finals(ctx)[0])
    assert torch.allclose(sweep(ctx, metric, layers=[-1]).per_pair, sweep(ctx, metric, layers=[last]).per_pair)


def attribution_reports_the_gap_too(ctx):
    with torch.no_grad():
        forced = teacher_forced_inputs(ctx.src, torch.tensor([7]))
        source_final = final_logits(ctx.model(forced), forced)  # the source's answer after the prefix
    ap, caught = recorded(lambda: estimate(ctx, close_to(source_final), answer_prefix=[7]))
    real = sweep(ctx, close_to(source_final), answer_prefix=[7])
    assert not caught
    assert torch.allclose(ap.components.gap, real.gap, atol=1e-5)
    assert ap.components.method == "attribution patching (linear estimate)"
    assert real.method == "activation patching (real)"
    assert ap.components.default_title().startswith("attribution patching (linear estimate): restoration of")
    assert real.default_title().startswith("activation patching (real): restoration of")


def token_shift_over_the_ids_both_tokenizers_agree_on(ctx):
    """Tokenizers that disagree on 2 ids (media placeholders named differently): those ids are left
    out, KL and ranks renormalise over the rest (checked by hand), and the result names A and B."""
    a, b = ctx.shift_pair(disagree=2)
    caption = torch.tensor([4, 5, 6])
    shift = token_shift(a, ctx.text_a, b, ctx.text_b, caption=caption, name_a="A-model", name_b="B-model")
    keep = torch.ones(a.cfg.d_vocab, dtype=torch.bool)
    keep[shift.excluded_ids] = False
    assert shift.excluded_ids == [0, 1] and shift.shared_vocab == int(keep.sum())
    with torch.no_grad():
        n = ctx.text_a.input_ids.shape[1]
        forced = teacher_forced_inputs(ctx.text_a, caption[:-1])
        row_a, row_b = a(forced)[0, n - 1 + 1, keep], b(forced)[0, n - 1 + 1, keep]  # predicts caption[1]
    p, q = row_a.log_softmax(-1), row_b.log_softmax(-1)
    assert abs(float(shift.kl[1]) - float((p.exp() * (p - q)).sum())) < 1e-5
    assert (shift.name_a, shift.name_b) == ("A-model", "B-model")


def token_shift_plot_ranks_are_the_tables(ctx):
    """The plot's rank axis shows the table's 0-based ranks, labels its base and its threshold, and
    says what A and B are."""
    a, b = ctx.shift_pair(disagree=0)
    shift = token_shift(a, ctx.text_a, b, ctx.text_b, caption=torch.tensor([4, 5, 6, 7]))
    fig = shift.plot()
    ax_kl, ax_rank = fig.axes[0], fig.axes[1]
    drawn = ax_rank.collections[-1].get_offsets()[:, 1].tolist()
    assert drawn == shift.table()["rank"].tolist()
    assert "0 = B's top-1" in ax_rank.get_ylabel()
    assert any("marginal threshold: rank < 3" in t.get_text() for t in ax_rank.get_legend().get_texts())
    assert f"A = {shift.name_a}, B = {shift.name_b}" in fig.get_suptitle()
    assert ax_kl.get_ylabel() == "KL(A || B), nats"
    from hooked_avllm.analysis.plotting import pyplot

    pyplot().close(fig)


# ------------------------------------------------------------------------------------- cases with a model

BAD_ID = 100_000  # past every kit's vocabulary
MODEL_CASES = [
    # metrics
    Case("logit_diff with an answer id past the vocabulary", "analysis",
         lambda ctx: logit_diff(BAD_ID, 5, ctx.model), ValueError,
         r"answer_a: token id 100000 is outside the vocabulary \[0, \d+\); pass an id the model has"),
    Case("answer_prob with a negative id", "analysis", lambda ctx: answer_prob(-1, ctx.model), ValueError,
         r"answer: token id -1 is outside the vocabulary \[0, \d+\)"),
    Case("a sweep scoring an id past the logits (metric built without a model)", "analysis",
         lambda ctx: sweep(ctx, logit_diff(BAD_ID, 5)), ValueError,
         r"answer token id 100000 is outside these logits' vocabulary \(\d+ ids\)"),
    Case("scoring teacher-forced logits with the inputs before forcing", "analysis",
         lambda ctx: logit_diff(3, 5)(ctx.model(teacher_forced_inputs(ctx.tgt, torch.tensor([7]))), ctx.tgt), ValueError,
         r"the logits have \d+ positions but the inputs' attention mask \d+: score a run with the inputs it ran on"),
    Case("metric given as a string", "analysis", lambda ctx: sweep(ctx, "logit_diff"), TypeError,
         r"metric must be a function metric\(logits, inputs\).*got 'logit_diff'"),
    # where the metric is read
    Case("answer_prefix as text on a model without a tokenizer", "analysis",
         lambda ctx: sweep(ctx, answer_prefix="I hear"), ValueError,
         r"answer_prefix='I hear' is text but the model has no tokenizer; pass its token ids"),
    Case("answer_prefix=[] (nothing to force)", "analysis", lambda ctx: sweep(ctx, answer_prefix=[]), ValueError,
         r"answer_prefix is empty; pass the answer's first words"),
    Case("answer_prefix with an id past the vocabulary", "analysis",
         lambda ctx: sweep(ctx, answer_prefix=[7, BAD_ID]), ValueError,
         r"answer_prefix holds token id 100000, outside the vocabulary \[0, \d+\)"),
    Case("answer_prefix=2.5", "analysis", lambda ctx: sweep(ctx, answer_prefix=2.5), TypeError,
         r"answer_prefix must be text \('I hear'\), token ids .* got 2.5"),
    Case("one answer_prefix per pair, of the wrong count", "analysis",
         lambda ctx: sweep(ctx, source=[ctx.src] * 2, target=[ctx.tgt] * 2, answer_prefix=[[7], [8], [9]]), ValueError,
         r"answer_prefix has 3 prefixes for 2 \(source, target\) pairs"),
    Case("answer_prefix on right-padded batches", "analysis",
         lambda ctx: patch(ctx.model, ctx.right_src, ctx.right_tgt, "blocks.0.hook_resid_pre", answer_prefix=[7]),
         ValueError, r"answer_prefix= cannot be appended to these inputs: teacher forcing appends tokens on the right"),
    # patching arguments
    Case("patching_sweep layers=[5] on a shallower model", "analysis", lambda ctx: sweep(ctx, layers=[5]), ValueError,
         r"layers=\[5\]: layer 5 does not exist in this \d+-layer model"),
    Case("patching_sweep layers=-1, an int", "analysis", lambda ctx: sweep(ctx, layers=-1), TypeError,
         r"layers=-1 is a single int; pass a list of layers"),
    Case("patching_sweep layers=[0, 0]", "analysis", lambda ctx: sweep(ctx, layers=[0, 0]), ValueError,
         r"layers=\[0, 0\] names layer 0 more than once"),
    Case("attribution_patching layers=[9]", "analysis", lambda ctx: estimate(ctx, layers=[9]), ValueError,
         r"layers=\[9\]: layer 9 does not exist in this \d+-layer model"),
    Case("patching_sweep components=('resid',), a misspelling", "analysis",
         lambda ctx: sweep(ctx, components=("resid",)), ValueError,
         r"components: 'resid' is not a component of this model's LLM layers \(closest: \[.*'resid_pre'.*\]\)"),
    Case("patching_sweep components naming resid_pre twice", "analysis",
         lambda ctx: sweep(ctx, components=("resid_pre", "resid_pre")), ValueError,
         r"components=\['resid_pre', 'resid_pre'\] names \['resid_pre'\] more than once"),
    Case("patching_sweep components=()", "analysis", lambda ctx: sweep(ctx, components=()), ValueError,
         r"components is empty: give at least one"),
    Case("patching_sweep components=[3]", "analysis", lambda ctx: sweep(ctx, components=[3]), TypeError,
         r"components=\[3\]: each component is a non-empty name such as 'resid_pre', got 3"),
    Case("patching_sweep over head 9 of a 4-head model", "analysis",
         lambda ctx: sweep(ctx, components=("z",), heads=[9]), ValueError,
         r"heads=\[9\]: head 9 does not exist in this \d+-head model"),
    Case("patch heads=9", "analysis", lambda ctx: patch(ctx.model, ctx.src, ctx.tgt, "blocks.0.attn.hook_z", heads=9),
         ValueError, r"heads=\[9\]: head 9 does not exist in this \d+-head model"),
    Case("patch heads= on a hook without heads", "analysis",
         lambda ctx: patch(ctx.model, ctx.src, ctx.tgt, "blocks.0.hook_resid_pre", heads=1), ValueError,
         r"heads=1 applies to per-head hooks .*blocks.0.hook_resid_pre has no head axis"),
    Case("patch ('resid_pre', 7) on a shallower model", "analysis",
         lambda ctx: patch(ctx.model, ctx.src, ctx.tgt, ("resid_pre", 7)), ValueError,
         r"hook_names: \('resid_pre', 7\) names layer 7, which this \d+-layer model lacks"),
    Case("patch a hook name the model lacks", "analysis",
         lambda ctx: patch(ctx.model, ctx.src, ctx.tgt, "blocks.0.hook_resid_prev"), ValueError,
         r"the model has no hook 'blocks.0.hook_resid_prev' \(it has \d+ LLM layers\); the closest are \['blocks.0.hook_resid_pre'"),
    Case("patch hook_names=[]", "analysis", lambda ctx: patch(ctx.model, ctx.src, ctx.tgt, []), ValueError,
         r"hook_names is empty: name at least one hook"),
    Case("attribution_patching heads=3, an int", "analysis", lambda ctx: estimate(ctx, heads=3), TypeError,
         r"heads=3: pass True \(every head\), False \(no head sweep\) or a list of heads"),
    Case("patching_sweep layers_per_forward=0", "analysis", lambda ctx: sweep(ctx, layers_per_forward=0), ValueError,
         r"layers_per_forward must be an int >= 1 .*got 0"),
    Case("patching_sweep layers_per_forward=1.5", "analysis", lambda ctx: sweep(ctx, layers_per_forward=1.5), ValueError,
         r"layers_per_forward must be an int >= 1 .*got 1.5"),
    # positions
    Case("patching_sweep modality='sound'", "analysis", lambda ctx: sweep(ctx, modality="sound"), ValueError,
         r"modality='sound': unknown positions 'sound'; use one of"),
    Case("patching_sweep modality=3", "analysis", lambda ctx: sweep(ctx, modality=3), TypeError,
         r"modality=3: pass a position choice"),
    Case("patching image positions neither clip has", "analysis", lambda ctx: sweep(ctx, modality="image"), ValueError,
         r"modality='image' selects no position in the source or the target: nothing would be patched"),
    Case("patching a time window past the clip's end", "analysis", lambda ctx: sweep(ctx, time=(5.0, 6.0)), ValueError,
         r"modality='audio' with time=\(5.0, 6.0\) selects no position .*nothing would be patched"),
    Case("attribution over a time window past the clip's end", "analysis",
         lambda ctx: estimate(ctx, time=(5.0, 6.0)), ValueError,
         r"modality='audio' with time=\(5.0, 6.0\) selects no position"),
    Case("patching time=1.0, one number", "analysis", lambda ctx: sweep(ctx, time=1.0), TypeError,
         r"time=1.0: pass a window of the clip in seconds, \(start_s, end_s\)"),
    Case("patching a reversed time window (2.0, 1.0)", "analysis", lambda ctx: sweep(ctx, time=(2.0, 1.0)), ValueError,
         r"time=\(start_s, end_s\) needs finite seconds with end_s > start_s; got \(2.0, 1.0\)"),
    # metrics that measure nothing
    Case("patching a run into itself (every gap 0)", "analysis",
         lambda ctx: sweep(ctx, close_to(finals(ctx)[1]), source=ctx.tgt, target=ctx.tgt), MetricGapWarning,
         r"patching sweep: the clean-corrupt gap .* is tiny in pairs \[0\]: [-\d.e]+ \(floor 1e-06\).*answer_prefix="),
    Case("a metric constant in the logits (gap 0)", "analysis",
         lambda ctx: sweep(ctx, lambda logits, inputs: final_logits(logits, inputs)[:, 0] * 0 + 1.0), MetricGapWarning,
         r"tiny in pairs \[0\]"),
    Case("one pair's metric points the other way (wrong sign)", "analysis",
         lambda ctx: sweep(ctx, [close_to(finals(ctx)[0])] * 2 + [close_to(finals(ctx)[1])], source=[ctx.src] * 3,
                           target=[ctx.tgt] * 3), MetricGapWarning,
         r"of the wrong sign in pairs \[2\] \(-[\d.e-]+; most pairs' gaps are positive\)"),
    Case("attribution patching with every gap 0", "analysis",
         lambda ctx: estimate(ctx, close_to(finals(ctx)[1]), source=ctx.tgt, target=ctx.tgt), MetricGapWarning,
         r"attribution patching: the clean-corrupt gap .* is tiny in pairs \[0\]"),
    Case("reading restoration of a sweep with a weak pair", "analysis",
         lambda ctx: read_restoration(ctx), MetricGapWarning,
         r"restoration averages pairs \[0\] whose clean-corrupt gap is tiny or of the wrong sign"),
    # token shift between models that do not share one vocabulary
    Case("token_shift between tokenizers that disagree on most ids", "analysis",
         lambda ctx: token_shift(*ctx.shifted_vocab(), caption=torch.tensor([4, 5])), ValueError,
         r"the tokenizers of A \(.*\) and B \(.*\) disagree on \d+ of the \d+ ids both have \(id 0: 'w0' in A, 'w1' in B"),
    Case("token_shift against a base with a vocabulary 3x larger", "analysis",
         lambda ctx: token_shift(ctx.model, ctx.text_a, ctx.big_base, ctx.text_a, caption=torch.tensor([4, 5])),
         ValueError, r"share only \d+ ids, under half of B's vocabulary"),
    Case("token_shift without tokenizers, vocabularies of two sizes", "analysis",
         lambda ctx: token_shift(ctx.model, ctx.text_a, ctx.wider_base, ctx.text_a, caption=torch.tensor([4, 5])),
         VocabularyWarning, r"A \(.*\) has \d+ ids and B \(.*\) \d+; A and B have no tokenizer to check that the \d+ shared ids"),
    Case("token_shift caption holding an id the tokenizers read differently", "analysis",
         lambda ctx: token_shift(*ctx.agreeing_but(disagree=2), caption=torch.tensor([4, 1])), ValueError,
         r"caption token 1 is 'w1' in A \(.*\) but 'x1' in B \(.*\): the two models read it as different tokens"),
    Case("token_shift marginal_k=0", "analysis",
         lambda ctx: token_shift(ctx.model, ctx.text_a, ctx.model, ctx.text_a, caption=torch.tensor([4]), marginal_k=0),
         ValueError, r"marginal_k must be an int >= 1 .*got 0"),
    # handled
    Case("answer_prefix as token ids scores the forced position", "analysis", answer_prefix_is_a_teacher_forced_run, None),
    Case("the per-pair gap table against plain forwards", "analysis", pair_table_matches_plain_forwards, None),
    Case("patching_sweep layers=[-1] is the last layer", "analysis", negative_layer_is_the_last, None),
    Case("attribution patching reports the real sweep's gap, titled as an estimate", "analysis",
         attribution_reports_the_gap_too, None),
    Case("token_shift over the ids both tokenizers agree on", "analysis", token_shift_over_the_ids_both_tokenizers_agree_on,
         None),
    Case("token_shift plot and table show the same 0-based ranks", "analysis", token_shift_plot_ranks_are_the_tables, None),
]


def read_restoration(ctx):
    result, _ = recorded(lambda: sweep(ctx, close_to(finals(ctx)[1]), source=ctx.tgt, target=ctx.tgt))
    return result.restoration


# ------------------------------------------------------------------------------------- cases without a model

PLAIN_CASES = [
    Case("logit_diff('zebra'), a word the vocabulary lacks", "analysis",
         lambda ctx: logit_diff("zebra", "barking", TOY_TOKENIZER), ValueError,
         r"answer_a 'zebra' is not in the vocabulary: it tokenizes to \['\[UNK\]'\] \(the unknown token '\[UNK\]' = id 0\), "
         r"so the metric would score '\[UNK\]'; pass a word the tokenizer knows or a token id"),
    Case("answer_prob of a word of two tokens", "analysis", lambda ctx: answer_prob("barking dog", TOY_TOKENIZER),
         ValueError, r"answer 'barking dog' is 2 tokens \['barking', 'dog'\] = ids \[\d+, \d+\]; a metric compares single "
                     r"tokens: pass one token id"),
    Case("logit_diff of a word and itself", "analysis", lambda ctx: logit_diff("barking", " barking", TOY_TOKENIZER),
         ValueError, r"answer_a 'barking' and answer_b ' barking' are the same token \(id \d+\)"),
    Case("logit_diff(2.5, 5), a float id", "analysis", lambda ctx: logit_diff(2.5, 5), TypeError,
         r"answer_a must be a token id \(int\) or a single-token word \(str\); got 2.5"),
    Case("logit_diff with float tensor ids", "analysis", lambda ctx: logit_diff(torch.tensor([1.0]), 5), TypeError,
         r"answer_a as a tensor must hold integer token ids; got dtype torch.float32"),
    Case("logit_diff('') (an empty word)", "analysis", lambda ctx: logit_diff("", "barking", TOY_TOKENIZER), ValueError,
         r"answer_a '' tokenizes to nothing"),
    Case("restoration with source equal to target", "analysis",
         lambda ctx: restoration(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0])),
         MetricGapWarning, r"restoration: the gap source - target is tiny at \[1\] \(0"),
    Case("restoration of one pair with a gap of 0.01 on values near 2", "analysis",
         lambda ctx: restoration(2.005, 2.0, 2.01), MetricGapWarning, r"the gap source - target is tiny \(0.01"),
]

CASES = MODEL_CASES + PLAIN_CASES


# ------------------------------------------------------------------------------------- fixtures and runs


class WordVocabulary:
    """A tokenizer stand-in: id -> token string (what token shift compares), no unknown token."""

    def __init__(self, pieces: list[str], name: str):
        self.pieces, self.name_or_path = pieces, name

    def __len__(self) -> int:
        return len(self.pieces)

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]

    def decode(self, ids, **_):
        return "".join(self.pieces[i] for i in ids)



@pytest.fixture(scope="module")
def ctx(family, model):
    src = family.clip(model, video=False, seed=1, audio_seed=7)  # the sound alone ...
    tgt = family.clip(model, video=True, seed=2, audio_seed=7)   # ... and with a picture (same audio)
    vocab = model.cfg.d_vocab
    text_ids = torch.tensor([[5, 6, 7, 8, 9]])
    shift_models: dict = {}

    def with_vocabulary(seed: int, pieces: list[str], name: str):
        key = (seed, name, tuple(pieces[:4]))
        if key not in shift_models:
            other = family.model(seed=seed)
            other.tokenizer = WordVocabulary(pieces, name)
            shift_models[key] = other
        return shift_models[key]

    words = [f"w{i}" for i in range(vocab)]

    def shift_pair(disagree: int):
        b_words = [f"x{i}" if i < disagree else w for i, w in enumerate(words)]
        return with_vocabulary(11, words, "A"), with_vocabulary(12, b_words, "B")

    def shifted_vocab():
        a, b = with_vocabulary(11, words, "A"), with_vocabulary(13, words[1:] + words[:1], "B")
        return a, family.text(a, text_ids), b, family.text(b, text_ids)

    def agreeing_but(disagree: int):
        a, b = shift_pair(disagree)
        return a, family.text(a, text_ids), b, family.text(b, text_ids)

    return SimpleNamespace(
        model=model, family=family, src=src, tgt=tgt,
        right_src=family.batch(model, [src, family.clip(model, video=False, seed=3, audio_seed=7, prefix=7)], padding_side="right"),
        right_tgt=family.batch(model, [tgt, family.clip(model, video=True, seed=4, audio_seed=7, prefix=7)], padding_side="right"),
        text_a=family.text(model, text_ids), big_base=family.model(seed=5, audio=False, vocab_size=3 * vocab),
        wider_base=family.model(seed=6, audio=False, vocab_size=vocab + 44), shift_pair=shift_pair,
        shifted_vocab=shifted_vocab, agreeing_but=agreeing_but,
        text_b=family.text(model, text_ids),
    )


@pytest.mark.parametrize("case, family", family_cases(MODEL_CASES), indirect=["family"])
def test_bad_science_input(case, family, model, ctx):
    snapshot = ModelSnapshot(model)
    check(case, ctx)
    snapshot.assert_unchanged()


@pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
def test_bad_science_input_without_a_model(case):
    check(case, None)


def test_the_toy_gap_at_the_answer_token_is_several_logits():
    """The issue's finding on the shipped toy (the demo's first pairs): at the last prompt position
    the audio-only vs conflict gap is below the logit noise floor in every pair and the sweep warns;
    with "I hear" teacher-forced every gap is several logits, above the floor, and it does not."""
    from hooked_avllm.toy import ToyScenes
    from hooked_avllm.toy.data import Clip
    from hooked_avllm.toy.evaluate import prepare_clips

    toy = load_toy("omni")
    clips = [ToyScenes(seed=1000).clip("counterfactual", i) for i in range(3)]
    sources = [prepare_clips(toy, [Clip("audio_only", None, c.audio, None, c.sound)], "hear") for c in clips]
    targets = [prepare_clips(toy, [c], "hear") for c in clips]
    metrics = [logit_diff(c.sound_word, c.implied_sound_word, toy) for c in clips]
    kwargs = dict(layers=[0], components=("resid_pre",), modality="last", progress=False)
    at_prompt, caught = recorded(lambda: patching_sweep(toy, sources, targets, metrics, **kwargs))
    assert caught and "tiny in pairs [0, 1, 2]" in str(caught[0].message) and "predicts 'I'" in str(caught[0].message)
    assert (at_prompt.gap.abs() < 1.0).all()
    at_answer, caught = recorded(lambda: patching_sweep(toy, sources, targets, metrics, answer_prefix="I hear", **kwargs))
    assert not caught, [str(w.message) for w in caught]
    assert (at_answer.gap > 4.0).all() and (at_answer.gaps.gap > 2 * at_answer.gaps.floor).all()
    assert at_answer.weak_pairs == [] and set(at_answer.pair_table()["check"]) == {"ok"}
    # the forced position really predicts the answer word: the source run's top token is the true sound
    forced = teacher_forced_inputs(sources[0], torch.tensor(toy.tokenizer.encode("I hear", add_special_tokens=False)))
    with torch.no_grad():
        top = int(toy(forced)[0, -1].argmax())
    assert toy.tokenizer.decode([top]).strip() == clips[0].sound_word
