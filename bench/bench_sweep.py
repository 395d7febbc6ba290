"""The study's knockout sweep (PAPER.md E3): 14 layer windows x 2 rules (generated->video,
generated->audio) + the baseline = 29 conditions per clip, greedy tokens under each, timed three ways
and extrapolated to the study's 500 clips:

* ours, shared: ``knockout_sweep`` as users call it (one prefill per clip, the conditions decoded
  as blocks of one batch, captured on a GPU);
* ours, one generation per condition (the reference's way, with our decoding);
* with ``--reference`` (real sizes only): Hugging Face's plain ``generate`` of one clip, times the
  conditions. It has no knockout, so a plain generation per condition is a lower bound on the
  reference's way.

    PYTHONPATH=.:tests python bench/bench_sweep.py --family qwen2_5_omni --size 3b --clips 20 --reference
    PYTHONPATH=.:tests python bench/bench_sweep.py --family minicpm_o --size tiny --clips 4 --tokens 8   # CPU

``--size tiny`` builds the tests' tiny model of any family (``tests/kits``); ``3b`` and ``7b`` build
Qwen2.5-Omni's thinker at real dimensions (random weights, bf16, the 10-s clip of 2,841 tokens).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STUDY_CLIPS = 500


def study_windows(n_layers: int, positions: int = 14, width: int = 4) -> list[tuple[int, int]]:
    """``positions`` windows of ``width`` layers, their starts spread evenly from the first layer to
    the last full window (the study's 14 layer positions)."""
    width = max(1, min(width, n_layers // 2))
    starts = sorted({round(i * (n_layers - width) / max(positions - 1, 1)) for i in range(positions)})
    return [(start, start + width) for start in starts]


def sweep_timing(model, clips: list, n: int, reference_s: float | None = None, per_condition_clips: int = 2,
                 progress: bool = False) -> dict:
    """Seconds per clip of the study's sweep over ``clips`` (prepared inputs or processor dicts),
    shared and one generation per condition, and their 500-clip extrapolations; ``reference_s``: the
    reference's plain generation of one clip."""
    from hooked_avllm.analysis import KnockoutRule, knockout_sweep

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    rules = {"gen->video": lambda layers: KnockoutRule("generated", "video", layers),
             "gen->audio": lambda layers: KnockoutRule("generated", "audio", layers)}
    windows = study_windows(model.cfg.n_layers)
    clips = [model.to_inputs(**clip) if isinstance(clip, dict) else clip for clip in clips]
    conditions = 1 + len(rules) * len(windows)
    out = {"windows": windows, "conditions": conditions, "clips": len(clips), "new_tokens": n}

    def fingerprint(new: torch.Tensor, clip: int) -> float:  # equal scores <=> (almost surely) equal tokens
        return float((new.double().cpu() * torch.arange(1, len(new) + 1, dtype=torch.float64).sqrt()).sum())

    options = dict(max_new_tokens=n, eos_token_id=[], progress=progress)
    knockout_sweep(model, clips[:1], rules, windows, fingerprint, **options)  # warm-up (captures the graphs)
    sync()
    start = time.perf_counter()
    shared = knockout_sweep(model, clips, rules, windows, fingerprint, **options)
    sync()
    out["shared_s_per_clip"] = (time.perf_counter() - start) / len(clips)
    out["shared_prefill_clips"] = shared.shared_prefill
    module = importlib.import_module("hooked_avllm.analysis.knockout")
    real = module.decode_conditions
    module.decode_conditions = lambda *args: None  # one generation per condition
    try:
        some = clips[:per_condition_clips]
        start = time.perf_counter()
        alone = knockout_sweep(model, some, rules, windows, fingerprint, **options)
        sync()
        out["per_condition_s_per_clip"] = (time.perf_counter() - start) / len(some)
    finally:
        module.decode_conditions = real
    same = shared.scores[..., : len(some)] == alone.scores
    out["conditions_with_equal_tokens"] = float(same.mean())
    out["baseline_equal_tokens"] = float((shared.baseline[: len(some)] == alone.baseline).mean())
    out["shared_500_clips_min"] = out["shared_s_per_clip"] * STUDY_CLIPS / 60
    out["per_condition_500_clips_min"] = out["per_condition_s_per_clip"] * STUDY_CLIPS / 60
    out["forced_margins_clip_0"] = condition_margins(model, clips[0], rules, windows, n)
    if reference_s is not None:
        out["reference_generation_s"] = reference_s
        out["reference_way_500_clips_min_lower_bound"] = reference_s * conditions * STUDY_CLIPS / 60
    return out


def condition_margins(model, clip, rules: dict, windows: list, n: int) -> dict:
    """Are the tokens right? Each condition's tokens (shared prefill and batched conditions, and one
    generation per condition) teacher-forced through one full forward under that condition's
    knockout: how far each chosen token's logit lies below that forward's top logit (0 where it is
    the top token). bf16 noise when a near-tie went the other way; a wrong mask would show as large
    margins."""
    from hooked_avllm.analysis.knockout import _as_knockout
    from hooked_avllm.decoder_inputs import decoder_inputs
    from hooked_avllm.decoding import decode_conditions
    from hooked_avllm.inputs.batching import teacher_forced_inputs

    edits = [None] + [_as_knockout(make(w), False, model) for make in rules.values() for w in windows]
    n_prompt = clip.input_ids.shape[1]
    shared = decode_conditions(model, decoder_inputs(model, clip), edits, n, torch.tensor([], dtype=torch.long), None)
    out = {}
    for way in ("shared", "per_condition"):
        margins = []
        for e, edit in enumerate(edits):
            with model.edit_attention(*([edit] if edit is not None else [])):
                tokens = shared[e] if way == "shared" else model.generate(clip, max_new_tokens=n, eos_token_id=[])
                new = tokens[:, n_prompt:]
                logits = model(teacher_forced_inputs(clip, new[:, :-1]))[:, n_prompt - 1 :].float()
            margins.append(logits.max(-1).values - logits.gather(-1, new[..., None])[..., 0])
        margin = torch.cat(margins)
        out[way] = {"top1_agreement": float((margin == 0).float().mean()), "max_margin": float(margin.max()),
                    "logit_std": float(logits.std())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="qwen2_5_omni")
    parser.add_argument("--size", choices=["tiny", "3b", "7b"], default="3b")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--reference", action="store_true", help="also time Hugging Face's plain generation (real sizes)")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "bench_sweep.json"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference_s = None
    if args.size == "tiny":
        from analysis_support import Family

        family = Family(args.family)
        model = family.model(seed=0).to(device)
        clips = [family.clip(model, seconds=2, seed=i).to(device) for i in range(args.clips)]
        label = f"{args.family} (tiny test dimensions)"
    else:
        if args.family != "qwen2_5_omni":
            raise SystemExit(f"--size {args.size} builds Qwen2.5-Omni's thinker; for {args.family} use --size tiny "
                             "(or its own bench script: bench_minicpm_o.py, bench_videollama2.py, bench_qwen3_omni.py)")
        from bench_forward import CONFIG, clip_inputs
        from bench_generate import build_pair
        from timing import timed

        root = Path(__file__).resolve().parents[1]
        thinker = (json.loads(CONFIG.read_text()) if args.size == "3b" else json.loads(
            (root / "tests/fixtures/hub/Qwen__Qwen2.5-Omni-7B/config.json").read_text())["thinker_config"])
        reference, model, _ = build_pair(thinker, device)
        clips = [clip_inputs(device, torch.Generator().manual_seed(i)) for i in range(args.clips)]
        if args.reference:
            with torch.no_grad():
                reference_s = timed(lambda: reference.generate(**clips[0], max_new_tokens=args.tokens,
                                                               min_new_tokens=args.tokens, do_sample=False), 2)[0]
        del reference
        torch.cuda.empty_cache()
        label = f"Qwen2.5-Omni-{args.size.upper()} thinker dimensions, random weights, bf16"
    with torch.no_grad():
        result = {"model": label, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                  **sweep_timing(model, clips, args.tokens, reference_s)}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
