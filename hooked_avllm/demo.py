"""The main job: the study in miniature on the shipped toy model (or on a real checkpoint).

``hooked-avllm demo`` loads the toy Qwen2.5-Omni thinker and its vision-language base, builds
factual (congruent) and counterfactual clips (the picture of one object with another object's
sound), and runs every experiment of the study: captions, audio accuracy factual vs
counterfactual, attention share per layer (E1), logit lens on audio tokens (E2), a knockout sweep
(E3), token shift against the base (E4) with a frame heatmap, and activation patching from an
audio-only run into the conflicting run. It writes ``report.md`` and PNG plots to ``--out``.

With ``--model NAME_OR_PATH --video clip.mp4 [--audio other.wav]`` the same steps run on a real
checkpoint: the factual clip is the video with its own sound, the counterfactual one the video
with ``--audio``'s sound (and the audio-only run of ``--audio`` is the patching source).

Example:
    >>> report = run_demo("demo_out", n_clips=4)     # doctest: +SKIP
    >>> print(report.read_text()[:200])              # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hooked_avllm.toy.data import K, QUESTIONS, SOUND_WORDS, Clip, parse_answer
from hooked_avllm.toy.evaluate import generate_answers, prepare_clips, score


@dataclass
class Report:
    """Markdown sections, figures and the measured numbers of one demo run."""

    folder: Path
    lines: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def section(self, title: str, *lines: str) -> None:
        self.lines += ["", f"## {title}", "", *lines]

    def figure(self, fig: Any, name: str, caption: str) -> None:
        from hooked_avllm.analysis.plotting import pyplot

        fig.savefig(self.folder / name, dpi=110, bbox_inches="tight")
        pyplot().close(fig)
        self.lines += ["", f"![{caption}]({name})", ""]

    def write(self, title: str) -> Path:
        """Write ``report.md`` and the measured numbers as ``numbers.json``; return the report's path."""
        path = self.folder / "report.md"
        path.write_text(f"# {title}\n" + "\n".join(self.lines) + "\n")
        (self.folder / "numbers.json").write_text(json.dumps(self.numbers, indent=1, default=float))
        return path


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


# ------------------------------------------------------------------------------------------- toy


