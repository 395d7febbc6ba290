"""The one sweep driver (``hooked_avllm.analysis.runner.run_sweep``): alone (order under regrouping,
the progress bar's counts, the split over ranks with a fake world, its errors), then each of the
five tools that take a list going through it (seen in the bar it draws: the tool's name and
clips x conditions / pairs x cells), and ``token_shift`` over a list equal to the per-clip calls.
Tiny Qwen2.5-Omni thinkers (float32, CPU)."""

from __future__ import annotations

import pytest
import torch
from analysis_support import Family

from hooked_avllm import parallel
from hooked_avllm.analysis import (
    KnockoutRule,
    attention_share,
    attribution_patching,
    knockout_sweep,
    logit_diff,
    patching_sweep,
    shift_summary,
    token_shift,
)
from hooked_avllm.analysis.runner import SweepUnit, batch_rows, check_batch_size, run_sweep


class Bar:
    """A stand-in for the tqdm bar: records its total, description and updates."""

    def __init__(self, total: int, desc: str, enable: bool = True):
        self.total, self.desc, self.enable, self.n, self.closed = total, desc, enable, 0, False

    def update(self, n: int) -> None:
        assert n > 0 and self.n + n <= self.total, (self.n, n, self.total)
        self.n += n

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars(monkeypatch) -> list[Bar]:
    """Every bar the driver draws in the test, in order."""
    made: list[Bar] = []

    def progress_bar(total: int, desc: str, enable: bool = True) -> Bar:
        made.append(Bar(total, desc, enable))
        return made[-1]

    monkeypatch.setattr(parallel, "progress_bar", progress_bar)
    return made


def describe(unit: SweepUnit) -> tuple:
    return unit.index, unit.members, unit.first, unit.rows, unit.item


# ----------------------------------------------------------------------------- the driver alone


