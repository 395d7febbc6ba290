"""Greedy generation at Qwen2.5-Omni-3B thinker dimensions (random weights, bf16) on the 10-s clip
(2,841 tokens): ours (captured decoding, and eager) and Hugging Face's ``generate`` (SDPA, its
default cache) in the same process, batch 1 and batch 8; knockout and attention share beside
plain generation. Medians of CUDA-synchronised wall-clock times after a warm-up.

    PYTHONPATH=.:tests python bench/bench_generate.py [--tokens 50] [--repeats 3] [--out generate.json]
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

from bench_forward import CONFIG, clip_inputs, ours_from, reference_thinker  # noqa: E402
from casting import cast_keeping_rotary_float32  # noqa: E402
from bench_sweep import sweep_timing  # noqa: E402
from timing import timed  # noqa: E402



def batched(inputs: dict, n: int) -> dict:
    """The same clip ``n`` times (media repeated per row)."""
    out = dict(inputs)
    for key in ("input_ids", "attention_mask", "video_grid_thw", "video_second_per_grid", "input_features",
                "feature_attention_mask"):
        out[key] = torch.cat([inputs[key]] * n)
    out["pixel_values_videos"] = torch.cat([inputs["pixel_values_videos"]] * n)
    return out


def build_pair(thinker_json: dict, device: str):
    """Hugging Face's thinker (SDPA, random weights, bf16), ours with the same weights, our config."""
    reference = cast_keeping_rotary_float32(reference_thinker(thinker_json, device))
    ours = ours_from(reference, thinker_json, device)
    return reference, ours, ours.cfg