def run_demo(
    out: str | Path = "hooked_avllm_demo",
    n_clips: int = 40,
    seed: int = 1000,
    progress: bool = True,
    model: str | None = None,
    video: str | None = None,
    audio: str | None = None,
) -> Path:
    """Run the study in miniature and return the path of the Markdown report."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if model is not None:
        return _run_real(folder, model, video, audio, progress)
    return _run_toy(folder, n_clips, seed, progress)


@dataclass
class ToyStudy:
    """What every step of the toy study works on."""

    omni: Any
    base: Any
    factual: list
    conflict: list
    report: Report
    n_clips: int
    seed: int


def _run_toy(folder: Path, n_clips: int, seed: int, progress: bool) -> Path:
    from hooked_avllm.toy import ToyScenes, load_toy

    start = time.perf_counter()
    report = Report(folder)
    omni, base = load_toy("omni"), load_toy("vl")
    scenes = ToyScenes(seed)
    study = ToyStudy(omni, base, [scenes.clip("congruent", i) for i in range(n_clips)],
                     [scenes.clip("counterfactual", i) for i in range(n_clips)], report, n_clips, seed)
    report.section(
        "Model and clips",
        f"Toy Qwen2.5-Omni thinker (`hooked_avllm/toy/checkpoints/omni`, {_params(omni)} parameters, "
        f"{omni.cfg.n_layers} LLM layers) and its vision-language base (`.../vl`). {n_clips} factual clips (an "
        f"object with its own sound) and {n_clips} counterfactual clips (the same kind of picture with another "
        f"object's sound), 2 s each, seed {seed}.",
    )
    for step in tqdm(TOY_STEPS, desc="demo", disable=not progress):
        step(study)

    elapsed = time.perf_counter() - start
    report.numbers["seconds"] = elapsed
    report.section("Run", f"{elapsed:.0f} s on {torch.get_num_threads()} CPU thread(s); `hooked-avllm demo "
                   f"--clips {n_clips} --seed {seed}` reproduces it.")
    return report.write("hooked_avllm demo: does the toy AVLLM see and hear?")


def _captions(s: ToyStudy) -> None:
    """Captions and audio accuracy on factual and counterfactual clips."""
    omni, factual, conflict, report = s.omni, s.factual, s.conflict, s.report
    hear_f = score(generate_answers(omni, factual, "hear"), factual, "hear")
    hear_c = score(generate_answers(omni, conflict, "hear"), conflict, "hear")
    see_f = score(generate_answers(omni, factual, "see"), factual, "see")
    captions = generate_answers(omni, conflict[:3], "describe")
    report.numbers.update(
        factual_hear_accuracy=hear_f["true_sound_share"], factual_see_accuracy=see_f["see_accuracy"],
        counterfactual_hear_accuracy=hear_c["true_sound_share"], counterfactual_follows_picture=hear_c["visual_sound_share"],
    )
    rows = [f"| {c.visible_name} + sound of {c.sound_word} | {text} |" for c, text in zip(conflict, captions)]
    report.section(
        "Captions and audio accuracy",
        f"\"{QUESTIONS['hear']}\" answered with the true sound: **{_pct(hear_f['true_sound_share'])}** on factual "
        f"clips, **{_pct(hear_c['true_sound_share'])}** on counterfactual clips, where "
        f"**{_pct(hear_c['visual_sound_share'])}** of the answers name the sound the *picture* implies (chance "
        f"{_pct(1 / K)}). \"{QUESTIONS['see']}\" on factual clips: {_pct(see_f['see_accuracy'])}.",
        "", f"\"{QUESTIONS['describe']}\" on counterfactual clips:", "", "| clip | caption |", "|---|---|", *rows,
    )


def _attention_share(s: ToyStudy) -> None:
    """E1: attention share per modality while captioning counterfactual clips."""
    omni, conflict, report = s.omni, s.conflict, s.report
    from hooked_avllm.analysis import attention_share

    describe = prepare_clips(omni, conflict, "describe")
    shares = attention_share(omni, describe, max_new_tokens=12)
    mean = shares.mean()
    kinds = list(shares.kinds)
    report.numbers["attention_share"] = {k: mean[:, i].tolist() for i, k in enumerate(kinds)}
    table = ["| layer | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    table += [f"| {layer} | " + " | ".join(f"{float(v):.2f}" for v in mean[layer]) + " |" for layer in shares.layers]
    report.section("E1: attention share per modality (generated tokens, counterfactual clips)", *table)
    report.figure(shares.plot(title="Attention share of generated tokens"), "attention_share.png", "attention share")


def _lens_and_probe(s: ToyStudy) -> None:
    """E2: logit lens on the audio tokens, and a linear probe."""
    omni, conflict, report = s.omni, s.conflict, s.report
    n_clips, seed = s.n_clips, s.seed
    from hooked_avllm.analysis import logit_lens

    hear = prepare_clips(omni, conflict, "hear")
    lens = logit_lens(omni, hear, positions="audio", track=list(SOUND_WORDS), progress=False)
    true_ids = torch.tensor([c.sound for c in conflict])
    implied_ids = torch.tensor([SOUND_WORDS.index(c.implied_sound_word) for c in conflict])
    lens_true, lens_implied = [], []
    for probs in lens.track_probs:  # [n_pos, K] per layer: each clip's mean over its audio positions
        best = torch.zeros(len(conflict), probs.shape[1]).index_add_(0, lens.batch_index, probs).argmax(-1)
        lens_true.append(float((best == true_ids).float().mean()))
        lens_implied.append(float((best == implied_ids).float().mean()))
    report.numbers["lens_true_sound_by_layer"] = lens_true
    report.numbers["lens_implied_sound_by_layer"] = lens_implied
    report.section(
        "E2: logit lens on the audio tokens (counterfactual clips)",
        "Each layer's residual at every audio position, through the final norm and the unembedding; per clip the "
        "sound word with the highest mean probability over its audio positions. Share of clips where it is the "
        "**true** sound / the sound the picture implies:", "",
        "| layer | true sound | picture's sound |", "|---|---|---|",
        *[f"| {layer} | {_pct(t)} | {_pct(i)} |" for layer, t, i in zip(lens.layers, lens_true, lens_implied)],
    )
    report.figure(_lens_plot(lens.layers, lens_true, lens_implied), "logit_lens.png", "logit lens")
    from hooked_avllm.toy.evaluate import decodability

    probe = decodability(omni, n_train=4 * n_clips, n_test=2 * n_clips, seed=seed + 1)
    report.numbers["probe"] = {k: probe[k] for k in ("layers", "probe_audio_true", "probe_last_true", "probe_last_visual")}
    report.section(
        "E2b: a linear probe finds the true sound",
        f"Logistic regression on counterfactual clips ({probe['n_train']} to train, {probe['n_test']} to test; "
        f"chance {_pct(probe['chance'])}): the true sound from the mean residual over the audio positions, and the "
        "true / the picture's sound from the answer position.", "",
        "| layer | audio positions: true sound | answer position: true sound | answer position: picture's sound |",
        "|---|---|---|---|",
        *[f"| {layer} | {_pct(a)} | {_pct(t)} | {_pct(v)} |" for layer, a, t, v in zip(
            probe["layers"], probe["probe_audio_true"], probe["probe_last_true"], probe["probe_last_visual"])],
    )


def _knockout(s: ToyStudy) -> None:
    """E3: knockout sweep while answering "What do you hear?"."""
    omni, conflict, report = s.omni, s.conflict, s.report
    n_layers = s.omni.cfg.n_layers
    from hooked_avllm.analysis import KnockoutRule, knockout_sweep

    n_layers = omni.cfg.n_layers
    windows = [(first, min(first + 2, n_layers)) for first in range(0, n_layers, 2)]
    hear_batch = prepare_clips(omni, conflict, "hear")

    def names_true_sound(new_tokens: torch.Tensor, clip: int) -> float:
        text = omni.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return float(parse_answer(text)[1] == conflict[clip].sound_word)

    sweep = knockout_sweep(
        omni, [hear_batch],
        {"generated->video": lambda layers: KnockoutRule("generated", "video", layers),
         "generated->audio": lambda layers: KnockoutRule("generated", "audio", layers)},
        windows, names_true_sound, max_new_tokens=6, last_prompt_as_generated=True, progress=False,
    )
    report.numbers["knockout"] = {"baseline": float(sweep.baseline.mean()),
                                  **{name: sweep.scores[r].mean(-1).tolist() for r, name in enumerate(sweep.rule_names)}}
    rows = [f"| {first}-{end - 1} | " + " | ".join(_pct(sweep.scores[r, w].mean()) for r in range(len(sweep.rule_names)))
            + " |" for w, (first, end) in enumerate(windows)]
    report.section(
        "E3: attention knockout while answering \"What do you hear?\" (counterfactual clips)",
        f"Share of answers naming the true sound; without knockout {_pct(sweep.baseline.mean())}. The last prompt "
        "position counts as generated.", "",
        "| layers | " + " | ".join(sweep.rule_names) + " |", "|---" * (len(sweep.rule_names) + 1) + "|", *rows,
    )
    report.figure(sweep.plot(ylabel="true sound named"), "knockout.png", "knockout sweep")


def _patching(s: ToyStudy) -> None:
    """Activation patching from audio-only runs into the conflicting runs."""
    omni, conflict, report = s.omni, s.conflict, s.report
    n_clips, n_layers = s.n_clips, s.omni.cfg.n_layers
    from hooked_avllm.analysis import logit_diff, patching_sweep

    pairs = conflict[: min(8, n_clips)]
    sources = [prepare_clips(omni, [Clip("audio_only", None, c.audio, None, c.sound)], "hear") for c in pairs]
    targets = [prepare_clips(omni, [c], "hear") for c in pairs]
    metrics = [logit_diff(c.sound_word, c.implied_sound_word, omni) for c in pairs]
    patched = {
        "audio positions": patching_sweep(omni, sources, targets, metrics, progress=False),
        "answer position": patching_sweep(omni, sources, targets, metrics, progress=False,
                                          modality="last"),
    }
    report.numbers["patching_restoration"] = {
        where: {c: sweep.restoration[i].tolist() for i, c in enumerate(sweep.row_labels)} for where, sweep in patched.items()
    }
    rows = []
    for where, sweep in patched.items():
        rows += [f"| {where} | {c} | " + " | ".join(f"{float(v):.2f}" for v in sweep.restoration[i]) + " |"
                 for i, c in enumerate(sweep.row_labels)]
    n_forwards = sum(sweep.n_forwards for sweep in patched.values())
    report.section(
        "Activation patching: audio-only run -> audio + conflicting video",
        "The same sound alone (source) and with a conflicting picture (target), \"What do you hear?\". One "
        "component and layer at a time is copied from the source into the target, at the audio positions (k-th "
        "audio token to k-th audio token) or at the answer position (the last prompt token). Metric: the logit "
        "difference between the true sound and the picture's sound where the answer is read out; restoration "
        f"0 = the conflicting run, 1 = the audio-only run (mean over {len(pairs)} clip pairs).", "",
        "| positions | component | " + " | ".join(f"L{layer}" for layer in range(n_layers)) + " |",
        "|---|---" + "|---" * n_layers + "|", *rows,
        "", f"{n_forwards} patched forward passes in all (one per layer and clip pair: the components run as a batch).",
    )
    for where, sweep in patched.items():
        name = "patching_" + where.split()[0] + ".png"
        report.figure(sweep.plot(title=f"Restoration of the true sound ({where})"), name, f"patching at the {where}")


def _shift_and_heatmap(s: ToyStudy) -> None:
    """E4: token shift against the vision-language base, and a frame heatmap."""
    omni, base, conflict, report = s.omni, s.base, s.conflict, s.report
    n_clips = s.n_clips
    from hooked_avllm.analysis import attention_to_video, frame_heatmap, plot_frame_heatmaps, token_shift
    from hooked_avllm.inputs import teacher_forced_inputs

    from hooked_avllm.analysis import shift_summary

    shifts = []
    for c in conflict[: min(8, n_clips)]:
        a, b = prepare_clips(omni, [c], "describe"), prepare_clips(base, [c], "describe", audio=False)
        shifts.append(token_shift(omni, a, base, b, max_new_tokens=12))
    tables = [r.table() for r in shifts]
    sound_rows = [t[t.decoded.str.strip().isin(SOUND_WORDS)] for t in tables]
    pooled, sounds = shift_summary(tables), shift_summary(sound_rows)
    report.numbers["token_shift"] = {"all_tokens": pooled, "sound_words": sounds}
    clip, shift, omni_inputs = conflict[0], shifts[0], prepare_clips(omni, [conflict[0]], "describe")
    shift_rows = [f"| {r.decoded} | {r.label} | {r.rank} | {r.kl:.3f} |" for r in shift.table().itertuples()]
    report.section(
        "E4: token shift against the vision-language base",
        f"The toy Omni's captions of {len(shifts)} counterfactual clips (\"{QUESTIONS['describe']}\"), "
        "teacher-forced through the base model given the same video and no audio. Over all caption tokens: "
        f"{_pct(pooled['unshifted'])} unshifted (the base's top-1), {_pct(pooled['within_top_k'])} within its top 3; "
        f"over the sound words alone ({sounds['n_tokens']} tokens): {_pct(sounds['unshifted'])} unshifted, "
        f"{_pct(sounds['within_top_k'])} within the top 3 — the AVLLM names the sound its base would guess from "
        "the picture.", "",
        f"First clip ({clip.visible_name} + sound of {clip.sound_word}):", "",
        "| token | label | rank under base | KL |", "|---|---|---|---|", *shift_rows,
    )
    report.figure(shift.plot(), "token_shift.png", "token shift")
    forced = teacher_forced_inputs(omni_inputs, shift.caption_ids)
    scores = attention_to_video(omni, forced, queries="generated")
    heat = frame_heatmap(omni, forced, scores)  # each video token's score on its frame's cell
    fig = plot_frame_heatmaps(clip.frames, heat, title="Attention from the caption to the video tokens")
    report.figure(fig, "frame_heatmap.png", "frame heatmap")


TOY_STEPS = (_captions, _attention_share, _lens_and_probe, _knockout, _patching, _shift_and_heatmap)


def _params(model: Any) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"


def _lens_plot(layers: list[int], true: list[float], implied: list[float]) -> Any:
    from hooked_avllm.analysis.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(layers, true, marker="o", label="true sound")
    ax.plot(layers, implied, marker="s", label="picture's sound")
    ax.set_xlabel("layer (-1: embeddings)")
    ax.set_ylabel("share of clips")
    ax.set_ylim(0, 1.05)
    ax.set_title("Logit lens at the audio tokens")
    ax.legend()
    return fig


# ------------------------------------------------------------------------------------------ real


def _run_real(folder: Path, name: str, video: str | None, audio: str | None, progress: bool) -> Path:
    """The same experiments on a real checkpoint and the user's clip (factual vs --audio swapped in)."""
    from hooked_avllm import HookedAVLLM
    from hooked_avllm.analysis import KnockoutRule, attention_share, generate_with_knockout, kl_to_source, logit_lens
    from hooked_avllm.analysis import patching_sweep
    from hooked_avllm.inputs import load_audio

    if video is None:
        raise SystemExit("--model needs --video PATH (and optionally --audio PATH for the counterfactual sound)")
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = HookedAVLLM.from_pretrained(name, dtype=dtype, device=device)
    report = Report(folder)
    steps = tqdm(total=5, desc="demo", disable=not progress)
    prompt = "Describe what you see and hear."
    factual = model.prepare(prompt=prompt, video=video)  # frames sized by the checkpoint's preprocessing
    caption = _caption(model, factual)
    lines = [f"Factual ({video} with its own sound): {caption}"]
    conflict = None
    if audio is not None:
        swapped = model.load_video(video, with_audio=False, audio=load_audio(audio))  # the checkpoint's own frame sizes
        conflict = model.prepare(prompt=prompt, video=swapped)
        lines.append(f"Counterfactual (its frames with the sound of {audio}): {_caption(model, conflict)}")
    report.section(f"Captions ({name})", *lines)
    steps.update(1)
    target = conflict if conflict is not None else factual
    shares = attention_share(model, target, max_new_tokens=32)
    mean = shares.mean()
    report.section("Attention share of the generated tokens", "Mean over layers: " + ", ".join(
        f"{kind} {float(mean[:, k].mean()):.2f}" for k, kind in enumerate(shares.kinds)))
    report.figure(shares.plot(), "attention_share.png", "attention share")
    steps.update(1)
    lens = logit_lens(model, target, positions="audio", apply_final_norm=False, progress=progress)
    middle = len(lens.hook_names) // 2
    words = [t[0] for t in lens.top_tokens[middle][:: max(1, lens.n_pos // 20)]]
    report.section("Logit lens on the audio tokens", f"Top tokens at {lens.hook_names[middle]}: {' '.join(words)}")
    steps.update(1)
    n = model.cfg.n_layers
    knocked = generate_with_knockout(model, target, KnockoutRule("generated", "video", (n // 2, n)), 32,
                                     last_prompt_as_generated=True)
    text = model.tokenizer.decode(knocked[0, target.input_ids.shape[1]:], skip_special_tokens=True)
    report.section("Knockout", f"Generated->video blocked in layers {n // 2}-{n - 1}: {text}")
    steps.update(1)
    if audio is not None:
        source = model.prepare(prompt=prompt, audio=load_audio(audio))
        with torch.no_grad():
            source_logits = model(source)
        sweep = patching_sweep(model, source, conflict, kl_to_source(source_logits, source), progress=progress)
        report.section("Activation patching: audio-only run -> counterfactual run",
                       "KL divergence from the audio-only run's next-token distribution after patching each layer's "
                       "component at the audio positions (lower: closer to what the model says from the sound alone).")
        report.figure(sweep.plot(normalized=False, title="KL to the audio-only run"), "patching.png", "patching")
    steps.update(1)
    steps.close()
    report.section("Run", f"{time.perf_counter() - start:.0f} s on {device}.")
    return report.write(f"hooked_avllm demo on {name}")


def _caption(model: Any, inputs: Any, n: int = 48) -> str:
    tokens = model.generate(inputs, max_new_tokens=n)
    return model.tokenizer.decode(tokens[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)


__all__ = ["Report", "run_demo"]
