"""The 10-s clip forward (Qwen2.5-Omni-3B thinker dimensions, random weights, bf16) under each tower
arrangement: wall time, the host's time to return (launch time, no wait), and a profiler trace of
one forward per mode for the GPU's idle gaps and what the host did during each.

    PYTHONPATH=.:tests python bench/trace_clip_forward.py [--out DIR] [--modes queued,serial]

Writes ``trace_clip_forward.json`` (times) and ``trace_<mode>.json.gz`` (Chrome traces with Python
stacks, to read with ``bench/trace_gaps.py`` on any machine).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forward import clip_inputs  # noqa: E402
from bench_store_gpu import model_3b  # noqa: E402

from hooked_avllm.components import tower_overlap  # noqa: E402


def times(fn, repeats: int) -> dict:
    """Median wall and host-return milliseconds of ``repeats`` calls after two warm-ups."""
    fn(), fn()
    torch.cuda.synchronize()
    wall, host = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        host.append(time.perf_counter() - start)
        torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
    return {"wall_ms": round(sorted(wall)[repeats // 2] * 1e3, 2), "host_return_ms": round(sorted(host)[repeats // 2] * 1e3, 2),
            "wall_min_ms": round(min(wall) * 1e3, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    parser.add_argument("--modes", default=",".join(tower_overlap.MODES))
    parser.add_argument("--trace-modes", default="queued,serial")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    out = Path(args.out)
    model = model_3b("cuda")
    clip = clip_inputs("cuda", torch.Generator().manual_seed(0))
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "modes": {}}
    with torch.no_grad():
        fn = lambda: model(**clip)  # noqa: E731
        for mode in args.modes.split(","):
            tower_overlap.MODE = mode
            result["modes"][mode] = times(fn, args.repeats)
            print(mode, result["modes"][mode], flush=True)
        for mode in args.trace_modes.split(","):
            tower_overlap.MODE = mode
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
                fn()
                torch.cuda.synchronize()
            raw = out / f"trace_{mode}.json"
            prof.export_chrome_trace(str(raw))
            with raw.open("rb") as src, gzip.open(str(raw) + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw.unlink()
    (out / "trace_clip_forward.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
