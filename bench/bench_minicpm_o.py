"""MiniCPM-o 2.6 at real dimensions on one GPU (random weights): ours against the reference assembly
(``tests/minicpm_reference.py``: transformers' Qwen2, Idefics2 vision and Whisper modules, the
resampler written from the published code) on the same weights and inputs, in the same process.

Input: a 10-second clip in the audio-visual "omni" recipe: 10 units, each a 448x448 frame (one
slice of 32x32 patches -> 64 resampled rows) and a second of sound (25 audio rows), under the omni
system prompt and the question: 952 tokens.

* ``--phase accuracy``: the real towers and the first ``--llm-layers`` decoder layers, in float32
  (ours vs the reference) and in bf16 (each against the reference's float32).
* ``--phase speed``: the full thinker in bf16: forward and ``--new-tokens`` greedy tokens, time
  and peak memory above the weights, ours and the reference's (its LLM generates from the merged
  embeddings with its KV cache, as the released ``generate`` does).

    PYTHONPATH=.:tests python bench/bench_minicpm_o.py --phase accuracy --out acc.json
    PYTHONPATH=.:tests python bench/bench_minicpm_o.py --phase speed --out speed.json
    PYTHONPATH=.:tests python bench/bench_minicpm_o.py --phase accuracy --tiny   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hooked_avllm.architectures.minicpm_o.config import config_from_hf, tiny_config_json  # noqa: E402
from hooked_avllm.architectures.minicpm_o.preprocess import (  # noqa: E402
    audio_features,
    audio_placeholder,
    image_placeholder,
)
from hooked_avllm.loading import fill_from_named_tensors  # noqa: E402
from hooked_avllm.model import HookedAVLLM  # noqa: E402
from minicpm_reference import ReferenceMiniCPMO  # noqa: E402
from timing import CUDA, timed  # noqa: E402
from casting import cast_keeping_rotary_float32  # noqa: E402

REAL_CONFIG = Path(__file__).resolve().parents[1] / "tests/fixtures/hub/openbmb__MiniCPM-o-2_6/config.json"


def clip_inputs(cfg, n_queries: int, seconds: int, side: int, generator: torch.Generator):
    """Ids and media of an omni clip: ``seconds`` units of a frame (one ``side x side`` patch slice)
    and a second of sound, then a question."""
    t = cfg.tokens
    specials = {"<unk>": t.image, "<image>": t.image_start, "</image>": t.image_end, "<unit>": t.unit,
                "<|audio_start|>": t.audio_start, "<|audio_end|>": t.audio_end}
    text = "".join("<unit>" + image_placeholder(None, use_image_id=False, n_queries=n_queries) + audio_placeholder(16000)
                   for _ in range(seconds))
    ids = torch.randint(10, 1000, (30,), generator=generator).tolist()  # the system prompt, the user turn
    for piece in text.replace(">", ">\x00").split("\x00"):  # every special string ends with '>'
        for name, value in specials.items():
            if piece.endswith(name):
                ids += [value] * (piece.count("<unk>") if name == "<unk>" else 1)
                break
    ids += torch.randint(10, 1000, (22,), generator=generator).tolist()  # question, template, speech tokens
    wave = 0.1 * torch.randn(seconds * 16000, generator=generator)
    feats = audio_features([wave])
    media = {"pixel_values": torch.randn(seconds * side * side, 588, generator=generator).clamp(-1, 1),
             "tgt_sizes": torch.tensor([[side, side]] * seconds), "video_slices": torch.ones(seconds, dtype=torch.bool),
             "input_features": feats.input_features, "feature_lens": feats.feature_lens}
    input_ids = torch.tensor([ids])
    return input_ids, torch.ones_like(input_ids), media


def build(config_json: dict, device, dtype, randomize: bool):
    """The reference (transformers' init, or the tests' randomisation for tiny runs) and ours with its weights."""
    cfg = config_from_hf(config_json)
    start = time.perf_counter()
    with torch.device(device):
        reference = ReferenceMiniCPMO(config_json, cfg.tokens, randomize=randomize).to(dtype)
    with torch.device("meta"):
        ours = HookedAVLLM(cfg)
    ours.to_empty(device=device)
    ours.to(dtype)
    fill_from_named_tensors(ours, ours.architecture.converter, reference.released_state_dict().items(), source="reference")
    ours.eval()
    return reference, ours, cfg, time.perf_counter() - start


def on(device, input_ids, mask, media, dtype):
    return (input_ids.to(device), mask.to(device),
            {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in media.items()})


def accuracy(args, device) -> dict:
    config_json = json.loads(REAL_CONFIG.read_text()) if not args.tiny else tiny_config_json(vocab_size=151700)
    config_json["num_hidden_layers"] = min(args.llm_layers, config_json["num_hidden_layers"])
    reference, ours, cfg, built = build(config_json, device, torch.float32, randomize=args.tiny)
    queries = cfg.vision.resampler.n_queries
    ids, mask, media = clip_inputs(cfg, queries, args.seconds, args.side, torch.Generator().manual_seed(0))
    ids32, mask32, media32 = on(device, ids, mask, media, torch.float32)
    with torch.no_grad():
        ref32 = reference(ids32, mask32, media32, hidden_states=False)["logits"].float()
        ours32 = ours(ours.to_inputs(ids32, mask32, **media32)).float()
        result = {"llm_layers": cfg.n_layers, "tokens": ids.shape[1], "build_s": built,
                  "fp32_ours_vs_reference": {"logits_max": float((ours32 - ref32).abs().max()),
                                             "logits_scale": float(ref32.abs().max())}}
        cast_keeping_rotary_float32(reference), ours.to(torch.bfloat16)
        ids16, mask16, media16 = on(device, ids, mask, media, torch.bfloat16)
        errors = {}
        for name, logits in (("reference", reference(ids16, mask16, media16, hidden_states=False)["logits"].float()),
                             ("ours", ours(ours.to_inputs(ids16, mask16, **media16)).float())):
            diff = (logits - ref32).abs()
            errors[name] = {"max": float(diff.max()), "mean": float(diff.mean()),
                            "top1": float((logits.argmax(-1) == ref32.argmax(-1)).float().mean())}
    result["bf16_vs_reference_fp32"] = errors
    result["bf16_error_ratio"] = {k: errors["ours"][k] / errors["reference"][k] for k in ("max", "mean")}
    return result


def speed(args, device) -> dict:
    config_json = json.loads(REAL_CONFIG.read_text()) if not args.tiny else tiny_config_json(vocab_size=151700)
    reference, ours, cfg, built = build(config_json, device, torch.bfloat16, randomize=args.tiny)
    weights = torch.cuda.memory_allocated() / 2**30 if CUDA else float("nan")
    ids, mask, media = on(device, *clip_inputs(cfg, cfg.vision.resampler.n_queries, args.seconds, args.side,
                                               torch.Generator().manual_seed(0)), torch.bfloat16)
    inputs = ours.to_inputs(ids, mask, **media)
    result = {"build_s": built, "weights_gib_both": weights, "tokens": ids.shape[1],
              "video_tokens": int(inputs.layout.video.sum()), "audio_tokens": int(inputs.layout.audio.sum())}
    with torch.no_grad():
        t, peak, _ = timed(lambda: ours(inputs), args.repeats)
        result.update(forward_ours_s=t, forward_ours_peak_gib=peak)
        t, peak, _ = timed(lambda: reference(ids, mask, media, hidden_states=False), args.repeats)
        result.update(forward_reference_s=t, forward_reference_peak_gib=peak)
        t, peak, ours_tokens = timed(lambda: ours.generate(inputs, max_new_tokens=args.new_tokens, eos_token_id=[]), args.repeats)
        result.update(generate_ours_s=t, generate_ours_peak_gib=peak)
        result["ours_decoding_captured"] = bool(ours.__dict__.get("_captured_decoders")) and not ours.__dict__.get("_capture_failed", False)

        def reference_generate():
            embeds = reference.embeddings(ids, media)  # its towers, then its LLM's prefill and decoding
            return reference.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=args.new_tokens,
                                          min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)

        t, peak, ref_tokens = timed(reference_generate, args.repeats)
        result.update(generate_reference_s=t, generate_reference_peak_gib=peak)
    ours_new, ref_new = ours_tokens[0, ids.shape[1]:].tolist(), ref_tokens[0, -args.new_tokens:].tolist()
    result["generated_tokens_equal_prefix"] = next((i for i, (a, b) in enumerate(zip(ours_new, ref_new)) if a != b), len(ours_new))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["accuracy", "speed"], required=True)
    parser.add_argument("--llm-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--side", type=int, default=32, help="patches per side of each frame's slice (32: 448x448)")
    parser.add_argument("--tiny", action="store_true", help="tiny dimensions (a CPU smoke run)")
    parser.add_argument("--out", default="bench_minicpm_o.json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if CUDA else "cpu")
    result = accuracy(args, device) if args.phase == "accuracy" else speed(args, device)
    result.update(device=torch.cuda.get_device_name() if CUDA else "cpu", torch=torch.__version__)
    try:
        import transformers

        result["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
