"""Data-parallel sweeps (``hooked_avllm.parallel``): the split and the gather with a fake rank and
world, and a real two-process gloo run (``python -m torch.distributed.run``) whose gathered sweeps
equal the single-process ones exactly (values, labels, clip order).

Run as a script, this module is the worker of that run: ``python -m torch.distributed.run
--nproc_per_node=2 tests/test_parallel.py OUT`` writes each rank's results to ``OUT/rank{r}.pt``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from hooked_avllm import parallel
from torch_threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]
N_CLIPS = 5


# ----------------------------------------------------------------------- fake ranks and worlds


def fake_world(monkeypatch, rank: int, size: int, gathered=None) -> None:
    """Pretend to be ``rank`` of ``size``; collectives answer ``gathered(obj)`` (default: every rank sent ``obj``)."""
    monkeypatch.setattr(parallel, "world", lambda: (rank, size))
    monkeypatch.setattr(parallel, "_all_gather_object", gathered or (lambda obj: [obj] * size))


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 4, 8])
def test_shards_are_contiguous_blocks_and_gather_restores_the_order(monkeypatch, n, size):
    items = [f"clip{i}" for i in range(n)]
    shards = []
    for rank in range(size):
        fake_world(monkeypatch, rank, size)
        shards.append(parallel.shard(items))
    assert [i for indices, _ in shards for i in indices] == list(range(n))  # the blocks in rank order are the list
    assert all(mine == [items[i] for i in indices] for indices, mine in shards)
    sizes = [len(indices) for indices, _ in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    payloads = [(indices, [(i, torch.full((2,), float(i))) for i in indices]) for indices, _ in shards]
    for rank in range(size):  # every rank gets everything, in the original order
        fake_world(monkeypatch, rank, size, gathered=lambda obj: payloads)
        out = parallel.gather(payloads[rank][1], payloads[rank][0])
        assert [i for i, _ in out] == list(range(n))
        assert all(torch.equal(t, torch.full((2,), float(i))) for i, t in out)


def test_more_ranks_than_clips_leaves_empty_shards(monkeypatch):
    items = ["a", "b"]
    shards = []
    for rank in range(4):
        fake_world(monkeypatch, rank, 4)
        shards.append(parallel.shard(items))
    assert shards == [([0], ["a"]), ([1], ["b"]), ([], []), ([], [])]
    payloads = [(indices, [x.upper() for x in mine]) for indices, mine in shards]
    fake_world(monkeypatch, 3, 4, gathered=lambda obj: payloads)
    assert parallel.gather([], []) == ["A", "B"]


def test_a_single_process_is_the_identity(monkeypatch):
    def no_collectives(obj):
        raise AssertionError("a single process must not call a collective")

    monkeypatch.setattr(parallel, "_all_gather_object", no_collectives)
    assert parallel.world() == (0, 1) and parallel.is_main()
    assert parallel.shard("abc") == ([0, 1, 2], ["a", "b", "c"])
    assert parallel.gather(["x", "y"], [0, 1]) == ["x", "y"]
    assert parallel.map_sharded(lambda i, x: (i, x), "ab") == [(0, "a"), (1, "b")]
    assert not parallel.active(None) and not parallel.active(True) and not parallel.active(False)
    assert parallel.local_indices(3) == range(3) and parallel.device_for_rank().type in ("cpu", "cuda")
    assert parallel.init_from_env() == (0, 1)


def test_ranks_with_different_numbers_of_clips_raise_naming_the_counts(monkeypatch):
    fake_world(monkeypatch, 0, 2, gathered=lambda obj: [8, 7])
    with pytest.raises(ValueError, match=r"different numbers of clips \(rank 0: 8, rank 1: 7\)"):
        parallel.shard(list(range(8)), what="clips")


def test_gather_rejects_indices_that_do_not_split_the_list(monkeypatch):
    fake_world(monkeypatch, 0, 2, gathered=lambda obj: [([0, 1], ["a", "b"]), ([1], ["c"])])
    with pytest.raises(ValueError, match="rank 1 sent index 1, twice"):
        parallel.gather(["a", "b"], [0, 1])
    fake_world(monkeypatch, 0, 2, gathered=lambda obj: [obj, ([1], ["c"])])
    with pytest.raises(ValueError, match="rank 0 gathered 2 results for 1 indices"):
        parallel.gather(["a", "b"], [0])


def test_a_failing_rank_stops_every_rank(monkeypatch):
    payloads = [([0], ["a"], None), ([], [], "ZeroDivisionError on item 1: division by zero")]
    fake_world(monkeypatch, 0, 2, gathered=lambda obj: [len("ab")] * 2 if isinstance(obj, int) else payloads)
    with pytest.raises(RuntimeError, match=r"rank 1 failed \(ZeroDivisionError on item 1"):
        parallel.map_sharded(lambda i, x: x, "ab")


def test_an_announced_world_without_a_group_warns_or_raises(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.warns(UserWarning, match="no torch.distributed process group is initialised"):
        assert not parallel.active(None)
    with pytest.raises(RuntimeError, match="init_from_env"):
        parallel.active(True)
    assert not parallel.active(False)
    with pytest.raises(TypeError, match="distributed must be True, False or None, got 'yes'"):
        parallel.active("yes")


def test_to_cpu_goes_through_containers_and_dataclasses():
    from hooked_avllm.analysis.attention_share import AttentionShare

    share = AttentionShare(torch.zeros(1, 1, 1, 5), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                           torch.zeros(1, dtype=torch.long), [0])
    moved = parallel.to_cpu({"share": share, "pair": (torch.ones(1), [torch.ones(1)])})
    assert isinstance(moved["share"], AttentionShare) and moved["share"].layers == [0]
    assert moved["pair"][1][0].device.type == "cpu"


# ----------------------------------------------------------------------- the sweeps, two processes


def run_sweeps(distributed: bool | None = None, resume: Path | None = None) -> dict:
    """The sweeps both processes and the single-process reference run: one tiny model (seed 3),
    clips of two lengths, knockout (clip by clip and regrouped in batches of 2), attention share,
    patching and attribution patching over pairs."""
    from kits import kit_named

    from hooked_avllm.analysis import KnockoutRule, attention_share, attribution_patching, knockout_sweep, logit_diff
    from hooked_avllm.analysis import patching_sweep

    family = kit_named("qwen2_5_omni")
    model = family.model(seed=3)
    calls = []  # one entry per generation this process runs
    generate = model.generate
    model.generate = lambda *args, **kwargs: calls.append(1) or generate(*args, **kwargs)
    clips = [family.clip(model, seconds=2 + i % 2, seed=i) for i in range(N_CLIPS)]
    rules = {"gen->video": lambda layers: KnockoutRule("generated", "video", layers),
             "gen->audio": lambda layers: KnockoutRule("generated", "audio", layers)}
    knock = dict(rules=rules, windows=[(0, 1), (1, 2)], max_new_tokens=3, eos_token_id=[], progress=False,
                 score=lambda new, clip: float(new[-1]) + 1000 * clip, distributed=distributed)  # the clip index counts
    sources = [family.clip(model, video=False, seed=10 + i, audio_seed=20 + i) for i in range(3)]
    targets = [family.clip(model, video=True, seed=30 + i, audio_seed=20 + i) for i in range(3)]
    metrics = [logit_diff(3, 7), logit_diff(11, 12), logit_diff(5, 9)]
    knocked, knocked_batched = knockout_sweep(model, clips, **knock), knockout_sweep(model, clips, batch_size=2, **knock)
    results = {
        "knockout": knocked,
        "knockout_batched": knocked_batched,
        "share": attention_share(model, clips, max_new_tokens=3, eos_token_id=[], progress=False, distributed=distributed),
        "patching": patching_sweep(model, sources, targets, metrics, components=("resid_pre", "attn_out"),
                                   progress=False, distributed=distributed),
        "attribution": attribution_patching(model, sources, targets, metrics, components=("resid_pre", "mlp_out"),
                                            progress=False, distributed=distributed),
        # a knockout sweep generates all conditions of a batch at once (one shared prefill each)
        "generations": len(calls),  # this process's (the knockout sweeps share prefills instead: counted below)
        "shared_prefills": (knocked.shared_prefill, knocked_batched.shared_prefill),  # of the whole sweep
    }
    if resume is not None:  # every rank writes its own clips' units into the one results folder
        results["knockout_resumed"] = knockout_sweep(model, clips, resume=resume, **knock)
        results.update(write_store(model, clips, resume.parent / f"{resume.name}_store", distributed))
    return results


def write_store(model, clips, path: Path, distributed: bool | None) -> dict:
    """The activation store of the clips in batches of 2 (three batches): a first run that fails at
    the last clip, then a resumed one; what each run prepared and what the store reads back."""
    from hooked_avllm.study.store import write_activation_store

    args = dict(hooks=["hook_embed", "blocks.*.hook_resid_post"], modalities=["audio", "video"], batch_size=2,
                progress=False, distributed=distributed)
    out, prepared = {}, []

    def failing(clip):
        if clip is clips[-1]:
            raise OSError("the last clip is unreadable")
        return clip

    def counting(clip):
        prepared.append(next(i for i, c in enumerate(clips) if c is clip))
        return clip

    try:
        write_activation_store(model, clips, path, prepare=failing, **args)
    except Exception as error:  # every rank stops, the one whose clip failed with its own error
        out["store_failure"] = f"{type(error).__name__}: {error}"
    store = write_activation_store(model, clips, path, prepare=counting, **args)
    out["store_prepared_on_resume"] = list(prepared)
    prepared.clear()
    again = write_activation_store(model, clips, path, prepare=counting, **args)  # finished: read, nothing run
    out["store_prepared_on_rerun"] = list(prepared)
    assert again.manifest == store.manifest
    out["store_rows"] = {hook: store.read(hook, with_metadata=True) for hook in store.hooks}
    out["store_files"] = sorted(str(p.relative_to(path)) for p in path.rglob("*.safetensors"))
    out["store_clips_done"] = store.manifest["clips_done"]
    return out


def exactly(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=0, equal_nan=True)


def assert_same_results(got: dict, want: dict) -> None:
    for name in ("knockout", "knockout_batched", "knockout_resumed"):
        exactly(got[name].scores, want[name].scores), exactly(got[name].baseline, want[name].baseline)
        assert got[name].rule_names == want[name].rule_names and got[name].windows == want[name].windows
        assert got[name].table().equals(want[name].table())
    assert got["store_rows"].keys() == want["store_rows"].keys() and got["store_clips_done"] == want["store_clips_done"]
    for hook, (values, meta) in want["store_rows"].items():  # the store reads back row for row as one process wrote it
        exactly(got["store_rows"][hook][0], values)
        assert meta.keys() == got["store_rows"][hook][1].keys()
        for field, column in meta.items():
            exactly(got["store_rows"][hook][1][field], column)
    g, w = got["share"], want["share"]
    for field in ("values", "batch", "position", "step"):
        exactly(getattr(g, field), getattr(w, field))
    assert g.layers == w.layers and g.kinds == w.kinds and g.table().equals(w.table())
    g, w = got["patching"], want["patching"]
    exactly(g.per_pair, w.per_pair), exactly(g.source_value, w.source_value), exactly(g.target_value, w.target_value)
    assert (g.row_labels, g.col_labels, g.n_forwards, g.metric_name) == (w.row_labels, w.col_labels, w.n_forwards, w.metric_name)
    for part in ("components", "heads"):
        g, w = getattr(got["attribution"], part), getattr(want["attribution"], part)
        exactly(g.per_pair, w.per_pair), exactly(g.source_value, w.source_value), exactly(g.target_value, w.target_value)
        assert (g.row_labels, g.col_labels, g.n_backwards) == (w.row_labels, w.col_labels, w.n_backwards)
        for p in range(len(w.per_position)):
            exactly(g.per_position[p], w.per_position[p]), exactly(g.positions[p], w.positions[p])
            exactly(g.position_times[p], w.position_times[p])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_gather_the_single_process_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(Path(__file__).resolve()), str(tmp_path)]
    start = time.perf_counter()
    launched = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with torch_threads(1):  # as in the workers (the same kernels, the same sums)
        want = run_sweeps(distributed=False, resume=tmp_path / "one_process")
    output, _ = launched.communicate(timeout=240)
    saved = all((tmp_path / f"rank{rank}.pt").exists() for rank in range(2))
    if launched.returncode != 0:
        # a rare abort of a rank at exit, after its results are written (gloo's worker threads
        # releasing tensors while the interpreter shuts down, see pytorch/pytorch#179291): the
        # results still count; anything else fails here
        if not (saved and "terminate called without an active exception" in output):
            pytest.fail(f"the two-process run failed (exit code {launched.returncode}):\n{output[-8000:]}")
        warnings.warn(f"a rank aborted at exit after writing its results:\n{output[-2000:]}")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["world"] == (rank, 2)
        assert got["ran"] == ([0, 1, 2] if rank == 0 else [3, 4])  # contiguous blocks of the 5 clips
        assert "different numbers of items (rank 0: 5, rank 1: 4)" in got["mismatch"]
        assert got["failure"].startswith("ZeroDivisionError" if rank == 1 else "RuntimeError: rank 1 failed")
        assert_same_results(got["results"], want)
    # this rank's generations only: 1 per clip for the shares (3 clips on rank 0, 2 on rank 1); every
    # knockout condition of a clip (batch) ran over one shared prefill: 5 clips, then batches [0, 1],
    # [2, 3] and [4], counted over the whole sweep on every rank
    assert want["generations"] == 5 and want["shared_prefills"] == (5, 3)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False)["results"] for r in range(2)]
    assert [r["generations"] for r in ranks] == [3, 2] and [r["shared_prefills"] for r in ranks] == [(5, 3)] * 2
    # the folder both ranks wrote holds every clip once, and its Parquet rows are those of one process
    from hooked_avllm.analysis.sweep_store import read_table

    assert sorted(p.name for p in (tmp_path / "two_ranks").glob("unit-*.safetensors")) == [
        f"unit-{i:06d}.safetensors" for i in range(N_CLIPS)]
    assert read_table(tmp_path / "two_ranks").equals(read_table(tmp_path / "one_process"))
    # the store: batches [0, 1] [2, 3] on rank 0, [4] on rank 1, whose failure stopped both ranks; the
    # resumed run redid that batch only, and rank 0 wrote the manifest over both ranks' shards
    assert want["store_failure"].startswith("OSError: the last clip") and want["store_prepared_on_resume"] == [4]
    assert ranks[0]["store_failure"].startswith("RuntimeError: rank 1 failed (OSError")
    assert ranks[1]["store_failure"].startswith("OSError: the last clip")
    assert [r["store_prepared_on_resume"] for r in ranks] == [[], [4]]
    assert want["store_prepared_on_rerun"] == [] and [r["store_prepared_on_rerun"] for r in ranks] == [[], []]
    assert ranks[0]["store_files"] == ranks[1]["store_files"] == [
        "rank-000-of-002/shard-00000.safetensors", "rank-001-of-002/shard-00000.safetensors"]
    assert time.perf_counter() - start < 120


def worker(out: Path) -> None:
    """One rank of the two-process test: its results, what it ran, and the errors every rank must see."""
    torch.set_num_threads(1)
    rank, size = parallel.init_from_env()
    record = {"world": (rank, size), "ran": [], "results": None}
    parallel.map_sharded(lambda i, _: record["ran"].append(i), list(range(N_CLIPS)))
    try:
        parallel.map_sharded(lambda i, x: x, list(range(N_CLIPS - rank)))
    except ValueError as error:
        record["mismatch"] = str(error)
    try:
        parallel.map_sharded(lambda i, x: 1 / (x - 3), list(range(N_CLIPS)))
    except (ZeroDivisionError, RuntimeError) as error:
        record["failure"] = f"{type(error).__name__}: {error}"
    record["results"] = run_sweeps(resume=out / "two_ranks")  # distributed=None: sharded, the group is initialised
    torch.save(record, out / f"rank{rank}.pt")
    parallel.finish()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    worker(Path(sys.argv[1]))
