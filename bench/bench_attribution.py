"""Attribution patching against the real patching sweep at Qwen2.5-Omni-3B thinker size (random
weights) on a 10-second clip (2,560 video + 250 audio tokens), audio-only run -> audio + video run:

* cost: the full 36-layer x 3-component patching sweep (36 batched patched forwards) vs attribution
  patching of the same cells plus every head (one source forward, one target forward, one backward),
  time and peak memory, bf16;
* agreement: the estimate against the real sweep (Pearson r over the cells), and at
  ``ln_final.hook_normalized`` of the answer position, where the logit difference is linear in the
  activation, the largest difference (float32);
* the gradient surface: ``run_with_cache(return_type="loss", incl_bwd=True)`` on the residual
  stream, and DLA at the audio tokens through ``cache.restrict``.

    PYTHONPATH=. python bench/bench_attribution.py [--out results.json]
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

from bench_analysis import as_model_inputs, audio_only, measure  # noqa: E402
from bench_forward import CONFIG, clip_inputs  # noqa: E402
from hooked_avllm import HookedAVLLM  # noqa: E402
from hooked_avllm.analysis import attribution_patching, logit_diff, patching_sweep  # noqa: E402
from hooked_avllm.architectures.qwen2_5_omni.config import config_from_hf  # noqa: E402

COMPONENTS = ("resid_pre", "attn_out", "mlp_out")
HEAD_LAYERS = (0, 7, 14, 21, 28, 35)  # the real per-head sweep on these layers (16 heads each) for the agreement


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    keep = ~(torch.isnan(a) | torch.isnan(b))
    return float(torch.corrcoef(torch.stack([a[keep].double(), b[keep].double()]))[0, 1])


def run(model, source, target, metric, results, tag, repeats):
    t, m, sweep = measure(lambda: patching_sweep(model, source, target, metric, components=COMPONENTS, progress=False),
                          repeats=repeats)
    results[f"{tag}_patching_sweep_36x3"] = {"s": t, "peak_extra_gib": m, "n_forwards": int(sweep.n_forwards)}
    t, m, heads = measure(lambda: patching_sweep(model, source, target, metric, layers=HEAD_LAYERS, components=("z",),
                                                 progress=False), repeats=1)
    results[f"{tag}_patching_sweep_heads_6x16"] = {"s": t, "peak_extra_gib": m, "n_forwards": int(heads.n_forwards)}
    t, m, ap = measure(lambda: attribution_patching(model, source, target, metric, components=COMPONENTS, progress=False),
                       repeats=repeats)
    results[f"{tag}_attribution_patching_36x3_plus_heads"] = {"s": t, "peak_extra_gib": m,
                                                              "n_backwards": int(ap.components.n_backwards)}
    t, m, _ = measure(lambda: attribution_patching(model, source, target, metric, components=COMPONENTS, heads=False,
                                                   progress=False), repeats=repeats)
    results[f"{tag}_attribution_patching_36x3"] = {"s": t, "peak_extra_gib": m}
    results[f"{tag}_pearson_r_components"] = pearson(ap.components.values.flatten(), sweep.values.flatten())
    rows = [list(range(model.cfg.n_layers)).index(l) for l in HEAD_LAYERS]
    results[f"{tag}_pearson_r_heads_6_layers"] = pearson(ap.heads.values[rows].flatten(), heads.values.flatten())
    results[f"{tag}_effect_scale"] = {"real_max_abs": float((sweep.values - sweep.target_value.mean()).abs().max()),
                                      "estimate_max_abs": float(ap.components.effect.abs().max())}
    return sweep, ap


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    cfg = config_from_hf({**json.loads(CONFIG.read_text()), "model_type": "qwen2_5_omni_thinker"})
    start = time.perf_counter()
    model = HookedAVLLM.from_config(cfg, dtype=torch.bfloat16, device="cuda", seed=0)
    results["build_s"] = time.perf_counter() - start
    raw = clip_inputs("cuda", torch.Generator().manual_seed(0))
    bf16 = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in raw.items()}
    target = as_model_inputs(model, bf16)
    source = as_model_inputs(model, audio_only(bf16, model.cfg.tokens))
    results["seq_len"] = int(target.input_ids.shape[1])
    metric = logit_diff(1000, 2000)

    with torch.no_grad():
        t, m, _ = measure(lambda: model(target, return_type=None), repeats=5)
    results["bf16_one_target_forward"] = {"s": t, "peak_extra_gib": m}

    def forward_backward():
        """One target forward and the backward of the metric down to the embeddings (no weight gradients)."""
        captured = {}

        def keep(act, hook):
            captured["embed"] = act = act.detach().requires_grad_(True)
            return act

        with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", keep)]):
            value = metric(model(target), target).mean()
        return torch.autograd.grad(value, captured["embed"])

    for p in model.parameters():  # as attribution patching does: the graph starts at the LLM's input
        p.requires_grad_(False)
    t, m, _ = measure(forward_backward, repeats=3)
    for p in model.parameters():
        p.requires_grad_(True)
    results["bf16_forward_plus_backward"] = {"s": t, "peak_extra_gib": m}
    print(json.dumps(results, indent=1), flush=True)

    run(model, source, target, metric, results, "bf16", repeats=3)
    print(json.dumps(results, indent=1), flush=True)

    # DLA and cached gradients at real size
    with torch.no_grad():
        logits, cache = model.run_with_cache(target, names_filter=lambda n: n.endswith(("hook_embed", "attn_out",
                                                                                       "mlp_out", "ln_final.hook_scale",
                                                                                       "resid_post")))
        start = time.perf_counter()
        audio = cache.restrict("audio")
        stack = audio.decompose_resid()
        token = logits[cache.positions("audio")].argmax(-1)
        attrs = audio.logit_attrs(stack, token)
        torch.cuda.synchronize()
        expected = logits[cache.positions("audio")].gather(-1, token[:, None])[:, 0].float()
        results["bf16_dla_audio_tokens"] = {"s": time.perf_counter() - start, "components": int(stack.shape[0]),
                                            "tokens": int(stack.shape[1]),
                                            "max_abs_sum_minus_logit": float((attrs.float().sum(0) - expected).abs().max()),
                                            "logit_scale": float(expected.abs().max())}
        del cache, stack, audio, logits
    torch.cuda.empty_cache()
    t, m, _ = measure(lambda: model.run_with_cache(target, return_type="loss", incl_bwd=True,
                                                   names_filter=lambda n: n.endswith("hook_resid_post")), repeats=3)
    model.zero_grad(set_to_none=True)
    results["bf16_run_with_cache_loss_incl_bwd_resid_post"] = {"s": t, "peak_extra_gib": m}
    print(json.dumps(results, indent=1), flush=True)

    # float32: where the metric is linear the estimate is exact; agreement over the cells
    model = model.float()
    fp32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in raw.items()}
    target = as_model_inputs(model, fp32)
    source = as_model_inputs(model, audio_only(fp32, model.cfg.tokens))
    real = patching_sweep(model, source, target, metric, components=("ln_final.hook_normalized",), modality="last",
                          progress=False)
    ap = attribution_patching(model, source, target, metric, components=("ln_final.hook_normalized",), modality="last",
                              heads=False, progress=False)
    results["fp32_ln_final_normalized_last"] = {
        "real_effect": float(real.values.flatten()[0] - real.target_value[0]),
        "estimate_effect": float(ap.components.effect.flatten()[0]),
        "max_abs_diff": float((real.per_pair - ap.components.per_pair).abs().max()),
    }
    run(model, source, target, metric, results, "fp32", repeats=1)
    for modality in ("last",):
        real = patching_sweep(model, source, target, metric, components=COMPONENTS, modality=modality, progress=False)
        ap = attribution_patching(model, source, target, metric, components=COMPONENTS, modality=modality, heads=False,
                                  progress=False)
        results[f"fp32_{modality}_pearson_r_components"] = pearson(ap.components.values.flatten(), real.values.flatten())
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
