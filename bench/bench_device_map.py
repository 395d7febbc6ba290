"""A model split over two devices through ``hooked_avllm.device_map`` against the same model on
one GPU, on the one-GPU machine: the towers and the first decoder layers on ``cuda:0``, the
embedding, the last layers, the final norm and the unembedding on the CPU (a genuine split: the
residual stream crosses devices twice, media rows cross once). Random weights at Qwen2.5-Omni-7B
thinker size, bf16, a clip with its sound track. Then Qwen3-Omni-30B-A3B on one GPU with a 60-s
clip and every layer's residual stream cached (``--qwen3``).

    PYTHONPATH=.:tests python bench/bench_device_map.py --qwen3 --out device_map.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf as omni_config_from_hf
from hooked_avllm import HookedAVLLM
from hooked_avllm.analysis import Knockout, KnockoutRule, attention_share
from hooked_avllm.inputs import ModelInputs
from timing import CUDA, sync, timed

OMNI_7B = ROOT / "tests/fixtures/hub/Qwen__Qwen2.5-Omni-7B/config.json"


def randomize(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 1 and leaf == "w":
                p.fill_(1.0)
            elif p.ndim == 1 and leaf in ("b", "bias"):
                p.zero_()
            else:
                p.normal_(0, 0.02)


def omni_clip(model, seconds: int, side: int, device) -> ModelInputs:
    """``seconds`` of video at 2 fps (``side``² frames) with ``seconds`` of sound, interleaved."""
    from hooked_avllm.architectures.qwen.interleave import audio_in_video_runs
    from hooked_avllm.towers.whisper_audio import audio_token_counts

    cfg = model.cfg
    t, v = cfg.tokens, cfg.vision
    g = torch.Generator().manual_seed(0)
    patches = side // v.patch_size
    grid = (seconds, patches, patches)
    frames = seconds * 100
    n_audio = int(audio_token_counts(torch.tensor([frames]))[0])
    runs = audio_in_video_runs(grid, 1.0, n_audio, position_id_per_second=cfg.position_id_per_second,
                               seconds_per_chunk=cfg.seconds_per_chunk)
    body = [tok for kind, n in runs for tok in [t.video if kind == "video" else t.audio] * n]
    text = torch.randint(0, 151000, (20,), generator=g).tolist()
    ids = torch.tensor([text[:12] + [t.vision_start, t.audio_start] + body + [t.audio_end, t.vision_end] + text[12:]])
    media = {
        "pixel_values_videos": torch.randn(seconds * patches * patches, v.patch_dim, generator=g).to(torch.bfloat16),
        "video_grid_thw": torch.tensor([grid]), "video_second_per_grid": torch.tensor([1.0]),
        "input_features": torch.randn(1, 128, frames, generator=g).to(torch.bfloat16),
        "feature_attention_mask": torch.ones(1, frames, dtype=torch.long), "use_audio_in_video": True,
    }
    mask = torch.ones_like(ids)
    return model.to_inputs(ids, mask, **media).to(device)


def split_vs_single(args) -> dict:
    cfg = omni_config_from_hf(json.loads(OMNI_7B.read_text()))
    with torch.device("meta"):
        single = HookedAVLLM(cfg)
    single.to_empty(device="cuda")
    single.to(torch.bfloat16)
    randomize(single)  # on the GPU
    single.eval()
    n = cfg.text.n_layers
    on_cpu = set(range(n // 2, n // 2 + args.cpu_layers))  # mid-stack: the stream goes GPU -> CPU -> GPU
    plan = {"embed": "cpu", "hook_embed": "cpu", "ln_final": 0, "unembed": 0,
            **{slot: 0 for slot in ("vision", "vision_proj", "audio", "audio_proj")},
            **{f"blocks.{i}": ("cpu" if i in on_cpu else 0) for i in range(n)}}
    split = copy.deepcopy(single).to("cpu").dispatch(plan)
    result = {"model": "Qwen2.5-Omni-7B thinker dims, random bf16", "cpu_layers": sorted(on_cpu)}
    inputs_gpu = omni_clip(single, args.seconds, args.side, "cuda")
    inputs_cpu = inputs_gpu.to("cpu")
    result["tokens"] = int(inputs_gpu.input_ids.shape[1])
    with torch.no_grad():
        t1, m1, ref = timed(lambda: single(inputs_gpu), 1)
        t2, m2, got = timed(lambda: split(inputs_cpu), 1)
        d = (got.float().cpu() - ref.float().cpu()).abs()
        result.update(single_forward_s=t1, single_peak_gib=m1, split_forward_s=t2, split_gpu_peak_gib=m2,
                      logits_max_diff=d.max().item(), logits_mean_diff=d.mean().item(),
                      logits_scale=ref.abs().max().item(),
                      top1_agreement=(got.argmax(-1).cpu() == ref.argmax(-1).cpu()).float().mean().item(),
                      logits_device=str(got.device))
        dump(args, {"split": result})
        got = got.cpu()
        tokens_single = single.generate(inputs_gpu, max_new_tokens=args.new_tokens, eos_token_id=[])
        start = time.perf_counter()
        tokens_split = split.generate(inputs_cpu, max_new_tokens=args.new_tokens, eos_token_id=[])
        result["split_generate_s"] = time.perf_counter() - start
        new = slice(inputs_gpu.input_ids.shape[1], None)
        result["greedy_equal_prefix"] = int((tokens_split[0, new].cpu() == tokens_single[0, new].cpu()).long().cumprod(0).sum())
        dump(args, {"split": result})
        _, cache = split.run_with_cache(inputs_cpu, names_filter=lambda name: name.endswith("hook_resid_post"), device="cpu")
        result["cached_resid_devices"] = sorted({str(cache[f"blocks.{i}.hook_resid_post"].device) for i in range(n)})
        seen = {}
        hooks = [(f"blocks.{i}.hook_resid_post", lambda x, hook, i=i: seen.__setitem__(i, str(x.device))) for i in (0, n - 1)]
        split.run_with_hooks(inputs_cpu, fwd_hooks=hooks)
        result["hook_devices"] = {f"blocks.{i}": seen[i] for i in seen}
        share = attention_share(split, inputs_cpu, max_new_tokens=5, eos_token_id=[], progress=False)
        result["attention_share_sums_to_one"] = float((share.values.sum(-1) - 1).abs().max())
        rule = Knockout(KnockoutRule("generated", "audio"), last_prompt_as_generated=True)
        with split.edit_attention(rule):
            knocked = split.generate(inputs_cpu, max_new_tokens=5, eos_token_id=[])
        with single.edit_attention(rule):
            knocked_single = single.generate(inputs_gpu, max_new_tokens=5, eos_token_id=[])
        result["knockout_tokens_equal_prefix"] = int((knocked[0, new].cpu() == knocked_single[0, new].cpu()).long().cumprod(0).sum())
    return result


def qwen3_long_clip(args) -> dict:
    from bench_qwen3_omni import clip_inputs, random_ours, thinker_config_json

    from hooked_avllm.architectures.qwen3_omni.config import config_from_hf

    cfg = config_from_hf(thinker_config_json(None, False))
    model = random_ours(cfg, torch.device("cuda"), torch.bfloat16)
    inputs = clip_inputs(cfg, "cuda", seconds=60)
    inputs = {k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    names = lambda name: name.endswith("hook_resid_post") and name.startswith("blocks.")  # noqa: E731
    with torch.no_grad():
        t, peak, out = timed(lambda: model.run_with_cache(**inputs, names_filter=names), 1)
    logits, cache = out
    sync()
    return {"model": "Qwen3-Omni-30B-A3B thinker dims, random bf16, one H200", "tokens": int(inputs["input_ids"].shape[1]),
            "run_with_cache_resid_post_s": t, "peak_above_weights_gib": peak, "cached_layers": len(cache),
            "cache_gib": sum(v.numel() * v.element_size() for v in cache.values()) / 2**30}


def dump(args, result: dict) -> None:
    """Write what is measured so far (a later stage may run out of time)."""
    Path(args.out).write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--side", type=int, default=448)
    parser.add_argument("--cpu-layers", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--qwen3", action="store_true", help="also Qwen3-Omni-30B-A3B on one GPU with a 60-s clip")
    parser.add_argument("--out", default="device_map.json")
    args = parser.parse_args()
    if not CUDA:
        raise SystemExit("bench_device_map needs a GPU (the CPU tests are tests/test_device_map.py)")
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    result["split"] = split_vs_single(args)
    dump(args, result)
    torch.cuda.empty_cache()
    if args.qwen3:
        result["qwen3_60s"] = qwen3_long_clip(args)
        dump(args, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
