"""Read a profiler trace (``bench/trace_clip_forward.py``'s ``trace_<mode>.json.gz``): the GPU's idle
gaps, and for each the kernel that ended it, the host call that launched that kernel, and where in
our code the host was (the innermost ``hooked_avllm`` frames at the launch), summed by that place.

    python bench/trace_gaps.py TRACE.json.gz [--min-us 50] [--top 25]

A gap ends when the host launches the next kernel (the host was the bottleneck: the place says
what it was doing) or when a kernel queued earlier becomes ready (a gap with its launch before the
gap's start: a wait on another stream or an event).
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


def our_frames(stack: list[dict], depth: int) -> str:
    """The innermost ``depth`` frames of our package in a stack of python_function events (outer first)."""
    ours = [e["name"] for e in stack if "hooked_avllm/" in e["name"]]
    return " > ".join(n.split("hooked_avllm/")[-1] for n in ours[-depth:]) or "(outside hooked_avllm)"


def gaps(events: list[dict], min_us: float, depth: int) -> dict:
    kernels = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and e.get("ph") == "X"),
                     key=lambda e: e["ts"])
    launches = {e["args"].get("correlation"): e for e in events
                if e.get("cat") == "cuda_runtime" and e.get("ph") == "X" and "correlation" in e.get("args", {})}
    python = sorted((e for e in events if e.get("cat") == "python_function" and e.get("ph") == "X"), key=lambda e: e["ts"])
    starts = [e["ts"] for e in python]

    by_id = {e["args"].get("Python id"): e for e in python}

    def stack_at(ts: float, tid) -> list[dict]:
        """The python_function events open at ``ts`` on thread ``tid``, outermost first: the
        innermost one (the latest started that is still open), then its parents."""
        i = bisect.bisect_right(starts, ts) - 1
        while i >= 0 and not (python[i]["tid"] == tid and python[i]["ts"] + python[i]["dur"] >= ts):
            i -= 1
        stack, event = [], python[i] if i >= 0 else None
        while event is not None:
            stack.append(event)
            event = by_id.get(event["args"].get("Python parent id"))
        return stack[::-1]

    rows, by_place, end = [], defaultdict(float), None
    busy = 0.0
    for k in kernels:
        if end is not None and k["ts"] - end >= min_us:
            launch = launches.get(k.get("args", {}).get("correlation"))
            gap = k["ts"] - end
            if launch is None:
                place, call = "(launch not in trace)", ""
            elif launch["ts"] <= end:
                place, call = "(queued before the gap: waited on another stream or event)", launch["name"]
            else:
                place, call = our_frames(stack_at(launch["ts"], launch["tid"]), depth), launch["name"]
            rows.append({"gap_us": round(gap, 1), "at_ms": round((end - kernels[0]["ts"]) / 1e3, 2),
                         "kernel_after": k["name"][:80], "launch": call, "host_in": place})
            by_place[place] += gap
        busy += k["dur"]
        end = k["ts"] + k["dur"] if end is None else max(end, k["ts"] + k["dur"])
    span = end - kernels[0]["ts"]
    return {"span_ms": round(span / 1e3, 2), "gpu_busy_ms": round(busy / 1e3, 2),
            "idle_in_gaps_ms": round(sum(r["gap_us"] for r in rows) / 1e3, 2),
            "idle_by_host_place_ms": {p: round(t / 1e3, 2) for p, t in sorted(by_place.items(), key=lambda kv: -kv[1])},
            "gaps": sorted(rows, key=lambda r: -r["gap_us"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace", type=Path)
    parser.add_argument("--min-us", type=float, default=50.0)
    parser.add_argument("--depth", type=int, default=2, help="our innermost frames named per place")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    result = gaps(load(args.trace), args.min_us, args.depth)
    result["gaps"] = result["gaps"][: args.top]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
