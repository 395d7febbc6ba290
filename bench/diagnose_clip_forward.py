"""Where the 10-s clip forward spends its time (Qwen2.5-Omni-3B thinker dimensions, random weights,
bf16): GPU time per ATen op and input shape, the host's synchronisations with the Python line that
caused each, the GPU's idle gaps, and wall time per stage (audio tower, vision tower, LLM).

    PYTHONPATH=.:tests python bench/diagnose_clip_forward.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forward import CONFIG, clip_inputs  # noqa: E402
from bench_generate import build_pair  # noqa: E402
from timing import timed  # noqa: E402


def synchronisations(fn) -> list[dict]:
    """Each host-device synchronisation of one call, with the innermost library frames that caused it."""
    seen: list[dict] = []
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack() if "hooked_avllm" in f.filename]
        seen.append({"message": str(message)[:80], "where": [f"{Path(f.filename).name}:{f.lineno} {f.line}" for f in frames[-3:]]})

    warnings.showwarning = record
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
        warnings.showwarning = previous
    return seen


def op_table(fn, top: int) -> dict:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages(group_by_input_shape=True) if e.self_device_time_total > 0]
    rows.sort(key=lambda e: -e.self_device_time_total)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: e.time_range.start)
    busy, gaps, end = 0.0, [], None
    for e in kernels:
        start, stop = e.time_range.start, e.time_range.end
        if end is not None and start > end:
            gaps.append(start - end)
        busy += stop - start
        end = stop if end is None else max(end, stop)
    span = kernels[-1].time_range.end - kernels[0].time_range.start
    gaps.sort(reverse=True)
    return {
        "gpu_busy_ms": busy / 1e3, "first_to_last_kernel_ms": span / 1e3, "idle_ms": sum(gaps) / 1e3,
        "largest_gaps_ms": [round(g / 1e3, 3) for g in gaps[:15]], "n_gaps_over_50us": sum(g > 50 for g in gaps),
        "ops": [(e.key, e.input_shapes and str(e.input_shapes)[:160], e.count, round(e.self_device_time_total / 1e3, 3))
                for e in rows[:top]],
    }


def stage_times(model, clip: dict) -> dict:
    """Wall time of each stage from forward pre/post hooks on the towers (synchronised)."""
    marks: dict[str, list[float]] = {}

    def pre(name):
        def hook(module, args):
            torch.cuda.synchronize()
            marks.setdefault(name, []).append(time.perf_counter())
        return hook

    def post(name):
        def hook(module, args, output):
            torch.cuda.synchronize()
            marks[name].append(time.perf_counter())
        return hook

    handles = []
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Module) and name not in ("embed",):
            handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    torch.cuda.synchronize()
    start = time.perf_counter()
    model(**clip)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    for h in handles:
        h.remove()
    out = {name: round((v[-1] - v[0]) * 1e3, 2) for name, v in marks.items() if len(v) >= 2}
    out["total_ms"] = round(total * 1e3, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    reference, ours, _ = build_pair(json.loads(CONFIG.read_text()), "cuda")
    del reference
    torch.cuda.empty_cache()
    clip = clip_inputs("cuda", torch.Generator().manual_seed(0))
    result = {"gpu": torch.cuda.get_device_name()}
    with torch.no_grad():
        fn = lambda: ours(**clip)  # noqa: E731
        fn()
        result["syncs"] = synchronisations(fn)
        result["stages_ms"] = stage_times(ours, clip)
        result["profile"] = op_table(fn, args.top)
        from hooked_avllm.components import fused

        result["wall_ms"] = {"fused": timed(fn, 7)[0] * 1e3}
        with fused.pytorch_kernels_only():
            result["wall_ms"]["pytorch_kernels_only"] = timed(fn, 7)[0] * 1e3
            result["profile_pytorch_kernels_only"] = {k: v for k, v in op_table(fn, 12).items()}
    path = Path(args.out) / "diagnose_clip_forward.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("profile")}, indent=1)[:6000])
    print(json.dumps({k: v for k, v in result["profile"].items() if k != "ops"}, indent=1))
    for row in result["profile"]["ops"]:
        print(row)


if __name__ == "__main__":
    main()
