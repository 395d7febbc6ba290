"""Real-size check on one GPU: Qwen2.5-Omni-3B thinker dimensions, random weights, a 10-second
clip with audio interleaved (2,560 video + 250 audio tokens). Runs the Hugging Face reference in
the same process, so the ratios are side by side.

    PYTHONPATH=. python bench/bench_forward.py            # prints a Markdown table and JSON
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from casting import cast_keeping_rotary_float32  # noqa: E402

from hooked_avllm import HookedAVLLM  # noqa: E402
from hooked_avllm.loading import fill_from_named_tensors  # noqa: E402
from reference_models import audio_in_video_tokens  # noqa: E402
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf  # noqa: E402

CONFIG = Path(__file__).with_name("qwen2_5_omni_3b_thinker_config.json")
AUDIO, AUDIO_BOS, AUDIO_EOS, VISION_BOS, VISION_EOS = 151646, 151647, 151648, 151652, 151653


def reference_thinker(thinker_json: dict, device):
    """Hugging Face's thinker (SDPA) with random weights (seed 0), float32."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    hf_cfg = Qwen2_5OmniThinkerConfig(**thinker_json)
    hf_cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        return Qwen2_5OmniThinkerForConditionalGeneration(hf_cfg).eval()


def ours_from(reference, thinker_json: dict, device, dtype=torch.bfloat16):
    """Our model with the reference's weights, in ``dtype``."""
    cfg = config_from_hf({**thinker_json, "model_type": "qwen2_5_omni_thinker"})
    with torch.device("meta"):
        ours = HookedAVLLM(cfg)
    ours.to_empty(device=device)
    ours.to(dtype)
    ours.tie_weights()
    fill_from_named_tensors(ours, ours.architecture.converter, reference.named_parameters(), "reference")
    return ours.eval()


def clip_inputs(device, generator, seconds: int = 10):
    grid, frames = (seconds, 32, 32), 100 * seconds  # 2 * seconds frames of 448x448 at 2 fps; the clip's audio
    n_audio = ((frames - 1) // 2 + 1 - 2) // 2 + 1
    head = torch.randint(0, 150000, (20,), generator=generator).tolist()
    tail = torch.randint(0, 150000, (7,), generator=generator).tolist()
    body = [t if t != 202 else 151656 for t in audio_in_video_tokens(grid, 1.0, n_audio)]
    body = [AUDIO if t == 200 else t for t in body]
    ids = head + [VISION_BOS, AUDIO_BOS] + body + [AUDIO_EOS, VISION_EOS] + tail
    return dict(
        input_ids=torch.tensor([ids], device=device),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
        pixel_values_videos=torch.randn(seconds * 32 * 32, 1176, generator=generator).to(device),
        video_grid_thw=torch.tensor([grid], device=device),
        video_second_per_grid=torch.tensor([1.0], device=device),
        input_features=torch.randn(1, 128, frames, generator=generator).clamp(-1, 1).to(device),
        feature_attention_mask=torch.ones(1, frames, dtype=torch.long, device=device),
        use_audio_in_video=True,
    )


def timed(fn, repeats=5, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_extra_gib(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**30


def main():
    device = "cuda"
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    import transformers

    results["transformers"] = transformers.__version__
    thinker_json = json.loads(CONFIG.read_text())
    reference = reference_thinker(thinker_json, device)
    inputs = clip_inputs(device, torch.Generator().manual_seed(0))
    results["seq_len"] = inputs["input_ids"].shape[1]

    with torch.no_grad():
        ref32 = reference(**inputs, use_cache=False).logits.float()
        cast_keeping_rotary_float32(reference)
        ref16 = reference(**inputs, use_cache=False).logits.float()
        ours = ours_from(reference, thinker_json, device)
        ours16 = ours(**inputs).float()

        ref_err = (ref16 - ref32).abs()
        our_err = (ours16 - ref32).abs()
        results["bf16_vs_fp32_max_abs"] = {"reference": ref_err.max().item(), "ours": our_err.max().item()}
        results["bf16_vs_fp32_mean_abs"] = {"reference": ref_err.mean().item(), "ours": our_err.mean().item()}
        results["bf16_top1_agreement_with_fp32"] = {
            "reference": (ref16.argmax(-1) == ref32.argmax(-1)).float().mean().item(),
            "ours": (ours16.argmax(-1) == ref32.argmax(-1)).float().mean().item(),
        }
        del ref32, ref16, ours16, ref_err, our_err
        torch.cuda.empty_cache()

        results["forward_s"] = {
            "reference_sdpa": timed(lambda: reference(**inputs, use_cache=False)),
            "ours": timed(lambda: ours(**inputs)),
        }
        results["forward_peak_extra_gib"] = {
            "reference_sdpa": peak_extra_gib(lambda: reference(**inputs, use_cache=False)),
            "ours": peak_extra_gib(lambda: ours(**inputs)),
        }
        print(json.dumps(results, indent=1), flush=True)
        pv, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
        visual = reference.model.visual if hasattr(reference.model, "visual") else reference.visual
        results["vision_tower_s"] = {
            "reference_sdpa": timed(lambda: visual(pv, grid_thw=grid)),
            "ours": timed(lambda: ours.encode_media(pixel_values_videos=pv, video_grid_thw=grid)),
        }
        feats, fmask = inputs["input_features"], inputs["feature_attention_mask"]
        results["audio_tower_s"] = {
            "reference_sdpa": timed(lambda: reference.get_audio_features(feats, fmask)),
            "ours": timed(lambda: ours.encode_media(input_features=feats, feature_attention_mask=fmask)),
        }
        names = lambda n: n.endswith("hook_resid_post") and n.startswith("blocks")  # noqa: E731
        results["run_with_cache_resid_post_s"] = timed(lambda: ours.run_with_cache(**inputs, names_filter=names), repeats=3)
        pattern_layer = lambda n: n == "blocks.20.attn.hook_pattern"  # noqa: E731
        results["run_with_cache_one_pattern_s"] = timed(lambda: ours.run_with_cache(**inputs, names_filter=pattern_layer), repeats=3)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
