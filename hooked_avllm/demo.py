"""The main job: the study in miniature on the shipped toy model (or on a real checkpoint).

``hooked-avllm demo`` loads the toy Qwen2.5-Omni thinker and its vision-language base, builds
factual (congruent) and counterfactual clips (the picture of one object with another object's
sound), and runs every experiment of the study: captions, audio accuracy factual vs
counterfactual, attention share per layer (E1), logit lens on audio tokens (E2), a knockout sweep
(E3), activation patching from an audio-only run into the conflicting run (scored at the sound
word, after the teacher-forced answer prefix "I hear", with each pair's clean-corrupt gap), and
token shift against the base (E4) with a frame heatmap. It writes ``report.md``,
``numbers.json`` and PNG plots, each plot with a section saying what it shows.

With ``model=NAME_OR_PATH, video="clip.mp4"`` (and ``audio="other.wav"``) the same steps run on a
real checkpoint: your clip with its own sound, and its frames with the other sound (whose
audio-only run is the patching source).

Everything is written in a temporary folder and copied to ``out`` at the end, so a run that
fails (or is interrupted) leaves no folder behind.

Example:
    >>> report = run_demo("demo_out", n_clips=4)     # doctest: +SKIP
    >>> print(report.read_text()[:200])              # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hooked_avllm.toy.data import K, QUESTIONS, SOUND_WORDS, Clip, parse_answer
from hooked_avllm.toy.evaluate import generate_answers, prepare_clips, score

ANSWER_PREFIX = "I hear"  # the toy answers "I hear <sound>.": the sound word comes after these two tokens
PATCHING_PAIRS = 8  # clip pairs of the patching sweeps (each costs one LLM forward per layer and sweep)


@dataclass
class Report:
    """Markdown sections, figures and the measured numbers of one demo run, written in ``folder``."""

    folder: Path
    lines: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def section(self, title: str, *lines: str) -> None:
        self.lines += ["", f"## {title}", "", *lines]

    def figure(self, fig: Any, name: str, title: str, *explanation: str) -> None:
        """Save ``fig`` as ``name`` under a section of its own: ``explanation`` says what it shows
        (axes, lines, bands, colours), so the picture can be read without the code."""
        from hooked_avllm.analysis.plotting import pyplot

        if not explanation:
            raise ValueError(f"figure {name!r} needs an explanation of what it shows")
        fig.savefig(self.folder / name, dpi=110, bbox_inches="tight")
        pyplot().close(fig)
        self.lines += ["", f"### Figure: {title}", "", *explanation, "", f"![{title}]({name})", ""]

    def write(self, title: str) -> Path:
        """Write ``report.md`` and the measured numbers as ``numbers.json``; return the report's path."""
        path = self.folder / "report.md"
        path.write_text(f"# {title}\n" + "\n".join(self.lines) + "\n")
        (self.folder / "numbers.json").write_text(json.dumps(self.numbers, indent=1, default=float))
        return path

    def publish(self, out: Path) -> Path:
        """Copy every file to ``out`` (created now, with its parents); return the report's path there."""
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.folder.iterdir()):
            shutil.copyfile(path, out / path.name)
        return out / "report.md"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _cell(text: str) -> str:
    """``text`` as a Markdown table cell: its pipes (``<|im_end|>``) escaped so they do not split the row."""
    return text.replace("|", "\\|")


def run_demo(
    out: str | Path = "hooked_avllm_demo",
    n_clips: int = 40,
    seed: int = 1000,
    progress: bool = True,
    model: str | None = None,
    video: str | Path | None = None,
    audio: str | Path | None = None,
) -> Path:
    """Run the study in miniature and return the path of the Markdown report.

    ``n_clips`` (at least 1) factual and counterfactual toy clips from ``seed``; or ``model`` with
    ``video`` (a clip with its sound track) and optionally ``audio`` (another sound). ``out`` is
    created only when the run succeeds; files of an earlier run there are replaced.
    """
    _check_request(n_clips, seed, model, video, audio)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="hooked_avllm_demo_") as staging:
        report = Report(Path(staging))
        if model is not None:
            _run_real(report, model, str(video), None if audio is None else str(audio), progress)
        else:
            _run_toy(report, n_clips, seed, progress)
        return report.publish(Path(out).expanduser())


