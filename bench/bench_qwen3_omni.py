"""Qwen3-Omni-30B-A3B's thinker at real dimensions with random weights, ours vs transformers'
``Qwen3OmniMoeThinkerForConditionalGeneration``, on a 10-s clip with its sound track (20 frames of
448x448 at 2 fps: 1,960 video tokens; 1,000 mel frames: 130 audio tokens; merged in time order).

Two models of 61 GiB do not fit one H200 beside their activations, so the run has phases, each
its own process (the reference always in the same process as the figure it is compared with):

* ``--phase accuracy``: the real towers and the first ``--llm-layers`` decoder layers (DeepStack
  lands in layers 0-2, so at least 3), reference and ours from the same weights, fp32 and bf16:
  each side's bf16 error against the reference's fp32 logits, and ours against the reference in
  fp32 stage by stage (AuT rows, vision rows, each DeepStack injection, chosen experts).
* ``--phase speed --impl ours|hf``: the full 48-layer thinker in bf16: forward time and peak
  memory, 50-token greedy generation time and peak memory.

    PYTHONPATH=.:tests python bench/bench_qwen3_omni.py --phase accuracy --out acc.json
    PYTHONPATH=.:tests python bench/bench_qwen3_omni.py --phase speed --impl ours --out ours.json
    PYTHONPATH=.:tests python bench/bench_qwen3_omni.py --phase speed --impl hf --out hf.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import weights_conversion.qwen3_omni as converter
from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.qwen3_omni.config import config_from_hf
from hooked_avllm.architectures.qwen3_omni.positions import time_ordered_runs
from hooked_avllm.loading import fill_from_named_tensors
from timing import CUDA, sync, timed
from casting import cast_keeping_rotary_float32  # noqa: E402

CONFIG = ROOT / "tests/fixtures/hub/Qwen__Qwen3-Omni-30B-A3B-Instruct/config.json"


def thinker_config_json(llm_layers: int | None, tiny: bool) -> dict:
    config = json.loads(CONFIG.read_text())
    thinker = config["thinker_config"]
    if llm_layers is not None:
        thinker["text_config"]["num_hidden_layers"] = llm_layers
    if tiny:  # a CPU smoke run of this script
        from hooked_avllm.architectures.qwen3_omni.config import tiny_config_json

        small = tiny_config_json(n_layers=llm_layers or 3)
        for key in ("text_config", "audio_config", "vision_config"):
            thinker[key] = small[key]
    return config


def clip_inputs(cfg, device, seconds: int = 10, side: int = 448, seed: int = 0) -> dict:
    """Token ids and media tensors of ``seconds`` of video (2 fps, ``side``² frames) with its sound
    track, laid out as the released processor does (audio-in-video merged in time order)."""
    g = torch.Generator().manual_seed(seed)
    t, v = cfg.tokens, cfg.vision
    patches = side // v.patch_size
    grid = (seconds, patches, patches)  # 2 frames per temporal patch at 2 fps: 1 s per frame group
    n_patches = seconds * patches * patches
    frames = seconds * 100
    n_audio = 13 * (frames // 100)
    runs = time_ordered_runs(grid, 1.0, n_audio, type("S", (), {"spatial_merge_size": v.spatial_merge_size,
                                                                  "position_id_per_second": cfg.position_id_per_second})())
    body = [tok for kind, n in runs for tok in [t.video if kind == "video" else t.audio] * n]
    text = torch.randint(0, 151000, (20,), generator=g).tolist()
    ids = text[:12] + [t.vision_start, t.audio_start] + body + [t.audio_end, t.vision_end] + text[12:]
    return {
        "input_ids": torch.tensor([ids], device=device),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
        "pixel_values_videos": torch.randn(n_patches, v.patch_dim, generator=g).to(device),
        "video_grid_thw": torch.tensor([grid], device=device),
        "video_second_per_grid": torch.tensor([1.0], device=device),
        "input_features": torch.randn(1, cfg.audio.n_mels, frames, generator=g).to(device),
        "feature_attention_mask": torch.ones(1, frames, dtype=torch.long, device=device),
        "use_audio_in_video": True,
    }


def cast(inputs: dict, dtype) -> dict:
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}


def reference_model(config_json: dict, device, dtype):
    from transformers import (
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
    )

    hf_cfg = Qwen3OmniMoeThinkerConfig(**config_json["thinker_config"])
    with torch.device(device):
        model = Qwen3OmniMoeThinkerForConditionalGeneration._from_config(hf_cfg, dtype=dtype)
    randomize(model)
    return model.eval()


def randomize(model: torch.nn.Module) -> None:
    """Every weight N(0, 0.02), norm scales 1, biases 0 (both sides alike, whatever the library's init)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 1 and (leaf == "w" or (leaf == "weight" and ("norm" in name or "ln" in name))):
                p.fill_(1.0)
            elif p.ndim == 1 and leaf in ("b", "bias"):
                p.zero_()
            else:
                p.normal_(0, 0.02)


def text_model(reference):
    """The reference's decoder (``model.language_model`` in newer transformers, ``model`` in older)."""
    return getattr(reference.model, "language_model", reference.model)


def media_features(reference):
    """Where the reference keeps ``get_audio_features`` / ``get_video_features``."""
    return reference.model if hasattr(reference.model, "get_audio_features") else reference


def ours_from(reference, cfg, device, dtype) -> HookedAVLLM:
    with torch.device("meta"):
        model = HookedAVLLM(cfg)
    model.to_empty(device=device)
    model.to(dtype)
    fill_from_named_tensors(model, converter, reference.named_parameters(), source="reference")
    return model.eval()


def random_ours(cfg, device, dtype) -> HookedAVLLM:
    with torch.device("meta"):
        model = HookedAVLLM(cfg)
    model.to(dtype)  # on the meta device: the weights are allocated once, in dtype (fp32 first would not fit an H100)
    model.to_empty(device=device)
    randomize(model)
    return model.eval()


def flat(x) -> torch.Tensor:
    """Rows of all items: a tensor, or a list/tuple of per-item tensors concatenated."""
    return torch.cat(list(x)) if isinstance(x, (list, tuple)) else x


def errors(x: torch.Tensor, truth: torch.Tensor) -> dict:
    d = (x.float() - truth.float()).abs()
    return {"max": d.max().item(), "mean": d.mean().item(),
            "top1": (x.float().argmax(-1) == truth.float().argmax(-1)).float().mean().item()}


def accuracy(args, device) -> dict:
    config_json = thinker_config_json(args.llm_layers, args.tiny)
    cfg = config_from_hf(config_json)
    inputs = clip_inputs(cfg, device, side=64 if args.tiny else 448)
    reference = reference_model(config_json, device, torch.float32)
    ours = ours_from(reference, cfg, device, torch.float32)
    result = {"llm_layers": cfg.text.n_layers, "tokens": inputs["input_ids"].shape[1],
              "video_tokens": int((inputs["input_ids"] == cfg.tokens.video).sum()),
              "audio_tokens": int((inputs["input_ids"] == cfg.tokens.audio).sum()),
              "experts_implementation": getattr(reference.config.text_config, "_experts_implementation_internal", None)}
    picked = {}
    hooks = [block.mlp.gate.register_forward_hook(lambda m, a, out, i=i: picked.__setitem__(i, out[2]))
             for i, block in enumerate(text_model(reference).layers)]
    with torch.no_grad():
        ref32 = reference(**inputs).logits
        for h in hooks:
            h.remove()
        names = lambda n: n.endswith(("hook_expert_indices", "hook_injection")) or n in ("audio_proj.hook_out", "vision_proj.hook_out")
        ours32, cache = ours.run_with_cache(**inputs, names_filter=names)
        features = media_features(reference)
        ref_audio = features.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
        ref_video = features.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        if isinstance(ref_video, tuple):  # older transformers: (rows, DeepStack rows)
            ref_rows, ref_deep = ref_video[0], ref_video[1]
        else:
            ref_rows, ref_deep = ref_video.pooler_output, ref_video.deepstack_features
        if hasattr(ref_audio, "last_hidden_state"):
            ref_audio = ref_audio.last_hidden_state
    result["fp32_ours_vs_reference"] = {
        "logits_max": (ours32 - ref32).abs().max().item(), "logits_scale": ref32.abs().max().item(),
        "audio_rows_max": (cache["audio_proj.hook_out"][0] - ref_audio).abs().max().item(),
        "vision_rows_max": (cache["vision_proj.hook_out"][0] - flat(ref_rows)).abs().max().item(),
        "deepstack_max": [(cache[f"blocks.{i}.hook_injection"][inputs["input_ids"] == cfg.tokens.video] - flat(f)).abs().max().item()
                          for i, f in enumerate(ref_deep)],
        "experts_equal_fraction": [(cache[f"blocks.{i}.mlp.hook_expert_indices"].reshape(p.shape) == p).all(-1).float().mean().item()
                                   for i, p in sorted(picked.items())],
    }
    del cache
    reference16 = cast_keeping_rotary_float32(copy.deepcopy(reference))
    ours16 = ours.to(torch.bfloat16)
    del ours
    gc.collect()
    with torch.no_grad():
        ref16 = reference16(**cast(inputs, torch.bfloat16)).logits
        o16 = ours16(**cast(inputs, torch.bfloat16))
    result["bf16_vs_reference_fp32"] = {"reference": errors(ref16, ref32), "ours": errors(o16, ref32)}
    r, o = result["bf16_vs_reference_fp32"]["reference"], result["bf16_vs_reference_fp32"]["ours"]
    result["bf16_error_ratio"] = {"max": o["max"] / r["max"], "mean": o["mean"] / r["mean"]}
    return result


def speed(args, device) -> dict:
    config_json = thinker_config_json(None if not args.tiny else 3, args.tiny)
    cfg = config_from_hf(config_json)
    inputs = cast(clip_inputs(cfg, device, side=64 if args.tiny else 448), torch.bfloat16)
    start = time.perf_counter()
    if args.impl == "hf":
        model = reference_model(config_json, device, torch.bfloat16)
        forward = lambda: model(**inputs).logits
        generate = lambda: model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                          do_sample=False, pad_token_id=0)
        impl = getattr(model.config.text_config, "_experts_implementation_internal", None)
    else:
        model = random_ours(cfg, device, torch.bfloat16)
        forward = lambda: model(**inputs)
        generate = lambda: model.generate(**inputs, max_new_tokens=args.new_tokens, eos_token_id=[])
        impl = "ours"
    sync()
    build = time.perf_counter() - start
    weights = torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")
    with torch.no_grad():
        t_fwd, m_fwd, _ = timed(forward, args.repeats)
        t_gen, m_gen, out = timed(generate, 2)
    result = {"impl": args.impl, "experts_implementation": impl, "build_s": build, "weights_gib": weights,
              "tokens": inputs["input_ids"].shape[1], "forward_s": t_fwd, "forward_peak_gib": m_fwd,
              "generate_s": t_gen, "generate_peak_gib": m_gen, "new_tokens": out.shape[1] - inputs["input_ids"].shape[1]}
    if args.impl == "ours":
        result["decoding_captured"] = bool(model.__dict__.get("_captured_decoders")) and not model.__dict__.get("_capture_failed", False)
    if args.analysis and args.impl == "ours":  # the study's tools during generation, on our model only
        from hooked_avllm.analysis import attention_share
        from hooked_avllm.analysis.knockout import Knockout, KnockoutRule
        prepared = model.to_inputs(**inputs)
        t, peak, share = timed(lambda: attention_share(model, prepared, max_new_tokens=args.new_tokens, eos_token_id=[],
                                                       progress=False), 2)
        result.update(attention_share_generate_s=t, attention_share_peak_gib=peak,
                      attention_share_sums_to_one=float((share.values.sum(-1) - 1).abs().max()))
        knockout = Knockout(KnockoutRule("generated", "audio"), last_prompt_as_generated=True)

        def knocked():
            with model.edit_attention(knockout):
                return model.generate(prepared, max_new_tokens=args.new_tokens, eos_token_id=[])

        t, peak, _ = timed(knocked, 2)
        result.update(knockout_generate_s=t, knockout_generate_peak_gib=peak)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["accuracy", "speed"], required=True)
    parser.add_argument("--impl", choices=["ours", "hf"], default="ours")
    parser.add_argument("--llm-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny dimensions (a CPU smoke run)")
    parser.add_argument("--analysis", action="store_true", help="ours: also time attention share and knockout during generation")
    parser.add_argument("--out", default="bench_qwen3_omni.json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if CUDA else "cpu")
    result = accuracy(args, device) if args.phase == "accuracy" else speed(args, device)
    result["device"] = torch.cuda.get_device_name() if CUDA else "cpu"
    result["torch"] = torch.__version__
    try:
        import transformers

        result["transformers"] = transformers.__version__
    except ImportError:
        pass
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
