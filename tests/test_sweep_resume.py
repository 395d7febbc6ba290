"""Resumable sweeps (hooked_avllm/analysis/sweep_store.py): every sweep tool, stopped by a crash
part-way and started again with the same results folder, returns exactly what an uninterrupted
run returns, without recomputing the units already written; its Parquet rows are the tool's
table; another sweep's folder is refused. (Two ranks writing one folder: tests/test_parallel.py.)"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hooked_avllm.analysis import (
    KnockoutRule, attention_share, attribution_patching, knockout_sweep, logit_diff, patching_sweep, token_shift,
)
from hooked_avllm.analysis.attention_share import AttentionShare
from hooked_avllm.analysis.result_codec import decode, encode
from hooked_avllm.analysis.sweep_store import SweepStore, read_table
from kits import kit_named

N = 4
# the modules (the package exports functions of the same names)
share_module, attribution_module, knockout_module, patching_module, shift_module = (
    importlib.import_module(f"hooked_avllm.analysis.{name}")
    for name in ("attention_share", "attribution_patching", "knockout", "patching", "token_shift"))


@pytest.fixture(scope="module")
def family():
    return kit_named("qwen2_5_omni")


@pytest.fixture(scope="module")
def model(family):
    return family.model(seed=3)


@pytest.fixture(scope="module")
def clips(family, model):
    return [family.clip(model, seconds=2 + i % 2, seed=i) for i in range(N)]


@pytest.fixture(scope="module")
def pairs(family, model):
    sources = [family.clip(model, video=False, seed=10 + i, audio_seed=20 + i) for i in range(3)]
    targets = [family.clip(model, video=True, seed=30 + i, audio_seed=20 + i) for i in range(3)]
    return sources, targets, [logit_diff(3, 7), logit_diff(11, 12), logit_diff(5, 9)]


class Crash(Exception):
    pass


def crashing(monkeypatch, module, name: str, at: int) -> list[int]:
    """Wrap ``module.name``: count its calls, raise :class:`Crash` on call number ``at`` (None: never)."""
    inner = getattr(module, name)
    calls: list[int] = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if at is not None and len(calls) == at:
            raise Crash(f"stopped at call {at}")
        return inner(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def resumed(monkeypatch, module, name: str, run, folder, crash_at: int):
    """(uninterrupted result, resumed result, calls of the resumed run): a run that crashes on
    call ``crash_at`` of ``module.name``, then the same run again with the same folder."""
    with monkeypatch.context() as patch:
        crashing(patch, module, name, None)
        whole = run(None)
    with monkeypatch.context() as patch:
        crashing(patch, module, name, crash_at)
        with pytest.raises(Crash):
            run(folder)
    with monkeypatch.context() as patch:
        calls = crashing(patch, module, name, None)
        again = run(folder)
    return whole, again, len(calls)


def exactly(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=0, equal_nan=True)


def same_rows(folder, table) -> None:
    """The folder's Parquet rows are the tool's table (in unit order; compared sorted)."""
    rows = read_table(folder)
    assert sorted(rows.columns) == sorted(table.columns)
    keys = list(table.columns)
    left = rows[keys].sort_values(keys).reset_index(drop=True)
    right = table[keys].sort_values(keys).reset_index(drop=True)
    assert left.equals(right.astype(left.dtypes.to_dict()))


def test_a_crashed_knockout_sweep_resumes_to_the_same_result(monkeypatch, model, clips, tmp_path):
    rules = {"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}
    score = lambda new, clip: float(new[-1]) + 1000 * clip  # noqa: E731  (the clip index counts)

    def run(folder):
        return knockout_sweep(model, clips, rules, [(0, 1), (1, 2)], score, max_new_tokens=3, eos_token_id=[],
                              progress=False, resume=folder)

    whole, again, calls = resumed(monkeypatch, knockout_module, "_generate_conditions", run, tmp_path, crash_at=3)
    exactly(again.scores, whole.scores), exactly(again.baseline, whole.baseline)
    assert again.shared_prefill == whole.shared_prefill == N  # counted for the units read back too
    assert calls == N - 2  # clips 0 and 1 were read, not generated again
    assert again.table().equals(whole.table())
    same_rows(tmp_path, whole.table())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"] + sorted(
        f"unit-{i:06d}.{ext}" for i in range(N) for ext in ("parquet", "safetensors"))


def test_a_crashed_attention_share_resumes_to_the_same_result(monkeypatch, model, clips, tmp_path):
    def run(folder):
        return attention_share(model, clips, max_new_tokens=3, eos_token_id=[], progress=False, resume=folder)

    whole, again, calls = resumed(monkeypatch, share_module, "_attention_share", run, tmp_path, crash_at=4)
    for field in ("values", "batch", "position", "step"):
        exactly(getattr(again, field), getattr(whole, field))
    assert again.layers == whole.layers and again.kinds == whole.kinds and calls == 1
    same_rows(tmp_path, whole.table())


def test_a_crashed_token_shift_resumes_to_the_same_result(monkeypatch, model, clips, tmp_path):
    def run(folder):
        return token_shift(model, clips[:3], model, clips[:3], max_new_tokens=4, eos_token_id=[], progress=False,
                           resume=folder)

    whole, again, calls = resumed(monkeypatch, shift_module, "_shift_one", run, tmp_path, crash_at=2)
    assert calls == 2 and again.table().equals(whole.table())
    same_rows(tmp_path, whole.table())


def test_a_crashed_logit_lens_sweep_resumes_to_the_same_result(monkeypatch, model, clips, tmp_path):
    from hooked_avllm.analysis import logit_lens_sweep

    lens_module = importlib.import_module("hooked_avllm.analysis.logit_lens_sweep")

    def run(folder):
        return logit_lens_sweep(model, clips, positions="audio", apply_final_norm=False, k=3, progress=False, resume=folder)

    whole, again, calls = resumed(monkeypatch, lens_module, "logit_lens", run, tmp_path, crash_at=3)
    assert calls == 2 and len(again) == N
    for got, want in zip(again, whole):
        exactly(got.top_ids, want.top_ids), exactly(got.top_probs, want.top_probs)
        assert got.top_tokens == want.top_tokens and got.kinds == want.kinds
    rows = read_table(tmp_path)
    assert sorted(set(rows["clip"])) == list(range(N)) and len(rows) == sum(len(w.table()) for w in whole)


@pytest.mark.filterwarnings("ignore::hooked_avllm.analysis.metrics.MetricGapWarning")  # these random pairs' gaps are tiny
def test_a_crashed_patching_sweep_resumes_to_the_same_result(monkeypatch, model, pairs, tmp_path):
    sources, targets, metrics = pairs

    def run(folder):
        return patching_sweep(model, sources, targets, metrics, components=("resid_pre", "attn_out"), progress=False,
                              resume=folder)

    whole, again, calls = resumed(monkeypatch, patching_module, "_sweep_pair", run, tmp_path, crash_at=3)
    exactly(again.per_pair, whole.per_pair), exactly(again.source_value, whole.source_value)
    exactly(again.target_value, whole.target_value)
    assert (again.row_labels, again.col_labels, again.n_forwards) == (whole.row_labels, whole.col_labels, whole.n_forwards)
    assert calls == 1
    same_rows(tmp_path, whole.table(per_pair=True))


@pytest.mark.filterwarnings("ignore::hooked_avllm.analysis.metrics.MetricGapWarning")
def test_a_crashed_attribution_patching_resumes_to_the_same_result(monkeypatch, model, pairs, tmp_path):
    sources, targets, metrics = pairs

    def run(folder):
        return attribution_patching(model, sources, targets, metrics, components=("resid_pre", "mlp_out"),
                                    progress=False, resume=folder)

    whole, again, calls = resumed(monkeypatch, attribution_module, "_target_gradients", run, tmp_path, crash_at=2)
    assert calls == 2
    for part in ("components", "heads"):
        got, want = getattr(again, part), getattr(whole, part)
        exactly(got.per_pair, want.per_pair), exactly(got.source_value, want.source_value)
        for p in range(len(want.per_position)):
            exactly(got.per_position[p], want.per_position[p]), exactly(got.positions[p], want.positions[p])
    rows = read_table(tmp_path)
    assert set(rows["grid"]) == {"components", "heads"} and sorted(set(rows["pair"])) == [0, 1, 2]


def test_another_sweeps_folder_or_other_clips_are_refused(model, clips, tmp_path):
    rules = {"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}
    kwargs = dict(max_new_tokens=2, eos_token_id=[], progress=False, resume=tmp_path)
    knockout_sweep(model, clips[:2], rules, [(0, 1)], lambda new, clip: 0.0, **kwargs)
    with pytest.raises(ValueError, match=r"another sweep \(signature.windows: folder \[\[0, 1\]\], now \[\[0, 2\]\]"):
        knockout_sweep(model, clips[:2], rules, [(0, 2)], lambda new, clip: 0.0, **kwargs)
    with pytest.raises(ValueError, match="unit 0 was computed from other clips"):
        knockout_sweep(model, clips[2:], rules, [(0, 1)], lambda new, clip: 0.0, **kwargs)
    with pytest.raises(ValueError, match="tool: folder 'knockout sweep', now 'attention share'"):
        attention_share(model, clips[:2], max_new_tokens=2, eos_token_id=[], progress=False, resume=tmp_path)
    with pytest.raises(ValueError, match="resume=.* keeps the results of a list"):
        attention_share(model, clips[0], max_new_tokens=2, progress=False, resume=tmp_path / "one")


# ------------------------------------------------------------------------------ the codec


@dataclass
class NotOurs:
    x: int


def test_the_codec_round_trips_exactly_without_pickle(tmp_path):
    share = AttentionShare(torch.rand(3, 2, 4, 5), torch.tensor([0, 0, 1]), torch.tensor([5, 6, 7]), torch.tensor([0, 1, 0]),
                           [0, 2], ["text", "audio", "video", "image", "generated"])
    value = {"share": share, 3: (np.arange(4, dtype=np.int16), [float("nan"), float("-inf"), 1.5]),
             "bf16": torch.randn(3).bfloat16(), "empty": torch.zeros(0, 2), "mask": torch.tensor([True, False]),
             "scalar": np.float32(2.5), "none": None}
    tensors, skeleton = encode(value)
    json.dumps(skeleton)  # the structure is plain JSON
    back = decode(tensors, skeleton)
    assert isinstance(back["share"], AttentionShare) and back["share"].kinds == share.kinds
    exactly(back["share"].values, share.values)
    assert back[3][0].dtype == np.int16 and back[3][0].tolist() == [0, 1, 2, 3]
    assert np.isnan(back[3][1][0]) and back[3][1][1] == float("-inf") and isinstance(back[3], tuple)
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["bf16"], value["bf16"])
    assert back["empty"].shape == (0, 2) and back["mask"].tolist() == [True, False]
    assert back["scalar"] == np.float32(2.5) and back["scalar"].dtype == np.float32 and back["none"] is None
    with pytest.raises(TypeError, match=r"result\['f'\] is a builtins.builtin_function"):
        encode({"f": len})
    with pytest.raises(TypeError, match="NotOurs"):
        encode([NotOurs(1)])
    forged = {"dataclass": "os:system", "fields": {}}
    with pytest.raises(ValueError, match="not one of hooked_avllm's; it is not loaded"):
        decode({}, forged)


def test_a_store_refuses_a_file_and_reports_an_empty_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        SweepStore(tmp_path / "file", "t", 1, {})
    SweepStore(tmp_path / "run", "t", 1, {})
    with pytest.raises(ValueError, match="no finished unit"):
        read_table(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not a sweep's results folder"):
        read_table(tmp_path)