def _check_request(n_clips: int, seed: int, model: str | None, video: Any, audio: Any) -> None:
    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 1:
        raise ValueError(f"n_clips must be a whole number of at least 1, got {n_clips!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number of at least 0, got {seed!r}")
    if model is not None and video is None:
        raise ValueError(f"model={model!r} needs video= (your clip, with its sound track)")
    if model is None and (video is not None or audio is not None):
        raise ValueError("video= and audio= run the demo on a checkpoint: pass model= too (the toy model makes its own clips)")
    if audio is not None and video is None:
        raise ValueError("audio= is the other sound for your clip: pass video= too")


# ------------------------------------------------------------------------------------------- toy


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


def _run_toy(report: Report, n_clips: int, seed: int, progress: bool) -> Path:
    from hooked_avllm.toy import ToyScenes, load_toy

    start = time.perf_counter()
    omni, base = load_toy("omni"), load_toy("vl")
    scenes = ToyScenes(seed)
    study = ToyStudy(omni, base, [scenes.clip("congruent", i) for i in range(n_clips)],
                     [scenes.clip("counterfactual", i) for i in range(n_clips)], report, n_clips, seed)
    report.section(
        "Model and clips",
        f"Toy Qwen2.5-Omni thinker (`hooked_avllm/toy/checkpoints/omni`, {_params(omni)} parameters, "
        f"{omni.cfg.n_layers} LLM layers) and its vision-language base (`.../vl`). {n_clips} factual clips (an "
        f"object with its own sound) and {n_clips} counterfactual clips (the same kind of picture with another "
        f"object's sound), 2 s each, seed {seed}. {K} objects, so chance is {_pct(1 / K)}.",
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
    rows = [f"| {c.visible_name} + sound of {c.sound_word} | {_cell(text)} |" for c, text in zip(conflict, captions)]
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
    report.section(
        "E1: attention share per modality (generated tokens, counterfactual clips)",
        f"While the toy Omni captions the {len(conflict)} counterfactual clips (\"{QUESTIONS['describe']}\", up to 12 "
        "tokens): the share of each generated token's attention that goes to each kind of key, per LLM layer, "
        "averaged over heads and generated tokens, then over clips. The kinds sum to 1 in every layer.", "", *table,
    )
    report.figure(
        shares.plot(title="Attention share of the generated tokens, by key kind"), "attention_share.png",
        "attention share per layer",
        "x: LLM layer; y: share of the generated tokens' attention. One line per key kind (the table's means); the "
        f"shaded band around each line spans the minimum to the maximum over the {len(conflict)} clips (the legend "
        "and the caption under the plot say so). Kinds no clip has (the toy has no still images) are left out.",
    )


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
        "Each layer's residual (after the block: `blocks.{l}.hook_resid_post`) at every audio position, through the "
        "final norm and the unembedding; per clip the sound word with the highest mean probability over its audio "
        "positions. Share of clips where it is the **true** sound / the sound the picture implies:", "",
        "| layer | true sound | picture's sound |", "|---|---|---|",
        *[f"| {layer} | {_pct(t)} | {_pct(i)} |" for layer, t, i in zip(lens.layers, lens_true, lens_implied)],
    )
    report.figure(
        _lens_plot(lens.layers, lens_true, lens_implied, len(conflict)), "logit_lens.png", "logit lens at the audio tokens",
        "x: LLM layer l, read after the block (`blocks.{l}.hook_resid_post`); y: share of the "
        f"{len(conflict)} counterfactual clips whose top sound word over their audio positions is the true sound "
        f"(circles) or the sound the picture implies (squares). Dotted: chance ({_pct(1 / K)}). No bands: each point "
        "is one share over the clips.",
    )
    from hooked_avllm.toy.evaluate import decodability

    probe = decodability(omni, n_train=4 * n_clips, n_test=2 * n_clips, seed=seed + 1)
    report.numbers["probe"] = {k: probe[k] for k in ("layers", "probe_audio_true", "probe_last_true", "probe_last_visual")}
    report.section(
        "E2b: a linear probe finds the true sound",
        f"Logistic regression on counterfactual clips ({probe['n_train']} to train, {probe['n_test']} to test; "
        f"chance {_pct(probe['chance'])}): the true sound from the mean residual over the audio positions, and the "
        "true / the picture's sound from the last prompt position (where the answer starts).", "",
        "| layer | audio positions: true sound | last prompt position: true sound | last prompt position: picture's sound |",
        "|---|---|---|---|",
        *[f"| {layer} | {_pct(a)} | {_pct(t)} | {_pct(v)} |" for layer, a, t, v in zip(
            probe["layers"], probe["probe_audio_true"], probe["probe_last_true"], probe["probe_last_visual"])],
    )


