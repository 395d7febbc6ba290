"""VideoLLaMA2.1-7B-AV at real dimensions with random weights, ours vs the reference assembly
(transformers Qwen2 + SigLIP, timm RegStage, ESPnet BEATs; ``tests/videollama2_reference.py``) in
one process: each side's bf16 error against the reference's fp32 run, forward and 50-token greedy generation time
and peak memory, on 16 frames of 384² and a 30-s clip (1352 video + 1496 audio tokens).

    PYTHONPATH=.:tests python bench/bench_videollama2.py --analysis --out docs/bench_videollama2_h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from hooked_avllm import HookedAVLLM  # noqa: E402
from timing import CUDA, timed  # noqa: E402
from casting import cast_keeping_rotary_float32  # noqa: E402
from hooked_avllm.architectures.videollama2.config import config_from_hf  # noqa: E402
from hooked_avllm.architectures.videollama2.prompt import audio_segment, visual_segment, input_spec  # noqa: E402
from hooked_avllm.inputs import ModelInputs, TokenLayout  # noqa: E402
from hooked_avllm.inputs.fbank import beats_fbank  # noqa: E402
from hooked_avllm.inputs.layout import Segment  # noqa: E402
from hooked_avllm.loading import fill_from_named_tensors  # noqa: E402
from videollama2_reference import PLACEHOLDER, QWEN2, REAL_DIMS, ReferenceVideoLLaMA2  # noqa: E402
import weights_conversion.videollama2 as converter  # noqa: E402

def accuracy(results: dict, model, reference, inputs, ref_forward):
    """fp32 logits of ours against the reference's, then both in bf16 against the reference's fp32
    (the reference cast as a bf16 checkpoint loads: rotary frequencies kept in float32); returns the
    bf16 inputs."""
    ours32 = model(inputs).float()
    ref32 = ref_forward().float()
    results["fp32_ours_vs_reference_max_abs"] = float((ours32 - ref32).abs().max())
    del ours32
    model.to(torch.bfloat16)
    cast_keeping_rotary_float32(reference)
    inputs16 = inputs.to(dtype=torch.bfloat16)
    errors = {}
    for name, run in (("ours", lambda: model(inputs16)), ("reference", ref_forward)):
        diff = (run().float() - ref32).abs()
        errors[name] = {"max": float(diff.max()), "mean": float(diff.mean())}
    results["bf16_vs_reference_fp32"] = errors
    results["bf16_error_ratio"] = {k: errors["ours"][k] / errors["reference"][k] for k in ("max", "mean")}
    return inputs16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench_videollama2.json")
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny dimensions (a CPU smoke run)")
    parser.add_argument("--analysis", action="store_true", help="also time attention share and knockout during generation")
    parser.add_argument("--speed-only", action="store_true", help="skip the fp32 comparison (two fp32 copies need an H200)")
    parser.add_argument("--accuracy-only", action="store_true", help="the fp32 and bf16 comparison only (no timing)")
    parser.add_argument("--llm-layers", type=int, default=None, help="the first N decoder layers only (two fp32 copies of "
                        "the whole 7B need an H200; 4 layers fit an H100)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if CUDA else "cpu")
    start = time.perf_counter()
    dims = {} if args.tiny else dict(REAL_DIMS)
    if args.llm_layers is not None:
        dims["qwen2"] = {**dims.get("qwen2", QWEN2), "num_hidden_layers": args.llm_layers}
    with torch.device(device):
        reference = ReferenceVideoLLaMA2(seed=0, **dims).eval()
    size = reference.dims["siglip"]["image_size"]
    cfg = config_from_hf(reference.config_json())
    with torch.device("meta"):
        model = HookedAVLLM(cfg)
    model.to_empty(device=device)
    model.tie_weights()
    fill_from_named_tensors(model, converter, reference.release_state_dict().items(), source="reference")
    model.eval()
    built = time.perf_counter() - start

    g = torch.Generator().manual_seed(0)
    frames = torch.randn(1, reference.num_frames, 3, size, size, generator=g).clamp(-1, 1)
    wave = 0.1 * torch.randn(30 * 16000, generator=g)
    fbank = beats_fbank(wave)[None]  # [1, 2998, 128]
    vocab = min(150000, cfg.text.vocab_size - 30)
    before, after = torch.randint(0, vocab, (20,), generator=g).tolist(), torch.randint(0, vocab, (15,), generator=g).tolist()
    video_seg = visual_segment("video", cfg, torch.arange(float(reference.num_frames)), cfg.tokens.video)
    audio_seg = audio_segment(cfg, torch.arange(fbank.shape[1]) * 0.01, fbank.shape[1], 0)
    layout = TokenLayout.from_segments([[Segment.text(before), video_seg, audio_seg, Segment.text(after)]], pad_id=cfg.tokens.pad)
    inputs = ModelInputs(layout.input_ids, layout.attention_mask, layout, spec=input_spec(cfg),
                         pixel_values_videos=frames, input_features=fbank).to(device)
    ref_ids = before + [PLACEHOLDER] + after
    n_tokens = layout.shape[1]

    def ref_forward():
        feats = torch.cat([reference.encode_frames(inputs.pixel_values_videos.to(reference.llm.dtype))[0],
                           reference.encode_audio(inputs.input_features.to(reference.llm.dtype))[0]])
        return reference([ref_ids], [feats])[0]

    def ref_generate():
        feats = torch.cat([reference.encode_frames(inputs.pixel_values_videos.to(reference.llm.dtype))[0],
                           reference.encode_audio(inputs.input_features.to(reference.llm.dtype))[0]])
        embed = reference.llm.get_input_embeddings()
        embeds = torch.cat([embed(torch.tensor(before, device=device)), feats, embed(torch.tensor(after, device=device))])[None]
        return reference.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=device),
                                      max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                                      eos_token_id=None, pad_token_id=0)

    results: dict = {"gpu": torch.cuda.get_device_name() if CUDA else "cpu", "torch": torch.__version__, "tokens": n_tokens,
                     "video_tokens": int(layout.video.sum()), "audio_tokens": int(layout.audio.sum()), "build_s": built}
    with torch.no_grad():
        if args.speed_only:
            model.to(torch.bfloat16)
            cast_keeping_rotary_float32(reference)
            inputs16 = inputs.to(dtype=torch.bfloat16)
        else:
            inputs16 = accuracy(results, model, reference, inputs, ref_forward)
            if args.accuracy_only:
                print(json.dumps(results, indent=1))
                Path(args.out).write_text(json.dumps(results, indent=1))
                return
        if CUDA:
            torch.cuda.empty_cache()
            results["weights_gib_bf16"] = torch.cuda.memory_allocated() / 2**30  # both models
        t, peak, _ = timed(lambda: model(inputs16), 5)
        results.update(forward_ours_s=t, forward_ours_peak_gib=peak)
        t, peak, _ = timed(ref_forward, 5)
        results.update(forward_reference_s=t, forward_reference_peak_gib=peak)
        t, peak, ours_tokens = timed(lambda: model.generate(inputs16, max_new_tokens=args.new_tokens, eos_token_id=[]), 3)
        results.update(generate_ours_s=t, generate_ours_peak_gib=peak)
        results["ours_decoding_captured"] = bool(model.__dict__.get("_captured_decoders")) and not model.__dict__.get("_capture_failed", False)
        t, peak, ref_tokens = timed(ref_generate, 3)
        results.update(generate_reference_s=t, generate_reference_peak_gib=peak)
        if args.analysis:  # the study's tools during generation, on our model only
            from hooked_avllm.analysis import attention_share
            from hooked_avllm.analysis.knockout import Knockout, KnockoutRule

            t, peak, share = timed(lambda: attention_share(model, inputs16, max_new_tokens=args.new_tokens,
                                                           eos_token_id=[], progress=False), 3)
            results.update(attention_share_generate_s=t, attention_share_peak_gib=peak,
                           attention_share_sums_to_one=float((share.values.sum(-1) - 1).abs().max()))
            knockout = Knockout(KnockoutRule("generated", "audio"), last_prompt_as_generated=True)

            def knocked():
                with model.edit_attention(knockout):
                    return model.generate(inputs16, max_new_tokens=args.new_tokens, eos_token_id=[])

            t, peak, _ = timed(knocked, 3)
            results.update(knockout_generate_s=t, knockout_generate_peak_gib=peak)
        ours_new = ours_tokens[0, n_tokens:].tolist()
        ref_new = ref_tokens[0, -args.new_tokens:].tolist()
        results["generated_tokens_equal_prefix"] = next((i for i, (a, b) in enumerate(zip(ours_new, ref_new)) if a != b), len(ours_new))
    print(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
