"""Greedy generation on a long clip at Qwen2.5-Omni-7B thinker dimensions (random weights, bf16): a
60-s clip (120 frames of 448x448 at 2 fps and 60 s of sound, about 16,900 tokens), 20 new tokens,
ours (captured and eager) and Hugging Face's ``generate`` (SDPA) in the same process: time and
peak GPU memory above the weights (issue #19: ours must need no more than the reference).

    PYTHONPATH=.:tests python bench/bench_long_clip.py [--seconds 60] [--tokens 20] [--size 7b]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forward import CONFIG, clip_inputs  # noqa: E402
from bench_generate import build_pair  # noqa: E402
from timing import timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--size", choices=["3b", "7b"], default="7b")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "bench_long_clip.json"))
    args = parser.parse_args()
    thinker = (json.loads(CONFIG.read_text()) if args.size == "3b" else
               json.loads((ROOT / "tests/fixtures/hub/Qwen__Qwen2.5-Omni-7B/config.json").read_text())["thinker_config"])
    reference, ours, _ = build_pair(thinker, "cuda")
    clip = clip_inputs("cuda", torch.Generator().manual_seed(0), seconds=args.seconds)
    n = args.tokens
    result = {"gpu": torch.cuda.get_device_name(), "size": args.size, "seconds": args.seconds,
              "tokens": clip["input_ids"].shape[1], "new_tokens": n,
              "weights_gib_each": torch.cuda.memory_allocated() / 2 / 2**30}
    runs = {
        "reference": lambda: reference.generate(**clip, max_new_tokens=n, min_new_tokens=n, do_sample=False),
        "ours_graph": lambda: ours.generate(**clip, max_new_tokens=n, eos_token_id=[]),
        "ours_eager": lambda: ours.generate(**clip, max_new_tokens=n, eos_token_id=[], cuda_graph=False),
    }
    tokens = {}
    with torch.no_grad():
        for name, fn in runs.items():
            torch.cuda.empty_cache()
            seconds, peak, out = timed(fn, args.repeats)
            tokens[name] = out[:, -n:].cpu()
            result[name] = {"s": seconds, "peak_above_weights_gib": peak}
            print(name, result[name], flush=True)
    result["graph_equals_eager"] = bool(torch.equal(tokens["ours_graph"], tokens["ours_eager"]))
    result["graph_vs_reference_token_agreement"] = float((tokens["ours_graph"] == tokens["reference"]).float().mean())
    result["peak_ratio_ours_graph_vs_reference"] = result["ours_graph"]["peak_above_weights_gib"] / result["reference"]["peak_above_weights_gib"]
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
