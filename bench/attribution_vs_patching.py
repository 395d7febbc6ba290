"""Attribution patching against the real patching sweep on the shipped toy model (CPU, float32).

The demo's setting: the true sound alone (source) and under a conflicting picture (target),
"What do you hear?", metric the logit difference between the true sound and the picture's sound.
For each of ``--pairs`` held-out counterfactual clips, both sweeps over every layer and component
(and every head), at the audio positions and at the answer position; Pearson r between estimate
and real effect over all cells (per pair, and of the means over pairs), and timings.

    python bench/attribution_vs_patching.py [--pairs 16] [--out docs/attribution_vs_patching_toy.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hooked_avllm.analysis import attribution_patching, logit_diff, patching_sweep
from hooked_avllm.toy import ToyScenes, load_toy
from hooked_avllm.toy.data import Clip
from hooked_avllm.toy.evaluate import EVAL_SEED, prepare_clips

COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    keep = ~(torch.isnan(a) | torch.isnan(b))
    return float(torch.corrcoef(torch.stack([a[keep].double(), b[keep].double()]))[0, 1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_toy("omni")
    clips = [ToyScenes(seed=EVAL_SEED).clip("counterfactual", i) for i in range(args.pairs)]
    sources = [prepare_clips(model, [Clip("audio_only", None, c.audio, None, c.sound)], "hear") for c in clips]
    targets = [prepare_clips(model, [c], "hear") for c in clips]
    metrics = [logit_diff(c.sound_word, c.implied_sound_word, model) for c in clips]
    results = {"model": "toy omni (hooked_avllm/toy/checkpoints/omni)", "pairs": args.pairs, "dtype": "float32",
               "threads": torch.get_num_threads()}
    for modality in ("audio", "last"):
        start = time.perf_counter()
        real = patching_sweep(model, sources, targets, metrics, components=COMPONENTS, modality=modality, progress=False)
        real_s = time.perf_counter() - start
        start = time.perf_counter()
        heads = patching_sweep(model, sources, targets, metrics, components=("z",), modality=modality, progress=False)
        heads_s = time.perf_counter() - start
        start = time.perf_counter()
        ap = attribution_patching(model, sources, targets, metrics, components=COMPONENTS, modality=modality,
                                  progress=False)
        ap_s = time.perf_counter() - start
        real_effect = real.per_pair - real.target_value[:, None, None]
        ap_effect = ap.components.per_pair - ap.components.target_value[:, None, None]
        head_effect = heads.per_pair - heads.target_value[:, None, None]
        ap_heads = ap.heads.per_pair - ap.heads.target_value[:, None, None]
        results[modality] = {
            "cells_components": int(real.values.numel()), "cells_heads": int(heads.values.numel()),
            "pearson_r_mean_over_pairs_components": pearson(ap.components.values.flatten(), real.values.flatten()),
            "pearson_r_mean_over_pairs_heads": pearson(ap.heads.values.flatten(), heads.values.flatten()),
            "pearson_r_every_pair_and_cell_components": pearson(ap_effect.flatten(), real_effect.flatten()),
            "pearson_r_every_pair_and_cell_heads": pearson(ap_heads.flatten(), head_effect.flatten()),
            "max_abs_real_effect": float(real_effect.nan_to_num().abs().max()),
            "max_abs_estimate_minus_real": float((ap_effect - real_effect).nan_to_num().abs().max()),
            "restoration_real": real.restoration.tolist(), "restoration_estimate": ap.components.restoration.tolist(),
            "seconds": {"patching_sweep_components": real_s, "patching_sweep_heads": heads_s,
                        "attribution_patching_components_and_heads": ap_s},
            "patched_forwards": {"components": int(real.n_forwards), "heads": int(heads.n_forwards)},
            "backward_passes": int(ap.components.n_backwards),
        }
    print(json.dumps({k: v for k, v in results.items()}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
