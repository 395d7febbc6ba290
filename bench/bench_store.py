"""The activation store on the CPU: size on disk and write / read / export throughput (issue 20, part 3).

    PYTHONPATH=. python bench/bench_store.py [--clips 64] [--batch-size 8] [--threads 1] [--out store.json]

On the shipped toy Omni model, ``--clips`` counterfactual clips (2 s, 136 tokens: 50 audio, 32
video) are written with ``hook_embed`` and every ``blocks.{l}.hook_resid_post`` (7 hooks of
width 96) at the audio and video positions (82 rows a clip), in bf16 and in fp32, with shards of
``--shard-mb``. Measured, each a wall-clock on ``--threads`` torch threads:

* ``forward_s``: the same batches through the model alone (``return_type=None``, no hook): what
  the store costs beyond the forwards is ``write_s - forward_s - prepare_s``;
* ``prepare_s``: ``model.prepare`` of every clip (the clips themselves are drawn beforehand);
* ``write_s``: :func:`write_activation_store` (prepare, forward, capture, parts, shards, manifest);
* ``commit_s``: of that, the writing: each batch's part file, the manifest, the merges into shards
  (``commit_MiB_per_s``: the store's bytes over that time);
* ``bytes``: the store's files; ``bytes_per_row``; MiB/s written over the whole write
  (``write_MiB_per_s``) and over what the store adds to prepare + forward (``store_MiB_per_s``:
  capture, parts, merge into shards, manifests);
* ``read_s``: every row of every hook, shard by shard (``iter_shards``);
* ``dataset_rows_per_s``: ``StoreDataset[i]`` at ``--random-rows`` random rows (one row each);
* ``export_s``: the SAELens export of one hook (audio rows, ``context_size`` 16).

The host's load average is recorded: the shared CPUs of the development machines make wall-clocks
vary by a factor of several between runs (with 2 threads under load, 10x; ``store_MiB_per_s`` is
``None`` when the store's share is lost in that noise).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hooked_avllm.analysis.runner import left_padded_batches  # noqa: E402
from hooked_avllm.study import store as store_module  # noqa: E402
from hooked_avllm.study.store import write_activation_store  # noqa: E402
from hooked_avllm.toy import ToyScenes, load_toy  # noqa: E402

HOOKS = ["hook_embed", "blocks.*.hook_resid_post"]


@contextmanager
def patched(owner, name, value):
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def reading_times(store, random_rows: int) -> tuple[float, float]:
    """Seconds to read every row of every hook back, shard by shard (checking every row came back),
    and to fetch ``random_rows`` random rows through the lazy ``Dataset``."""
    started = time.perf_counter()
    for hook in store.hooks:  # one hook at a time: a store may hold hooks of several groups (LLM, towers)
        read = sum(part[hook].shape[0] for part in store.iter_shards(hook))
        assert read == store.n_rows(hook)
    read_s = time.perf_counter() - started
    dataset = store.dataset(store.hooks)
    picks = torch.randint(0, len(dataset), (random_rows,), generator=torch.Generator().manual_seed(0)).tolist()
    started = time.perf_counter()
    for i in picks:
        dataset[i]
    return read_s, time.perf_counter() - started


def measure(model, clips, dtype: torch.dtype, batch_size: int, shard_mb: float, random_rows: int) -> dict:
    prepare = lambda clip: model.prepare(prompt="What do you hear?", **clip.media())  # noqa: E731
    started = time.perf_counter()
    prepared = [prepare(clip) for clip in clips]
    prepare_s = time.perf_counter() - started
    make = left_padded_batches(model)
    batches = [make(prepared[i : i + batch_size]) for i in range(0, len(prepared), batch_size)]
    started = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            model(batch, return_type=None)
    forward_s = time.perf_counter() - started
    committing = []  # the wall-clock of each batch's commit: its part, the manifest, a merge into a shard when due
    commit = store_module._StoreWriter.commit

    def timed_commit(self, *args, **kwargs):
        started = time.perf_counter()
        commit(self, *args, **kwargs)
        committing.append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as folder, patched(store_module._StoreWriter, "commit", timed_commit):
        started = time.perf_counter()
        store = write_activation_store(model, clips, Path(folder) / "store", hooks=HOOKS, modalities=["audio", "video"],
                                       prepare=prepare, batch_size=batch_size, dtype=dtype, shard_mb=shard_mb,
                                       progress=False)
        write_s = time.perf_counter() - started
        rows, size = store.n_rows("hook_embed"), store.nbytes()
        read_s, dataset_s = reading_times(store, random_rows)
        started = time.perf_counter()
        export = store.export_sae_lens(Path(folder) / "sae", "blocks.3.hook_resid_post", context_size=16,
                                       modalities="audio")
        export_s = time.perf_counter() - started
        files = len(store.files())
    overhead = write_s - forward_s - prepare_s
    return {
        "dtype": str(dtype).removeprefix("torch."), "clips": len(clips), "batch_size": batch_size, "hooks": len(store.hooks),
        "rows": rows, "files": files, "bytes": size, "bytes_per_row": size / rows,
        "prepare_s": prepare_s, "forward_s": forward_s, "write_s": write_s,
        "commit_s": sum(committing), "commit_MiB_per_s": size / 2**20 / sum(committing),
        "store_overhead_s": overhead,
        "store_MiB_per_s": size / 2**20 / overhead if overhead > 0 else None,  # None: lost in the noise
        "write_clips_per_s": len(clips) / write_s, "write_rows_per_s": rows / write_s,
        "write_MiB_per_s": size / 2**20 / write_s,
        "read_s": read_s, "read_MiB_per_s": size / 2**20 / read_s,
        "dataset_rows_per_s": random_rows / dataset_s, "export_s": export_s, "export_sequences": export.sequences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-mb", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)  # on 2 shared cores 1 thread is steadier (and faster)
    parser.add_argument("--random-rows", type=int, default=2000)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "bench_store.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_toy("omni")
    scenes = ToyScenes(seed=1000)
    clips = [scenes.clip("counterfactual", i) for i in range(args.clips)]
    measure(model, clips[: args.batch_size], torch.float32, args.batch_size, args.shard_mb, 10)  # warm-up
    results = [measure(model, clips, dtype, args.batch_size, args.shard_mb, args.random_rows)
               for dtype in (torch.bfloat16, torch.float32)]
    report = {"device": "cpu", "threads": args.threads, "load_average": os.getloadavg(), "torch": torch.__version__,
              "model": "toy omni (6 layers, d_model 96)", "shard_mb": args.shard_mb, "results": results}
    print(json.dumps(report, indent=1))
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