def _knockout(s: ToyStudy) -> None:
    """E3: knockout sweep while answering "What do you hear?"."""
    omni, conflict, report = s.omni, s.conflict, s.report
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
        f"Share of the {len(conflict)} answers naming the true sound; without knockout {_pct(sweep.baseline.mean())}. "
        "generated->video blocks the attention of the answer's tokens (and the last prompt position) to the video "
        "tokens in the window's layers; generated->audio to the audio tokens.", "",
        "| layers | " + " | ".join(sweep.rule_names) + " |", "|---" * (len(sweep.rule_names) + 1) + "|", *rows,
    )
    report.figure(
        sweep.plot(ylabel="share naming the true sound"), "knockout.png", "knockout sweep",
        "x: the window of LLM layers whose attention is blocked (first-last layer); y: share of the "
        f"{len(conflict)} clips whose answer names the true sound. One line per rule: the mean over clips, with ± one "
        "standard error of that mean over the clips; dashed: the same share without knockout.",
    )


def _patching(s: ToyStudy) -> None:
    """Activation patching from audio-only runs into the conflicting runs, scored at the sound word."""
    omni, conflict, report = s.omni, s.conflict, s.report
    n_layers = omni.cfg.n_layers
    from hooked_avllm.analysis import logit_diff, patching_sweep

    pairs = conflict[: min(PATCHING_PAIRS, s.n_clips)]
    sources = [prepare_clips(omni, [Clip("audio_only", None, c.audio, None, c.sound)], "hear") for c in pairs]
    targets = [prepare_clips(omni, [c], "hear") for c in pairs]
    metrics = [logit_diff(c.sound_word, c.implied_sound_word, omni) for c in pairs]
    patched = {
        where: patching_sweep(omni, sources, targets, metrics, modality=modality, answer_prefix=ANSWER_PREFIX,
                              progress=False)
        for where, modality in (("audio positions", "audio"), ("answer position", "last"))
    }
    gaps = patched["audio positions"].gaps  # the same unpatched runs in both sweeps
    unforced = _gaps_without_prefix(omni, sources, targets, metrics)
    report.numbers["patching_restoration"] = {
        where: {c: sweep.restoration[i].tolist() for i, c in enumerate(sweep.row_labels)} for where, sweep in patched.items()
    }
    report.numbers["patching_gap"] = {
        "answer_prefix": ANSWER_PREFIX, "at_the_sound_word": gaps.gap.tolist(), "noise_floor": gaps.floor.tolist(),
        "check": gaps.verdicts(), "at_the_last_prompt_position": unforced.gap.tolist(),
        "check_at_the_last_prompt_position": unforced.verdicts(),
    }
    report.section(
        "Activation patching: audio-only run -> audio + conflicting video",
        "The same sound alone (source) and with a conflicting picture (target), \"What do you hear?\", with the "
        f"answer's first words \"{ANSWER_PREFIX}\" teacher-forced after both prompts (`answer_prefix=`). Metric: the "
        "logit of the true sound minus the logit of the picture's sound at the last forced token, where the next "
        "token is the sound word. One component and layer at a time is copied from the source into the target, at "
        "the audio positions (k-th audio token to k-th audio token) or at the answer position (the last forced token, "
        f"\"hear\"). Restoration 0 = the conflicting run, 1 = the audio-only run (mean over {len(pairs)} clip pairs).",
        "", *_gap_lines(pairs, gaps, unforced),
        "", "Restoration:", "",
        "| positions | component | " + " | ".join(f"L{layer}" for layer in range(n_layers)) + " |",
        "|---|---" + "|---" * n_layers + "|",
        *[f"| {where} | {c} | " + " | ".join(f"{float(v):.2f}" for v in sweep.restoration[i]) + " |"
          for where, sweep in patched.items() for i, c in enumerate(sweep.row_labels)],
        "", f"{sum(sweep.n_forwards for sweep in patched.values())} patched forward passes in all (one per layer and "
        "clip pair: the components run as a batch).",
    )
    weak = f", {len(gaps.weak.nonzero())} with a weak gap" if bool(gaps.weak.any()) else ""
    for where, sweep in patched.items():
        title = (f"Activation patching at the {where}: restoration of\nlogit(true sound) - logit(picture's sound) at "
                 f"the sound word after '{ANSWER_PREFIX}'\nmean of {len(pairs)} pairs{weak}")
        report.figure(
            sweep.plot(title=title), "patching_" + where.split()[0] + ".png", f"patching at the {where}",
            f"Patched at the {where}. Rows: the component copied from the audio-only run (resid_pre: the residual "
            "stream entering the layer; attn_out / mlp_out: the layer's attention / MLP output); columns: LLM layer. "
            "Colour: restoration of the logit difference true sound - picture's sound at the sound word (after "
            f"\"{ANSWER_PREFIX}\"), the mean over the {len(pairs)} pairs: 0 (white) = the conflicting run unchanged, "
            "1 (red) = the audio-only run's value, negative (blue) = further from it. No per-pair spread is drawn: "
            "the table of gaps above gives each pair's.",
        )


