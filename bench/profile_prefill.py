"""Kernel counts and the heaviest kernels of one text-only LLM prefill (Qwen2.5-Omni-3B thinker
dimensions, random weights, bf16, 2,841 tokens): ours beside Hugging Face's, in one process.

    PYTHONPATH=.:tests python bench/profile_prefill.py [--tokens 2841] [--top 25] [--clip]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forward import CONFIG, clip_inputs  # noqa: E402
from bench_generate import build_pair  # noqa: E402
from timing import timed  # noqa: E402



def kernels(fn, top: int) -> dict:
    """Launched GPU kernels of one call: count, summed time and the ``top`` heaviest by total time."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    rows.sort(key=lambda e: -e.device_time_total)
    return {"launches": sum(e.count for e in rows), "gpu_ms": sum(e.device_time_total for e in rows) / 1e3,
            "top": [(e.key[:90], e.count, round(e.device_time_total / 1e3, 3)) for e in rows[:top]]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2841)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--clip", action="store_true", help="profile the whole 10-s clip forward (towers included) instead")
    args = parser.parse_args()
    reference, ours, _ = build_pair(json.loads(CONFIG.read_text()), "cuda")
    text = torch.randint(0, 150000, (1, args.tokens), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    out = {"gpu": torch.cuda.get_device_name()}
    with torch.no_grad():
        if args.clip:
            clip = clip_inputs("cuda", torch.Generator().manual_seed(0))
            for name, fn in (("reference", lambda: reference(**clip, use_cache=False)), ("ours", lambda: ours(**clip))):
                out[name] = {"s": timed(fn, 5)[0], **kernels(fn, args.top)}
            print(json.dumps(out, indent=1))
            return
        for name, fn in (("reference", lambda: reference(input_ids=text, use_cache=False)), ("ours", lambda: ours(text))):
            out[name] = {"s": timed(fn, 5)[0], **kernels(fn, args.top)}
        theirs, mine = reference(input_ids=text, use_cache=False).logits.float(), ours(text).float()
        out["bf16_ours_vs_reference"] = {"max": float((theirs - mine).abs().max()), "mean": float((theirs - mine).abs().mean())}
        # both against the reference in float32: two bf16 models part by rounding, which 36 random layers amplify
        truth = reference.float()(input_ids=text, use_cache=False).logits  # inv_freq stayed float32 (build_pair)
        out["bf16_vs_reference_fp32"] = {name: {"max": float((x - truth).abs().max()), "mean": float((x - truth).abs().mean())}
                                         for name, x in (("reference", theirs), ("ours", mine))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