@pytest.mark.parametrize("batch_size", [None, 1, 2, 3, 7, 10])
def test_regrouping_keeps_the_order_of_the_items(batch_size):
    items = list("abcdefg")
    units = run_sweep(describe, items, tool="demo", batch_size=batch_size, batch="".join, progress=False)
    step = batch_size or 1
    assert [u[0] for u in units] == list(range(len(units))) and len(units) == -(-len(items) // step)
    assert [m for u in units for m in u[1]] == list(range(7))  # every item once, in order
    assert "".join(u[4] for u in units) == "abcdefg"  # the batch maker got the members in order
    assert [u[2] for u in units] == [u[1][0] for u in units]  # one row each: first = first member
    assert all(u[3] == len(u[1]) for u in units)


def test_first_counts_the_rows_of_the_items_before():
    units = run_sweep(describe, [[1, 2], [3], [4, 5, 6]], tool="demo", rows=len, progress=False)
    assert [(u[2], u[3]) for u in units] == [(0, 2), (2, 1), (3, 3)]


def test_the_bar_counts_rows_times_steps_and_every_unit_completes_its_share(bars):
    def partly(unit: SweepUnit) -> int:
        if unit.index == 0:
            unit.advance(unit.rows)  # one of its 3 conditions; the driver adds the rest
        if unit.index == 1:
            unit.advance(100)  # never past the unit's own share
        return unit.index

    assert run_sweep(partly, [[1, 2], [3], [4, 5, 6]], tool="demo", rows=len, steps=3, step_name="conditions") == [0, 1, 2]
    (bar,) = bars
    assert bar.desc == "demo: 6 clips x 3 conditions" and bar.enable
    assert bar.total == 6 * 3 and bar.n == bar.total and bar.closed


def test_the_description_counts_one_in_the_singular_and_progress_false_hides_the_bar(bars):
    run_sweep(describe, [0], tool="demo", unit="pairs", steps=1, step_name="cells", progress=False)
    assert bars[0].desc == "demo: 1 pair x 1 cell" and not bars[0].enable


def test_a_failing_unit_raises_and_closes_the_bar(bars):
    def fail(unit: SweepUnit) -> int:
        if unit.index == 1:
            raise ZeroDivisionError("unit 1")
        return unit.index

    with pytest.raises(ZeroDivisionError, match="unit 1"):
        run_sweep(fail, [0, 1, 2], tool="demo")
    assert bars[0].closed


@pytest.mark.parametrize("value, error, shown", [(0, ValueError, "got 0"), (-3, ValueError, "got -3"),
                                                 (2.5, TypeError, "got 2.5"), (True, TypeError, "got True"),
                                                 ("2", TypeError, "got '2'")])
def test_batch_size_errors_name_the_argument_and_the_value(value, error, shown):
    with pytest.raises(error, match=rf"batch_size must be an int >= 1 .*{shown}"):
        check_batch_size(value)
    with pytest.raises(error, match=rf"batch_size must be an int >= 1 .*{shown}"):
        run_sweep(describe, [1, 2], tool="demo", batch_size=value, batch=list)


def test_batch_size_regroups_single_clips_only():
    with pytest.raises(ValueError, match=r"batch_size=2 regroups single clips, but item 1 holds 2 rows"):
        run_sweep(describe, [[1], [2, 3]], tool="demo", rows=len, batch_size=2, batch=list)
    with pytest.raises(TypeError, match="batch_size=2 needs a batch maker"):
        run_sweep(describe, [1, 2], tool="demo", batch_size=2)


def test_empty_lists_and_non_lists_are_refused():
    with pytest.raises(ValueError, match="demo got an empty list of clips: pass at least one"):
        run_sweep(describe, [], tool="demo")
    with pytest.raises(TypeError, match="demo takes a list of pairs, got str"):
        run_sweep(describe, "ab", tool="demo", unit="pairs")


def test_batch_rows_reads_inputs_and_ids_and_refuses_the_rest():
    assert batch_rows(torch.zeros(3, 5)) == 3
    with pytest.raises(TypeError, match="prepared inputs"):
        batch_rows(7)


def test_each_rank_runs_its_block_of_units_and_every_rank_gets_all_in_order(monkeypatch, bars):
    """Rank 1 of 2, 5 clips in batches of 2: units (0, 1), (2, 3), (4,); rank 0 runs the first two."""
    ran = []
    rank0 = ([0, 1], [(0, 1), (2, 3)], None)  # what rank 0 sends to the gather
    monkeypatch.setattr(parallel, "world", lambda: (1, 2))
    monkeypatch.setattr(parallel, "_all_gather_object", lambda obj: [obj, obj] if isinstance(obj, int) else [rank0, obj])

    def members(unit: SweepUnit) -> tuple:
        ran.append(unit.index)
        return unit.members

    out = run_sweep(members, list(range(5)), tool="demo", steps=2, step_name="conditions", batch_size=2, batch=list)
    assert out == [(0, 1), (2, 3), (4,)] and ran == [2]
    assert bars[0].desc == "demo (rank 1 of 2): 1 of 5 clips x 2 conditions" and bars[0].total == 2
    assert run_sweep(members, list(range(5)), tool="demo", distributed=False, progress=False) == [(i,) for i in range(5)]


# ----------------------------------------------------------------------------- every tool goes through it


@pytest.fixture(scope="module")
def family():
    return Family("qwen2_5_omni")


@pytest.fixture(scope="module")
def model(family):
    return family.model(seed=3)


@pytest.fixture(scope="module")
def clips(family, model):
    return [family.clip(model, seconds=2, seed=1), family.clip(model, seconds=3, seed=2)]


@pytest.fixture(scope="module")
def pairs(family, model):
    sources = [family.clip(model, video=False, seconds=2, seed=10 + i, audio_seed=20 + i) for i in range(2)]
    targets = [family.clip(model, video=True, seconds=2, seed=30 + i, audio_seed=20 + i) for i in range(2)]
    return sources, targets, [logit_diff(3, 7), logit_diff(11, 12)]


KNOCK = dict(rules={"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}, windows=[(0, 2)],
             score=lambda new, clip: float(new[-1]) + 1000 * clip, max_new_tokens=2, eos_token_id=[])


def test_knockout_sweep_goes_through_the_driver(model, clips, bars):
    by_clip = knockout_sweep(model, clips, **KNOCK)
    batched = knockout_sweep(model, clips, batch_size=2, **KNOCK)
    for bar in bars:  # the baseline and 1 rule x 1 window, for each clip
        assert bar.desc == "knockout sweep: 2 clips x 2 conditions (batched over one prefill per clip)"
        assert bar.total == bar.n == 4 and bar.closed
    assert by_clip.shared_prefill == 2 and batched.shared_prefill == 1  # the clips, the one batch of both
    assert (by_clip.baseline >= 1000).tolist() == [False, True]  # the score saw each clip's index
    assert (by_clip.scores == batched.scores).all() and (by_clip.baseline == batched.baseline).all()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1 .* got 0"):
        knockout_sweep(model, clips, batch_size=0, **KNOCK)


def test_knockout_sweep_over_one_prefill_equals_one_generation_per_condition(model, clips, monkeypatch):
    import importlib

    knockout_module = importlib.import_module("hooked_avllm.analysis.knockout")  # the package exports a function of that name

    rules = {"gen->video": lambda layers: KnockoutRule("generated", "video", layers),
             "gen->text": lambda layers: KnockoutRule("generated", "text", layers)}
    options = dict(rules=rules, windows=[(0, 1), (1, 2), (0, 2)], score=lambda new, clip: float(new.sum()),
                   max_new_tokens=4, eos_token_id=[], last_prompt_as_generated=True, progress=False)
    shared = knockout_sweep(model, clips, batch_size=2, **options)
    monkeypatch.setattr(knockout_module, "decode_conditions", lambda *args: None)
    alone = knockout_sweep(model, clips, batch_size=2, **options)
    assert shared.shared_prefill == 1 and alone.shared_prefill == 0
    assert (shared.scores == alone.scores).all() and (shared.baseline == alone.baseline).all()
    with pytest.raises(ValueError, match="knockout sweep got an empty list of clips"):
        knockout_sweep(model, [], **KNOCK)


def test_patching_sweep_goes_through_the_driver(model, pairs, bars):
    sources, targets, metrics = pairs
    sweep = patching_sweep(model, sources, targets, metrics, components=("resid_pre", "attn_out"))
    (bar,) = bars  # 2 components x 2 layers per pair
    assert bar.desc == "patching sweep: 2 pairs x 4 cells" and bar.total == bar.n == 8
    alone = patching_sweep(model, sources[1], targets[1], metrics[1], components=("resid_pre", "attn_out"), progress=False)
    assert torch.equal(sweep.per_pair[1], alone.per_pair[0]) and sweep.n_forwards == 2 * alone.n_forwards
    with pytest.raises(ValueError, match="patching sweep got an empty list of pairs"):
        patching_sweep(model, [], [], metrics[0])


def test_attribution_patching_goes_through_the_driver(model, pairs, bars):
    sources, targets, metrics = pairs
    ap = attribution_patching(model, sources, targets, metrics, components=("resid_pre",))
    (bar,) = bars  # 1 component x 2 layers, and 2 layers x 4 heads, per pair
    assert bar.desc == "attribution patching: 2 pairs x 10 cells" and bar.total == bar.n == 20
    assert ap.components.n_backwards == 2
    with pytest.raises(ValueError, match="attribution patching got an empty list of pairs"):
        attribution_patching(model, [], [], metrics[0])


def test_attention_share_of_a_list_goes_through_the_driver(family, model, clips, bars):
    shares = attention_share(model, [clips[0], family.batch(model, clips)], max_new_tokens=2, eos_token_id=[])
    (bar,) = bars  # a clip, then a batch of two: 3 clips
    assert bar.desc == "attention share: 3 clips" and bar.total == bar.n == 3
    assert sorted(set(shares.batch.tolist())) == [0, 1, 2]
    with pytest.raises(ValueError, match="attention share got an empty list of clips"):
        attention_share(model, [], max_new_tokens=2)


def test_attention_share_batch_size_equals_one_clip_at_a_time(family, model, clips, bars):
    """batch_size runs the clips (different lengths: left padding) as one batch: one prefill, one
    decoding; the result is the clip-by-clip one, with each clip's own positions and query order."""
    three = [*clips, family.clip(model, seconds=2, seed=5)]
    for queries, new in ((None, 3), ("last", None), ("audio", 2)):
        alone = attention_share(model, three, queries=queries, max_new_tokens=new, eos_token_id=[], progress=False)
        together = attention_share(model, three, queries=queries, max_new_tokens=new, eos_token_id=[], batch_size=2)
        for name in ("batch", "position", "step"):
            assert torch.equal(getattr(alone, name), getattr(together, name)), (queries, name)
        assert (alone.values - together.values).abs().max() < 1e-5, queries
    assert bars[-1].desc == "attention share: 3 clips" and bars[-1].total == bars[-1].n == 3
    with pytest.raises(ValueError, match="batch_size=2 regroups a list of clips"):
        attention_share(model, clips[0], max_new_tokens=2, batch_size=2)
    with pytest.raises(ValueError, match="a query mask is .* cannot follow clips regrouped by batch_size"):
        attention_share(model, clips, queries=torch.ones(1, 5, dtype=torch.bool), batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1 .* got 0"):
        attention_share(model, clips, max_new_tokens=2, batch_size=0)


# ----------------------------------------------------------------------------- token shift over a list


def same_shift(got, want) -> None:
    for name in ("caption_ids", "kl", "rank_b", "rank_a", "prob_a", "prob_b", "top1_b", "position_a", "position_b"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert (got.decoded, got.top1_b_decoded, got.labels, got.shared_vocab, got.marginal_k) == (
        want.decoded, want.top1_b_decoded, want.labels, want.shared_vocab, want.marginal_k)


def test_token_shift_over_a_list_equals_the_calls_clip_by_clip(family, model, clips, bars):
    base = family.model(seed=4)
    shifts = token_shift(model, clips, base, clips, max_new_tokens=3, eos_token_id=[])
    assert bars[0].desc == "token shift: 2 clips" and bars[0].total == bars[0].n == 2
    alone = [token_shift(model, a, base, b, max_new_tokens=3, eos_token_id=[]) for a, b in zip(clips, clips)]
    assert len(shifts) == 2
    for got, want in zip(shifts, alone):
        same_shift(got, want)
    table = shifts.table()
    assert table["clip"].tolist() == [0, 0, 0, 1, 1, 1] and shifts.summary() == shift_summary(alone)
    captions = [torch.tensor([5, 6]), [7, 8, 9]]  # one per clip
    given = token_shift(model, clips, base, clips, captions, progress=False)
    for got, clip, caption in zip(given, clips, captions):
        same_shift(got, token_shift(model, clip, base, clip, caption))


def test_a_generated_caption_reuses_the_generation_logits(model, clips, monkeypatch):
    """caption=None takes A's logits from its own generation (no second forward of A); they equal
    teacher-forcing that caption."""
    import importlib

    shift_module = importlib.import_module("hooked_avllm.analysis.token_shift")
    base = model  # B = A: the comparison is the point here, not the models
    forced = []
    real = shift_module.caption_logits
    monkeypatch.setattr(shift_module, "caption_logits", lambda m, *a: forced.append(m) or real(m, *a))
    generated = token_shift(model, clips[1], base, clips[1], max_new_tokens=4, eos_token_id=[])
    assert len(forced) == 1  # only B's teacher-forced forward
    given = token_shift(model, clips[1], base, clips[1], generated.caption_ids)
    assert len(forced) == 3
    for name in ("caption_ids", "rank_a", "rank_b", "top1_b"):
        assert torch.equal(getattr(generated, name), getattr(given, name)), name
    for name in ("kl", "prob_a", "prob_b"):
        assert float((getattr(generated, name) - getattr(given, name)).abs().max()) < 1e-5, name


def test_token_shift_lists_must_pair_up(model, clips):
    with pytest.raises(ValueError, match="inputs_a has 2 clips but inputs_b 1"):
        token_shift(model, clips, model, clips[:1])
    with pytest.raises(TypeError, match="inputs_b is one input but the other side is a list"):
        token_shift(model, clips, model, clips[0])
    with pytest.raises(ValueError, match=r"caption= takes one caption per clip .* got a list of 3 int"):
        token_shift(model, clips, model, clips, [5, 6, 7])
    with pytest.raises(ValueError, match="token shift got an empty list of clips"):
        token_shift(model, [], model, [])