def _gap_lines(pairs: list, gaps: Any, unforced: Any) -> list[str]:
    """The report's table of each pair's clean-corrupt gap, at the sound word and at the last prompt position."""
    rows = [f"| {i} | {c.visible_name} + sound of {c.sound_word} | {float(unforced.gap[i]):.2f} ({unforced.verdicts()[i]}) "
            f"| {float(gaps.source[i]):.2f} | {float(gaps.target[i]):.2f} | {float(gaps.gap[i]):.2f} "
            f"| {float(gaps.floor[i]):.2f} | {gaps.verdicts()[i]} |" for i, c in enumerate(pairs)]
    n_weak, n_unforced_weak = int(gaps.weak.sum()), int(unforced.weak.sum())
    return [
        "Why at the sound word: at the last prompt position the toy says \"I\" with probability 1, so the two runs "
        "differ there by little more than noise. The table gives each pair's clean-corrupt gap (the metric on the "
        "source run minus on the target run: restoration's denominator) at both places. A gap at or below the "
        "noise floor (the typical logit difference of two random tokens at that position) is tiny, one of the "
        "other sign than most pairs' is wrong, and restoration is noise in both.", "",
        "| pair | clip | gap at the last prompt position | source at the sound word | target at the sound word "
        "| gap at the sound word | noise floor | check |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"At the sound word **{n_weak} of {len(pairs)}** pairs have a tiny or wrong-sign gap (gaps "
        f"{float(gaps.gap.min()):.1f} to {float(gaps.gap.max()):.1f} logits); at the last prompt position "
        f"{n_unforced_weak} of {len(pairs)} would (gaps {float(unforced.gap.min()):.2f} to "
        f"{float(unforced.gap.max()):.2f}).",
    ]


@torch.no_grad()
def _gaps_without_prefix(model: Any, sources: list, targets: list, metrics: list) -> Any:
    """Each pair's gap and check at the last prompt position: what scoring there would divide by."""
    from hooked_avllm.analysis.metrics import PairGaps, final_logits, measure_pair

    measures = []
    for source, target, metric in zip(sources, targets, metrics):
        source_logits, target_logits = model(source), model(target)
        measures.append(measure_pair(metric, final_logits(source_logits, source), final_logits(target_logits, target),
                                     float(metric(source_logits, source).mean()), float(metric(target_logits, target).mean())))
    return PairGaps.of(measures)


def _shift_and_heatmap(s: ToyStudy) -> None:
    """E4: token shift against the vision-language base, and a frame heatmap."""
    omni, base, conflict, report = s.omni, s.base, s.conflict, s.report
    n_clips = s.n_clips
    from hooked_avllm.analysis import attention_to_video, frame_heatmap, plot_frame_heatmaps, shift_summary, token_shift
    from hooked_avllm.inputs import teacher_forced_inputs

    shifts = []
    for c in conflict[: min(8, n_clips)]:
        a, b = prepare_clips(omni, [c], "describe"), prepare_clips(base, [c], "describe", audio=False)
        shifts.append(token_shift(omni, a, base, b, max_new_tokens=12))
    tables = [r.table() for r in shifts]
    sound_rows = [t[t.decoded.str.strip().isin(SOUND_WORDS)] for t in tables]
    pooled, sounds = shift_summary(tables), shift_summary(sound_rows)
    report.numbers["token_shift"] = {"all_tokens": pooled, "sound_words": sounds}
    clip, shift, omni_inputs = conflict[0], shifts[0], prepare_clips(omni, [conflict[0]], "describe")
    shift_rows = [f"| {_cell(r.decoded)} | {r.label} | {r.rank} | {r.kl:.2g} |" for r in shift.table().itertuples()]
    report.section(
        "E4: token shift against the vision-language base",
        f"The toy Omni's captions of {len(shifts)} counterfactual clips (\"{QUESTIONS['describe']}\"), "
        "teacher-forced through the base model given the same video and no audio. A caption token is unshifted "
        f"when it is the base's top choice too, marginal when it is within the base's top {shift.marginal_k}, shifted "
        f"otherwise. Over all caption tokens: {_pct(pooled['unshifted'])} unshifted, {_pct(pooled['within_top_k'])} "
        f"within the base's top {shift.marginal_k}; over the sound words alone ({sounds['n_tokens']} tokens): "
        f"{_pct(sounds['unshifted'])} unshifted, {_pct(sounds['within_top_k'])} within the top {shift.marginal_k} — the "
        "AVLLM names the sound its base would guess from the picture.", "",
        f"First clip ({clip.visible_name} + sound of {clip.sound_word}); A = the toy Omni (video and its sound), "
        "B = the base (video only):", "",
        "| token | label | rank under B (0 = B's top choice) | KL(A \\|\\| B), nats |", "|---|---|---|---|", *shift_rows,
    )
    report.figure(
        shift.plot(), "token_shift.png", "token shift of the first clip's caption",
        "x: the caption's tokens, in order. Top: KL(A || B) in nats between the next-token distributions of "
        "A = the toy Omni (video with its sound) and B = the base (the same video, no audio) before each token. "
        "Bottom: the token's rank under B (0 = B's top choice, as in the table); the dashed line is the threshold "
        f"between marginal (rank below {shift.marginal_k}) and shifted. Colours: the token's label.",
    )
    forced = teacher_forced_inputs(omni_inputs, shift.caption_ids)
    scores = attention_to_video(omni, forced, queries="generated")
    heat = frame_heatmap(omni, forced, scores)  # each video token's score on its frame's cell
    fig = plot_frame_heatmaps(clip.frames, heat, title="Attention from the caption to the video tokens")
    n_layers, n_heads = omni.cfg.n_layers, omni.cfg.text.n_heads
    report.figure(
        fig, "frame_heatmap.png", "frame heatmap",
        f"The first clip ({clip.visible_name} + sound of {clip.sound_word}). Each panel is one frame group (the 2 "
        "consecutive frames the model turns into one set of video tokens), drawn over its first frame and titled "
        "with its time. The colour of a cell is the attention from the caption's tokens to the video token of that "
        f"cell, averaged over the caption's tokens, all {n_layers} LLM layers and all {n_heads} heads; one colour "
        "scale for all panels (the colour bar).",
    )


TOY_STEPS = (_captions, _attention_share, _lens_and_probe, _knockout, _patching, _shift_and_heatmap)


def _params(model: Any) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"


def _lens_plot(layers: list[int], true: list[float], implied: list[float], n_clips: int) -> Any:
    from hooked_avllm.analysis.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(layers, true, marker="o", label="true sound")
    ax.plot(layers, implied, marker="s", label="picture's sound")
    ax.axhline(1 / K, color="grey", linestyle=":", linewidth=1, label=f"chance (1/{K})")
    ax.set_xticks(list(layers))
    ax.set_xlabel("LLM layer (residual after the block)")
    ax.set_ylabel(f"share of the {n_clips} clips")
    ax.set_ylim(0, 1.05)
    ax.set_title("Logit lens at the audio tokens: top sound word")
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------ real


def _run_real(report: Report, name: str, video: str, audio: str | None, progress: bool) -> Path:
    """The same experiments on a real checkpoint and the user's clip (with its own sound, and with ``audio``'s)."""
    from hooked_avllm import HookedAVLLM
    from hooked_avllm.analysis import KnockoutRule, attention_share, generate_with_knockout, logit_lens

    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = HookedAVLLM.from_pretrained(name, dtype=dtype, device=device)
    if model.cfg.audio is None or model.cfg.vision is None:
        raise ValueError(f"--model {name!r} is not an audio-visual model (it lacks an audio or a vision tower); the demo "
                         "compares what it hears with what it sees")
    steps = tqdm(total=5, desc="demo", disable=not progress)
    prompt = "Describe what you see and hear."
    own = model.prepare(prompt=prompt, video=video)  # frames sized by the checkpoint's preprocessing, its sound track
    lines = [f"Your clip with its own sound (`{video}`): {_caption(model, own)}"]
    swapped = None
    if audio is not None:
        swapped = model.prepare(prompt=prompt, video=_frames_with(model, video, audio))
        lines.append(f"Your clip's frames with the sound of `{audio}`: {_caption(model, swapped)}")
    report.section(f"Captions ({name})", *lines)
    steps.update(1)
    target, which = (swapped, f"your clip's frames with the sound of `{audio}`") if swapped is not None else \
        (own, "your clip with its own sound")
    shares = attention_share(model, target, max_new_tokens=32)
    mean = shares.mean()
    report.section("Attention share of the generated tokens", f"Captioning {which}. Mean over layers: " + ", ".join(
        f"{kind} {float(mean[:, k].mean()):.2f}" for k, kind in enumerate(shares.kinds)))
    report.figure(
        shares.plot(title="Attention share of the generated tokens, by key kind"), "attention_share.png",
        "attention share per layer",
        "x: LLM layer; y: share of the generated tokens' attention that goes to each kind of key, averaged over "
        "heads and generated tokens. With one clip the shaded band spans the minimum to the maximum over the "
        "generated tokens (the legend says so).",
    )
    steps.update(1)
    lens = logit_lens(model, target, positions="audio", apply_final_norm=False, progress=progress)
    middle = len(lens.hook_names) // 2
    words = [t[0] for t in lens.top_tokens[middle][:: max(1, lens.n_pos // 20)]]
    report.section("Logit lens on the audio tokens", f"Top tokens at {lens.hook_names[middle]} ({which}, every "
                   f"{max(1, lens.n_pos // 20)}th audio token): {' '.join(words)}")
    steps.update(1)
    n = model.cfg.n_layers
    knocked = generate_with_knockout(model, target, KnockoutRule("generated", "video", (n // 2, n)), 32,
                                     last_prompt_as_generated=True)
    text = model.tokenizer.decode(knocked[0, target.input_ids.shape[1]:], skip_special_tokens=True)
    report.section("Knockout", f"{which[0].upper() + which[1:]}, the generated tokens' attention to the video blocked "
                   f"in layers {n // 2}-{n - 1}: {text}")
    steps.update(1)
    if audio is not None:
        _real_patching(report, model, video, audio, progress)
    steps.update(1)
    steps.close()
    report.section("Run", f"{time.perf_counter() - start:.0f} s on {device}.")
    return report.write(f"hooked_avllm demo on {name}")


def _frames_with(model: Any, video: str, audio: str) -> Any:
    """``video``'s frames (the checkpoint's own frame sizes) with the sound of ``audio``."""
    from hooked_avllm.inputs import load_audio

    return model.load_video(video, with_audio=False, audio=load_audio(audio))


def _real_patching(report: Report, model: Any, video: str, audio: str, progress: bool) -> None:
    """Patching from ``audio`` alone into your clip's frames with ``audio``'s sound, scored after "I hear"."""
    from hooked_avllm.analysis import kl_to_source, patching_sweep
    from hooked_avllm.inputs import teacher_forced_inputs

    source = model.prepare(prompt=QUESTIONS["hear"], audio=_sound(audio))
    target = model.prepare(prompt=QUESTIONS["hear"], video=_frames_with(model, video, audio))
    forced = teacher_forced_inputs(source, model.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False))
    with torch.no_grad():
        metric = kl_to_source(model(forced), forced)  # the audio-only run's prediction of the word after the prefix
    sweep = patching_sweep(model, source, target, metric, answer_prefix=ANSWER_PREFIX, progress=progress)
    kl, floor, check = float(-sweep.gaps.gap[0]), float(sweep.gaps.floor[0]), sweep.gaps.verdicts()[0]
    verdict = (f"{kl:.3f} nats, at or below the noise floor {floor:.2f}: the two runs already agree there, so the "
               "sweep measures nothing" if check == "tiny gap" else f"{kl:.2f} nats ({check})")
    report.section(
        "Activation patching: the other sound alone -> your clip's frames with that sound",
        f"\"{QUESTIONS['hear']}\" with \"{ANSWER_PREFIX}\" teacher-forced after the prompt of both runs "
        "(`answer_prefix=`), whatever the model would say. Metric: the KL divergence from the audio-only run's "
        "next-token distribution at the last forced token (where the sound is named), after patching each layer's "
        "component at the audio positions (lower: closer to what the model says from the sound alone). "
        f"Clean-corrupt gap (the KL of the unpatched run): {verdict}.",
    )
    report.figure(
        sweep.plot(normalized=False, title=f"Activation patching at the audio positions: KL to the audio-only run\n"
                   f"at the word after '{ANSWER_PREFIX}' (lower: closer; unpatched {kl:.2f})"), "patching.png",
        "patching at the audio positions",
        "Rows: the component copied from the audio-only run at the audio positions (resid_pre: the residual stream "
        "entering the layer; attn_out / mlp_out: the layer's attention / MLP output); columns: LLM layer. Colour: the "
        f"KL divergence (nats) from the audio-only run's next-token distribution after \"{ANSWER_PREFIX}\"; the "
        f"unpatched run's is {kl:.3f}, 0 means the audio-only run's prediction is fully restored.",
    )


def _sound(path: str) -> Any:
    from hooked_avllm.inputs import load_audio

    return load_audio(path)


def _caption(model: Any, inputs: Any, n: int = 48) -> str:
    tokens = model.generate(inputs, max_new_tokens=n)
    return model.tokenizer.decode(tokens[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)


__all__ = ["Report", "run_demo"]
