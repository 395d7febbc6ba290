"""Analysis tools at real Qwen2.5-Omni-3B thinker size (random weights, bf16) on a 10-second clip,
next to the Hugging Face reference in the same process:

* attention share over all 36 layers during a 50-token greedy generation, against our plain
  generation and against Hugging Face eager generation with ``output_attentions=True`` (the way
  the study's code gets the patterns), time and peak memory;
* a 36-layer x 3-component activation patching sweep (audio-only run -> audio + video run),
  wall time and number of forward passes.

    PYTHONPATH=. python bench/bench_analysis.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_forward import CONFIG, clip_inputs  # noqa: E402
from casting import cast_keeping_rotary_float32  # noqa: E402
from hooked_avllm import HookedAVLLM  # noqa: E402
from hooked_avllm.analysis.attention_share import attention_share, shares_from_patterns  # noqa: E402
from hooked_avllm.analysis.knockout import KnockoutRule, generate_with_knockout  # noqa: E402
from hooked_avllm.loading import fill_from_named_tensors  # noqa: E402
from analysis_support import placeholder_kinds  # noqa: E402
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf  # noqa: E402

NEW = 50


def measure(fn, repeats=3):
    """(median seconds, peak GiB above what was allocated before, last result)."""
    out = fn()  # warm-up
    del out
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    times, peaks = [], []
    for _ in range(repeats):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peaks.append((torch.cuda.max_memory_allocated() - before) / 2**30)
        if _ < repeats - 1:
            del out
    return sorted(times)[len(times) // 2], max(peaks), out


def interleaved(runs, results, repeats=7):
    """Time several functions in turns (so drift hits all alike): median seconds and peak GiB each."""
    outputs, times, peaks = {}, {name: [] for name in runs}, {name: 0.0 for name in runs}
    for name, fn in runs.items():
        outputs[name] = fn()  # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            start = time.perf_counter()
            outputs[name] = fn()
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], (torch.cuda.max_memory_allocated() - before) / 2**30)
    for name in runs:
        results[name] = {"s": sorted(times[name])[repeats // 2], "peak_extra_gib": peaks[name],
                         "all_s": [round(t, 4) for t in times[name]]}
    return outputs


def batch_throughput(model, one_clip, n, results):
    """Plain generation and attention share on a batch of ``n`` copies of the clip: seconds per clip."""
    from hooked_avllm.inputs import concat_inputs

    batch = concat_inputs([one_clip] * n, pad_id=0)
    runs = {
        f"batch{n}_plain_generate": lambda: model.generate(batch, max_new_tokens=NEW, eos_token_id=[]),
        f"batch{n}_attention_share_generate": lambda: attention_share(model, batch, max_new_tokens=NEW, eos_token_id=[]),
    }
    with torch.no_grad():
        interleaved(runs, results, repeats=5)
    for name in runs:
        results[name]["s_per_clip"] = results[name]["s"] / n
    plain, share = (results[name]["all_s"] for name in runs)
    ratios = sorted(b / a for a, b in zip(plain, share))
    results[f"batch{n}_share_vs_plain_per_round_median"] = ratios[len(ratios) // 2]


def as_model_inputs(model, kwargs):
    return model.to_inputs(**kwargs)


def audio_only(kwargs, tokens):
    """The same audio without the video: audio placeholders in their own bracket."""
    ids = kwargs["input_ids"][0].tolist()
    n_audio = sum(1 for t in ids if t == tokens.audio)
    start, end = ids.index(tokens.vision_start), ids.index(tokens.vision_end)
    new = ids[:start] + [tokens.audio_start] + [tokens.audio] * n_audio + [tokens.audio_end] + ids[end + 1 :]
    ids_t = torch.tensor([new], device=kwargs["input_ids"].device)
    return dict(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), input_features=kwargs["input_features"],
                feature_attention_mask=kwargs["feature_attention_mask"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-patching", action="store_true")
    parser.add_argument("--batch", type=int, default=0, help="only measure plain generation and attention share on a "
                        "batch of this many clips (throughput for sweeps over many clips)")
    args = parser.parse_args()
    import transformers
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
               "new_tokens": NEW}
    thinker_json = json.loads(CONFIG.read_text())
    hf_cfg = Qwen2_5OmniThinkerConfig(**thinker_json)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cuda"):
        reference = cast_keeping_rotary_float32(Qwen2_5OmniThinkerForConditionalGeneration(hf_cfg).eval())
    cfg = config_from_hf({**thinker_json, "model_type": "qwen2_5_omni_thinker"})
    with torch.device("meta"):
        ours = HookedAVLLM(cfg)
    ours.to_empty(device="cuda")
    ours.to(torch.bfloat16)
    ours.tie_weights()
    fill_from_named_tensors(ours, ours.architecture.converter, reference.named_parameters(), "reference")
    ours.eval()
    inputs = clip_inputs("cuda", torch.Generator().manual_seed(0))
    inputs = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()}
    n_prompt = inputs["input_ids"].shape[1]
    results["seq_len"] = n_prompt
    model_inputs = as_model_inputs(ours, inputs)

    if args.batch:
        batch_throughput(ours, model_inputs, args.batch, results)
        print(json.dumps(results, indent=1))
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
        return
    with torch.no_grad():
        rule = KnockoutRule("generated", "video", layers=range(18, 30))
        runs = {
            "ours_plain_generate": lambda: ours.generate(model_inputs, max_new_tokens=NEW, eos_token_id=[]),
            "ours_attention_share_generate": lambda: attention_share(ours, model_inputs, max_new_tokens=NEW,
                                                                     eos_token_id=[]),
            "ours_knockout_generate_gen_to_video_18_30": lambda: generate_with_knockout(ours, model_inputs, rule, NEW,
                                                                                        eos_token_id=[]),
        }
        outputs = interleaved(runs, results, repeats=7)
        plain, shares = outputs["ours_plain_generate"], outputs["ours_attention_share_generate"]
        results["ours_attention_share_generate"]["queries"] = int(shares.values.shape[0])
        print(json.dumps(results, indent=1), flush=True)

        def hf_shares():
            out = reference.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                     eos_token_id=None, pad_token_id=0, output_attentions=True,
                                     return_dict_in_generate=True)
            kinds = placeholder_kinds(out.sequences, None, ours.cfg.tokens)
            kinds[:, n_prompt:] = 4
            per_step = []
            for step, layers in enumerate(out.attentions):
                keys = layers[0].shape[-1]
                stacked = torch.stack([a[:, :, -1:] for a in layers])  # [layer, batch, head, 1, key]
                per_step.append(torch.stack([shares_from_patterns(a.float(), kinds[:, :keys]) for a in stacked]))
            return out.sequences, torch.stack(per_step)  # [step, layer, batch, head, 1, kind]

        t, m, (hf_tokens, hf_share) = measure(hf_shares, repeats=2)
        results["hf_eager_generate_output_attentions"] = {"s": t, "peak_extra_gib": m}
        reference.set_attn_implementation("sdpa")
        t, m, _ = measure(lambda: reference.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                                     eos_token_id=None, pad_token_id=0), repeats=2)
        results["hf_sdpa_generate"] = {"s": t, "peak_extra_gib": m}
        # agreement at the queries both runs share (the same tokens so far): the last prompt position
        ours_first = shares.values[shares.step == 0].mean(2)[0]  # [layer, kind]
        hf_first = hf_share[0, :, 0, :, 0].mean(1).cpu()  # [layer, kind]
        results["share_step0_max_abs_diff_vs_hf"] = float((ours_first - hf_first).abs().max())
        same = int((plain[0, n_prompt:] == hf_tokens[0, n_prompt:]).long().cumprod(0).sum())
        results["greedy_tokens_equal_to_hf_before_first_difference"] = same
        results["ratios"] = {
            "share_vs_plain_time": results["ours_attention_share_generate"]["s"] / results["ours_plain_generate"]["s"],
            "share_minus_plain_peak_gib": results["ours_attention_share_generate"]["peak_extra_gib"]
            - results["ours_plain_generate"]["peak_extra_gib"],
            "hf_eager_attn_vs_ours_share_time": results["hf_eager_generate_output_attentions"]["s"]
            / results["ours_attention_share_generate"]["s"],
        }
        print(json.dumps(results, indent=1), flush=True)
        del hf_share, hf_tokens
        torch.cuda.empty_cache()

        if not args.skip_patching:
            from hooked_avllm.analysis.patching import patching_sweep, logit_diff

            source = as_model_inputs(ours, audio_only(inputs, ours.cfg.tokens))
            target = model_inputs
            metric = logit_diff(1000, 2000)
            t, m, sweep = measure(lambda: patching_sweep(ours, source, target, metric, progress=False), repeats=1)
            results["patching_sweep_36x3"] = {"s": t, "peak_extra_gib": m, "n_forwards": int(sweep.n_forwards),
                                              "shape": list(sweep.values.shape)}
            t, _, _ = measure(lambda: ours(target, return_type=None))
            results["one_target_forward_s"] = t
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
