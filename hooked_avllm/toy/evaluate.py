"""Measure the toy models on held-out clips: accuracy, the vision bias, and where the sound is decodable.

Everything goes through the public API: ``model.prepare`` on the clips, ``model.generate``
(greedy) for the answers, ``model.run_with_cache`` for the residual stream.

* Accuracy: congruent "What do you see?" / "What do you hear?" / "Describe what you see and
  hear.", audio-only "What do you hear?", video-only "What do you see?".
* Vision bias: on counterfactual clips (an object with another object's sound), the share of
  "What do you hear?" answers naming the true sound, and the share naming the *visible* object's
  natural sound (chance: 1/K).
* Decodability of the true sound, per layer: the logit lens at the audio positions
  (``blocks.{l}.hook_resid_post`` through ``ln_final`` and the unembedding, averaged over the
  clip's audio positions, argmax among the K sound words) and a linear probe (multinomial
  logistic regression on the mean audio-position residual, trained and tested on disjoint clips).
  The same probe at the last prompt position (where the answer is read out) shows where the true
  sound is lost.

Example:
    >>> from hooked_avllm.toy import load_toy                             # doctest: +SKIP
    >>> results = evaluate_omni(load_toy("omni"), n=100)                  # doctest: +SKIP
    >>> results["counterfactual"]["hear"]["visual_sound_share"]           # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hooked_avllm.model import HookedAVLLM
from hooked_avllm.toy import CHECKPOINTS
from hooked_avllm.toy.data import (
    QUESTIONS,
    SOUND_WORDS,
    Clip,
    K,
    ToyScenes,
    parse_answer,
)
from hooked_avllm.toy.cards import model_card

EVAL_SEED = 1000  # held out: training pools use seed 0 (a different stream for every seed)


def prepare_clips(model, clips: list[Clip], question: str, audio: bool = True):
    """Batched ``model.prepare`` inputs for clips of one kind (left padding, for generation)."""
    prompts = [QUESTIONS[question]] * len(clips)
    if clips[0].frames is None:
        return model.prepare(prompt=prompts, audio=[(c.audio, 16000) for c in clips], audio_padding="longest")
    videos = [c.as_video() if audio else Clip(c.kind, c.frames, None, c.visible, None).as_video() for c in clips]
    with_audio = audio and clips[0].audio is not None and model.cfg.audio is not None
    return model.prepare(prompt=prompts, video=videos, use_audio_in_video=with_audio, audio_padding="longest")


@torch.no_grad()
def generate_answers(model, clips: list[Clip], question: str, batch_size: int = 50, max_new_tokens: int = 14) -> list[str]:
    """Greedy answers (decoded text) of ``model`` to ``question`` about each clip."""
    answers = []
    for start in range(0, len(clips), batch_size):
        inputs = prepare_clips(model, clips[start : start + batch_size], question)
        tokens = model.generate(inputs, max_new_tokens=max_new_tokens)
        new = tokens[:, inputs.input_ids.shape[1] :]
        answers += model.tokenizer.batch_decode(new, skip_special_tokens=True)
    return answers


def score(answers: list[str], clips: list[Clip], question: str) -> dict:
    """Exact scoring of templated answers against the clips' labels."""
    parsed = [parse_answer(a) for a in answers]
    n = len(clips)
    out: dict = {"n": n, "examples": answers[:3]}
    if question in ("see", "describe") and clips[0].visible is not None:
        out["see_accuracy"] = sum(p[0] == c.visible_name for p, c in zip(parsed, clips)) / n
    if question in ("hear", "describe"):
        if clips[0].sound is not None:
            out["true_sound_share"] = sum(p[1] == c.sound_word for p, c in zip(parsed, clips)) / n
        if clips[0].visible is not None:
            out["visual_sound_share"] = sum(p[1] == c.implied_sound_word for p, c in zip(parsed, clips)) / n
        out["no_sound_word"] = sum(p[1] is None for p in parsed) / n
    if question == "describe" and clips[0].sound is not None and clips[0].visible is not None:
        out["both_correct"] = sum(p == (c.visible_name, c.sound_word) for p, c in zip(parsed, clips)) / n
    return out