def forced_margin(model, inputs: dict, new: torch.Tensor) -> dict:
    """Teacher-force the generated tokens through one full forward: how far each chosen token's
    logit lies below the forward's top logit at its step (0 where it is the top token), in logits;
    bf16 noise when a near-tie is decided the other way."""
    full = dict(inputs)
    full["input_ids"] = torch.cat((inputs["input_ids"], new[:, :-1]), dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    logits = model(**full)[:, inputs["input_ids"].shape[1] - 1 :].float()  # [batch, new, vocab]: predicts each token
    chosen = logits.gather(-1, new[..., None])[..., 0]
    margin = logits.max(-1).values - chosen
    return {"top1_agreement": float((margin == 0).float().mean()), "max_margin": float(margin.max()),
            "logit_std": float(logits.std())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--sweep-clips", type=int, default=20, help="0: stop after the analysis timings")
    parser.add_argument("--overlap-modes", default="queued,thread,serial",
                        help="the clip forward timed again under each tower arrangement (components/tower_overlap.py)")
    parser.add_argument("--cache", action="store_true", help="time run_with_cache of every hook even with --sweep-clips 0")
    parser.add_argument("--forward-only", action="store_true", help="stop after the text prefill and clip forward timings")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "bench_generate.json"))
    args = parser.parse_args()
    from hooked_avllm.analysis import KnockoutRule, attention_share, generate_with_knockout

    device, n = "cuda", args.tokens
    reference, ours, cfg = build_pair(json.loads(CONFIG.read_text()), device)
    one = clip_inputs(device, torch.Generator().manual_seed(0))
    weights_gib = torch.cuda.memory_allocated() / 2 / 2**30  # two copies of the weights are loaded
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "seq_len": one["input_ids"].shape[1],
               "new_tokens": n, "weights_gib_each": weights_gib}

    def hf(inputs):
        return reference.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def mine(inputs, graph):
        return ours.generate(**inputs, max_new_tokens=n, eos_token_id=[], cuda_graph=graph)

    with torch.no_grad():
        text = torch.randint(0, 150000, one["input_ids"].shape, device=device, generator=torch.Generator(device).manual_seed(1))
        results["text_prefill_s"] = {"reference": timed(lambda: reference(input_ids=text, use_cache=False), args.repeats)[0],
                                     "ours": timed(lambda: ours(text), args.repeats)[0]}
        results["clip_forward_s"] = {"reference": timed(lambda: reference(**one, use_cache=False), args.repeats)[0],
                                     "ours": timed(lambda: ours(**one), args.repeats)[0]}
        from hooked_avllm.components import tower_overlap

        default_mode, by_mode = tower_overlap.MODE, {}
        try:
            for mode in (m for m in args.overlap_modes.split(",") if m):
                tower_overlap.MODE = mode
                by_mode[mode] = timed(lambda: ours(**one), args.repeats)[0]
        finally:
            tower_overlap.MODE = default_mode
        results["clip_forward_by_tower_overlap_s"] = by_mode
        print(json.dumps({k: results[k] for k in ("text_prefill_s", "clip_forward_s", "clip_forward_by_tower_overlap_s")}),
              flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        if args.forward_only:
            return
        for b in (int(x) for x in args.batches.split(",") if x):
            inputs = batched(one, b) if b > 1 else one
            row = {}
            for name, fn in (("reference", lambda: hf(inputs)), ("ours_graph", lambda: mine(inputs, None)),
                             ("ours_eager", lambda: mine(inputs, False))):
                seconds, peak, tokens = timed(fn, args.repeats)
                row[name] = {"s": seconds, "tok_per_s": b * n / seconds, "peak_gib": peak}
                row[name + "_tokens"] = tokens[:, -n:].cpu()
            row["graph_equals_eager"] = bool(torch.equal(row["ours_graph_tokens"], row["ours_eager_tokens"]))
            row["graph_vs_eager_token_agreement"] = float((row["ours_graph_tokens"] == row["ours_eager_tokens"]).float().mean())
            for name in ("reference", "ours_graph", "ours_eager"):  # each token vs a full forward's argmax there
                row[name + "_margin"] = forced_margin(ours, inputs, row[name + "_tokens"].to(device))
            row["graph_equals_reference_tokens"] = float((row["ours_graph_tokens"] == row["reference_tokens"]).float().mean())
            for key in [k for k in row if k.endswith("_tokens")]:
                del row[key]
            row["speedup_vs_reference"] = row["ours_graph"]["tok_per_s"] / row["reference"]["tok_per_s"]
            results[f"batch_{b}"] = row
            print(json.dumps({f"batch_{b}": row}, indent=1), flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
            del inputs
            torch.cuda.empty_cache()

        layers = range(cfg.n_layers // 2, cfg.n_layers * 5 // 6)
        rule = KnockoutRule("generated", "video", (layers.start, layers.stop))
        plain, _, _ = timed(lambda: mine(one, None), args.repeats)
        knocked, _, _ = timed(lambda: generate_with_knockout(ours, one, rule, n, eos_token_id=[]), args.repeats)
        shares, peak, _ = timed(lambda: attention_share(ours, one, max_new_tokens=n, eos_token_id=[]), args.repeats)
        results["analysis"] = {"plain_s": plain, "knockout_s": knocked, "knockout_ratio": knocked / plain,
                               "attention_share_s": shares, "attention_share_ratio": shares / plain,
                               "attention_share_peak_gib": peak,
                               "knockout_layers": [layers.start, layers.stop - 1]}
        eager_ko = generate_with_knockout(ours, one, rule, n, eos_token_id=[], cuda_graph=False)
        graph_ko = generate_with_knockout(ours, one, rule, n, eos_token_id=[])
        results["analysis"]["knockout_graph_equals_eager"] = bool(torch.equal(eager_ko, graph_ko))
        results["analysis"]["knockout_changes_tokens"] = not bool(torch.equal(graph_ko, mine(one, None)))
        Path(args.out).write_text(json.dumps(results, indent=1))
        if args.cache:
            results["run_with_cache_every_hook"] = cache_timing(ours, one)
            Path(args.out).write_text(json.dumps(results, indent=1))
        if not args.sweep_clips:
            print(json.dumps({k: results[k] for k in ("analysis", "run_with_cache_every_hook") if k in results}, indent=1))
            return
        results["sweep"] = sweep_timing(ours, [one] * args.sweep_clips, n, reference_s=results["batch_1"]["reference"]["s"]
                                        if "batch_1" in results else None)
        print(json.dumps({"sweep": results["sweep"]}), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        if not args.cache:
            results["run_with_cache_every_hook"] = cache_timing(ours, one)
    print(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1))


def cache_timing(model, clip: dict) -> dict:
    """``run_with_cache`` of every hook of the clip: on the GPU, and streamed to pinned host memory."""
    out = {}
    for name, kwargs in (("gpu", {}), ("cpu", {"device": "cpu"}), ("cpu_bf16", {"device": "cpu", "cache_dtype": torch.bfloat16})):
        try:
            seconds, peak, result = timed(lambda: model.run_with_cache(**clip, **kwargs), 1)  # one cache alive at a time
            gib = sum(t.numel() * t.element_size() for t in result[1].cache_dict.values()) / 2**30
            out[name] = {"s": seconds, "gpu_peak_above_weights_gib": peak, "cache_gib": gib}
            del result
        except torch.OutOfMemoryError as error:
            out[name] = {"error": str(error)[:200]}
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    main()
