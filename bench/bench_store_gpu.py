"""The activation store at Qwen2.5-Omni-3B thinker dimensions on one GPU (issue 20, part 3):
random weights, bf16, the 10-s clip of bench_forward (2,841 tokens, 250 audio), every
``blocks.*.hook_resid_post`` (36 hooks of width 2,048) at the audio positions.

    PYTHONPATH=.:tests python bench/bench_store_gpu.py [--clips 16] [--batch-size 1,4] [--out store_gpu.json]

Measured (wall-clocks, CUDA-synchronised): ``forward_s``, the same batches through the model
alone (``return_type=None``); ``write_s``, :func:`write_activation_store` of them (forward,
capture at the audio rows, copy to the host, parts, shards, manifest); the store's bytes and rows;
``read_MiB_per_s`` (every shard back, ``iter_shards``) and ``dataset_rows_per_s`` (random rows
through the lazy ``Dataset``). The store is written to the machine's local disk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forward import CONFIG, clip_inputs  # noqa: E402
from bench_store import reading_times  # noqa: E402

from hooked_avllm import HookedAVLLM  # noqa: E402
from hooked_avllm.analysis.runner import left_padded_batches  # noqa: E402
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf  # noqa: E402
from hooked_avllm.study.store import write_activation_store  # noqa: E402


def model_3b(device: str) -> HookedAVLLM:
    cfg = config_from_hf({**json.loads(CONFIG.read_text()), "model_type": "qwen2_5_omni_thinker"})
    torch.manual_seed(0)
    with torch.device(device):
        model = HookedAVLLM(cfg)
    return model.to(torch.bfloat16).eval()


def clips_for(model: HookedAVLLM, n: int) -> list:
    out = []
    for i in range(n):
        raw = clip_inputs("cpu", torch.Generator().manual_seed(i))
        ids, mask = raw.pop("input_ids"), raw.pop("attention_mask")
        out.append(model.to_inputs(ids, mask, **raw))
    return out


def measure(model, clips, batch_size: int, random_rows: int) -> dict:
    make = left_padded_batches(model)
    batches = [make(clips[i : i + batch_size]).to("cuda") for i in range(0, len(clips), batch_size)]
    with torch.no_grad():
        model(batches[0], return_type=None)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for batch in batches:
            model(batch, return_type=None)
        torch.cuda.synchronize()
    forward_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        torch.cuda.synchronize()
        started = time.perf_counter()
        store = write_activation_store(model, clips, Path(folder) / "store", hooks="blocks.*.hook_resid_post",
                                       modalities="audio", batch_size=batch_size, progress=False)
        write_s = time.perf_counter() - started
        hook = store.hooks[0]
        rows, size = store.n_rows(hook), store.nbytes()
        read_s, dataset_s = reading_times(store, random_rows)
        files = len(store.files())
    return {"clips": len(clips), "batch_size": batch_size, "hooks": len(store.hooks), "rows_per_hook": rows,
            "files": files, "bytes": size, "bytes_per_clip": size / len(clips),
            "forward_s": forward_s, "write_s": write_s, "store_overhead_s": write_s - forward_s,
            "write_clips_per_s": len(clips) / write_s, "forward_clips_per_s": len(clips) / forward_s,
            "write_MiB_per_s": size / 2**20 / write_s, "read_s": read_s, "read_MiB_per_s": size / 2**20 / read_s,
            "dataset_rows_per_s": random_rows / dataset_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch-size", default="1,4")
    parser.add_argument("--random-rows", type=int, default=2000)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "bench_store_gpu.json"))
    args = parser.parse_args()
    model = model_3b("cuda")
    clips = clips_for(model, args.clips)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens_per_clip": clips[0].input_ids.shape[1],
              "results": []}
    for batch_size in (int(b) for b in args.batch_size.split(",")):
        report["results"].append(measure(model, clips, batch_size, args.random_rows))
        print(json.dumps(report["results"][-1]), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