# ------------------------------------------------------------------------------------ decodability

@torch.no_grad()
def audio_residuals(model, clips: list[Clip], batch_size: int = 50) -> dict[str, torch.Tensor]:
    """Per clip and layer: the mean residual over the audio positions, the last prompt position's
    residual, and the logit-lens logits of the sound words averaged over the audio positions.

    Returns ``audio_mean`` and ``last`` ``[layer+1, clip, d_model]`` (row 0: the embeddings,
    row l+1: ``blocks.{l}.hook_resid_post``), ``lens`` ``[layer+1, clip, K]`` and ``lens_rank``
    ``[layer+1, clip]`` (rank of the true sound word in the whole vocabulary, 1 = top).
    """
    n_layers = model.cfg.n_layers
    names = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]
    sound_ids = torch.tensor(model.tokenizer.convert_tokens_to_ids(list(SOUND_WORDS)))
    audio_mean, last, lens, ranks = [], [], [], []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        inputs = prepare_clips(model, batch, "hear")
        _, cache = model.run_with_cache(inputs, names_filter=lambda name: name in names)
        mask = inputs.layout.audio.float()  # [batch, pos]
        truth = torch.tensor([sound_ids[c.sound] for c in batch])
        per_layer_mean, per_layer_last, per_layer_lens, per_layer_rank = [], [], [], []
        for name in names:
            resid = cache[name]  # [batch, pos, d_model]
            per_layer_mean.append((resid * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            per_layer_last.append(resid[:, -1])
            logits = model.unembed(model.ln_final(resid))  # [batch, pos, vocab]
            per_layer_lens.append((logits[:, :, sound_ids] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            true_logit = logits.gather(-1, truth[:, None, None].expand(-1, logits.shape[1], 1))
            rank = (logits > true_logit).sum(-1).float() + 1  # [batch, pos]
            per_layer_rank.append((rank * mask).sum(1) / mask.sum(1))
        audio_mean.append(torch.stack(per_layer_mean))
        last.append(torch.stack(per_layer_last))
        lens.append(torch.stack(per_layer_lens))
        ranks.append(torch.stack(per_layer_rank))
    return {
        "audio_mean": torch.cat(audio_mean, 1),
        "last": torch.cat(last, 1),
        "lens": torch.cat(lens, 1),
        "lens_rank": torch.cat(ranks, 1),
    }


def probe_accuracy(train_x, train_y, test_x, test_y, steps: int = 300, weight_decay: float = 1e-3, seed: int = 0) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, full-batch LBFGS)."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    probe = torch.nn.Linear(xs.shape[1], K)
    opt = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(xs), train_y) + weight_decay * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((probe(xt).argmax(-1) == test_y).float().mean())


def decodability(model, n_train: int = 300, n_test: int = 200, seed: int = EVAL_SEED) -> dict:
    """Per layer: logit-lens and linear-probe accuracy of the true sound on counterfactual clips."""
    scenes = ToyScenes(seed)
    clips = [scenes.clip("counterfactual", 10_000 + i) for i in range(n_train + n_test)]
    acts = audio_residuals(model, clips)
    true = torch.tensor([c.sound for c in clips])
    implied = torch.tensor([c.visible for c in clips])  # the visible object's natural sound class
    tr, te = slice(0, n_train), slice(n_train, None)
    layers = ["embed"] + [str(l) for l in range(model.cfg.n_layers)]
    out = {"layers": layers, "n_train": n_train, "n_test": n_test, "chance": 1 / K}
    out["lens_true_top1"] = [float((acts["lens"][l].argmax(-1) == true).float().mean()) for l in range(len(layers))]
    out["lens_visual_top1"] = [float((acts["lens"][l].argmax(-1) == implied).float().mean()) for l in range(len(layers))]
    out["lens_true_rank"] = [float(acts["lens_rank"][l].mean()) for l in range(len(layers))]
    out["probe_audio_true"] = [
        probe_accuracy(acts["audio_mean"][l][tr], true[tr], acts["audio_mean"][l][te], true[te]) for l in range(len(layers))
    ]
    out["probe_last_true"] = [
        probe_accuracy(acts["last"][l][tr], true[tr], acts["last"][l][te], true[te]) for l in range(len(layers))
    ]
    out["probe_last_visual"] = [
        probe_accuracy(acts["last"][l][tr], implied[tr], acts["last"][l][te], implied[te]) for l in range(len(layers))
    ]
    return out


# ------------------------------------------------------------------------------------ the two models

def evaluate_omni(model, n: int = 200, seed: int = EVAL_SEED, probes: bool = True) -> dict:
    """Accuracy, counterfactual bias and decodability of the toy audio-visual model."""
    scenes = ToyScenes(seed)
    sets = {kind: [scenes.clip(kind, i) for i in range(n)] for kind in ("congruent", "counterfactual", "audio_only", "video_only")}
    results: dict = {"n": n, "seed": seed, "K": K, "chance": 1 / K}
    results["congruent"] = {q: score(generate_answers(model, sets["congruent"], q), sets["congruent"], q) for q in QUESTIONS}
    results["counterfactual"] = {
        q: score(generate_answers(model, sets["counterfactual"], q), sets["counterfactual"], q) for q in QUESTIONS
    }
    results["audio_only"] = {"hear": score(generate_answers(model, sets["audio_only"], "hear"), sets["audio_only"], "hear")}
    results["video_only"] = {
        q: score(generate_answers(model, sets["video_only"], q), sets["video_only"], q) for q in ("see", "hear")
    }
    if probes:
        results["decodability"] = decodability(model, seed=seed)
    return results


def evaluate_vl(model, n: int = 200, seed: int = EVAL_SEED) -> dict:
    """The vision-language base on video-only clips: what it sees, and the sound it guesses."""
    scenes = ToyScenes(seed)
    clips = [scenes.clip("video_only", i) for i in range(n)]
    return {
        "n": n,
        "seed": seed,
        "video_only": {q: score(generate_answers(model, clips, q), clips, q) for q in QUESTIONS},
    }


def summarize(omni: dict, vl: dict | None = None) -> dict:
    c, cf = omni["congruent"], omni["counterfactual"]
    summary = {
        "congruent_see_accuracy": c["see"]["see_accuracy"],
        "congruent_hear_accuracy": c["hear"]["true_sound_share"],
        "congruent_describe_both_correct": c["describe"]["both_correct"],
        "audio_only_hear_accuracy": omni["audio_only"]["hear"]["true_sound_share"],
        "video_only_see_accuracy": omni["video_only"]["see"]["see_accuracy"],
        "counterfactual_see_accuracy": cf["see"]["see_accuracy"],
        "counterfactual_hear_true_sound": cf["hear"]["true_sound_share"],
        "counterfactual_hear_visual_sound (bias)": cf["hear"]["visual_sound_share"],
        "counterfactual_describe_true_sound": cf["describe"]["true_sound_share"],
        "counterfactual_describe_visual_sound": cf["describe"]["visual_sound_share"],
        "chance": omni["chance"],
    }
    if "decodability" in omni:
        d = omni["decodability"]
        summary["probe_audio_true_by_layer"] = dict(zip(d["layers"], [round(x, 3) for x in d["probe_audio_true"]]))
        summary["lens_true_top1_by_layer"] = dict(zip(d["layers"], [round(x, 3) for x in d["lens_true_top1"]]))
    if vl is not None:
        summary["vl_see_accuracy"] = vl["video_only"]["see"]["see_accuracy"]
        summary["vl_hear_natural_sound"] = vl["video_only"]["hear"]["visual_sound_share"]
    return summary


def evaluate_checkpoints(folder: str | Path = CHECKPOINTS, n: int = 200) -> dict:
    folder = Path(folder)
    omni = evaluate_omni(HookedAVLLM.from_pretrained(folder / "omni"), n=n)
    vl = evaluate_vl(HookedAVLLM.from_pretrained(folder / "vl"), n=n)
    return {"omni": omni, "vl": vl, "summary": summarize(omni, vl)}


# ------------------------------------------------------------------------------------ model cards

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def results_table(record: dict) -> str:
    r = record["results"]
    s, om, vl = r["summary"], r["omni"], r["vl"]
    n = om["n"]
    lines = [
        (f"Held-out clips (generator seed {om['seed']}, {n} per condition), greedy answers from `model.generate`, "
        f"K = {K} classes (chance {_pct(1 / K)})."),
        "",
        "| condition | question | measure | toy Omni |",
        "|---|---|---|---|",
        f"| congruent | What do you see? | object correct | {_pct(s['congruent_see_accuracy'])} |",
        f"| congruent | What do you hear? | sound correct | {_pct(s['congruent_hear_accuracy'])} |",
        f"| congruent | Describe what you see and hear. | both correct | {_pct(s['congruent_describe_both_correct'])} |",
        f"| audio only | What do you hear? | sound correct | {_pct(s['audio_only_hear_accuracy'])} |",
        f"| video only | What do you see? | object correct | {_pct(s['video_only_see_accuracy'])} |",
        f"| counterfactual | What do you see? | object correct | {_pct(s['counterfactual_see_accuracy'])} |",
        f"| counterfactual | What do you hear? | names the true sound | {_pct(s['counterfactual_hear_true_sound'])} |",
        (f"| counterfactual | What do you hear? | **names the visible object's sound (bias)** | "
        f"**{_pct(s['counterfactual_hear_visual_sound (bias)'])}** |"),
        (f"| counterfactual | Describe what you see and hear. | names the true sound | "
        f"{_pct(s['counterfactual_describe_true_sound'])} |"),
        (f"| counterfactual | Describe what you see and hear. | names the visible object's sound | "
        f"{_pct(s['counterfactual_describe_visual_sound'])} |"),
        "",
        (f"Vision-language base (video only): object correct {_pct(vl['video_only']['see']['see_accuracy'])}; "
        f"\"What do you hear?\" names the visible object's natural sound "
        f"{_pct(vl['video_only']['hear']['visual_sound_share'])}."),
    ]
    if "decodability" in om:
        d = om["decodability"]
        lines += [
            "",
            (f"True sound of counterfactual clips, decoded per layer ({d['n_train']} probe-training clips, "
            f"{d['n_test']} test clips; chance {_pct(d['chance'])}). `embed` is the LLM input (audio projector output "
            "at the audio positions); layer l is `blocks.{l}.hook_resid_post`."),
            "",
            "| layer | " + " | ".join(d["layers"]) + " |",
            "|---|" + "---|" * len(d["layers"]),
            "| linear probe, mean audio position | " + " | ".join(_pct(x) for x in d["probe_audio_true"]) + " |",
            "| logit lens at audio positions: true sound top among sound words | "
            + " | ".join(_pct(x) for x in d["lens_true_top1"]) + " |",
            "| logit lens at audio positions: visible object's sound top | "
            + " | ".join(_pct(x) for x in d["lens_visual_top1"]) + " |",
            "| logit lens: mean rank of the true sound word (of 256) | "
            + " | ".join(f"{x:.1f}" for x in d["lens_true_rank"]) + " |",
            "| linear probe, last prompt position: true sound | " + " | ".join(_pct(x) for x in d["probe_last_true"]) + " |",
            "| linear probe, last prompt position: visible object's sound | "
            + " | ".join(_pct(x) for x in d["probe_last_visual"]) + " |",
        ]
    return "\n".join(lines)


def write_cards(folder: str | Path, record: dict) -> None:

    folder = Path(folder)
    for kind in ("omni", "vl"):
        (folder / kind / "README.md").write_text(model_card(kind, record, results_table(record)))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Evaluate the toy checkpoints on held-out clips")
    parser.add_argument("--folder", default=str(CHECKPOINTS))
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    results = evaluate_checkpoints(args.folder, n=args.n)
    print(json.dumps(results["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
