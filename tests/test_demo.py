"""The main job: ``hooked-avllm demo`` runs the study in miniature on the shipped toy model."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from hooked_avllm.__main__ import main

PLOTS = ("attention_share.png", "logit_lens.png", "knockout.png", "patching_audio.png", "patching_answer.png",
         "token_shift.png", "frame_heatmap.png")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One run of the demo on 4 clips (what it printed, the folder it wrote), shared by the tests below."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--clips", "4", "--out", str(out), "--no-progress"]) == 0
    return printed.getvalue(), out


def test_demo_writes_the_report_with_its_numbers_and_plots(demo_run):
    printed, out = demo_run
    report = (out / "report.md").read_text()
    assert report in printed
    numbers = json.loads((out / "numbers.json").read_text())
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 5000, plot
        assert f"]({plot})" in report
    for section in ("Captions and audio accuracy", "E1:", "E2:", "E2b:", "E3:", "E4:", "Activation patching"):
        assert section in report
    # the measured numbers are the ones the report shows
    assert f"**{100 * numbers['factual_hear_accuracy']:.0f}%** on factual" in report
    assert f"**{100 * numbers['counterfactual_follows_picture']:.0f}%** of the answers" in report
    shares = numbers["attention_share"]
    n_layers = len(shares["audio"])
    for layer in range(n_layers):
        assert abs(sum(shares[kind][layer] for kind in shares) - 1) < 1e-4
    assert len(numbers["lens_true_sound_by_layer"]) == n_layers
    for where in ("audio positions", "answer position"):
        assert set(numbers["patching_restoration"][where]) == {"resid_pre", "attn_out", "mlp_out"}
    # patching the whole residual stream at the answer position in the last layer restores the audio-only answer
    assert numbers["patching_restoration"]["answer position"]["resid_pre"][-1] > 0.5
    assert set(numbers["token_shift"]["all_tokens"]) >= {"unshifted", "marginal", "shifted", "n_tokens"}
    assert numbers["seconds"] < 120
    # every figure has a section of its own saying what it shows
    assert report.count("### Figure: ") == len(PLOTS)
    for plot in PLOTS:
        section = report[: report.index(f"]({plot})")].rsplit("### Figure: ", 1)[1]
        assert "x:" in section or "Rows:" in section or "panel" in section, plot


def test_demo_scores_patching_at_the_sound_word(demo_run):
    """The patching metric is read after the teacher-forced "I hear", where the sound word comes: the
    gap per pair matches a forward pass computed here, and the report shows it per pair."""
    import torch

    from hooked_avllm.inputs import teacher_forced_inputs
    from hooked_avllm.toy import ToyScenes, load_toy
    from hooked_avllm.toy.data import Clip
    from hooked_avllm.toy.evaluate import prepare_clips

    out = demo_run[1]
    report, numbers = (out / "report.md").read_text(), json.loads((out / "numbers.json").read_text())
    gap = numbers["patching_gap"]
    assert gap["answer_prefix"] == "I hear" and len(gap["at_the_sound_word"]) == 4
    omni = load_toy("omni")
    clip = ToyScenes(1000).clip("counterfactual", 0)
    prefix = omni.tokenizer("I hear", add_special_tokens=False)["input_ids"]
    true_id, picture_id = (omni.tokenizer.convert_tokens_to_ids(w) for w in (clip.sound_word, clip.implied_sound_word))
    values = []
    for inputs in (prepare_clips(omni, [Clip("audio_only", None, clip.audio, None, clip.sound)], "hear"),
                   prepare_clips(omni, [clip], "hear")):
        forced = teacher_forced_inputs(inputs, prefix)
        with torch.no_grad():
            logits = omni(forced)[0, -1]
        assert omni.tokenizer.convert_ids_to_tokens(int(forced.input_ids[0, -1])) == "hear"
        values.append(float(logits[true_id] - logits[picture_id]))
    assert abs(gap["at_the_sound_word"][0] - (values[0] - values[1])) < 1e-3
    assert gap["at_the_sound_word"][0] > 1  # the audio-only run names the true sound far more than the conflicting one
    assert f"| 0 | {clip.visible_name} + sound of {clip.sound_word} |" in report
    assert "tiny or wrong-sign gap" in report


def test_demo_on_a_checkpoint_with_video_and_audio_files(tmp_path):
    """``--model --video --audio``: the real-checkpoint path, here on the shipped toy checkpoint and
    media files written by the test (an mp4 with its sound track and another sound as a wav)."""
    import numpy as np
    import soundfile
    from test_inputs_support import write_mp4

    from hooked_avllm.toy import OMNI_PATH

    mp4 = write_mp4(tmp_path / "clip.mp4", seconds=2.0, fps=10, size=(112, 112), tone=440.0)
    t = np.arange(32000) / 16000
    soundfile.write(tmp_path / "other.wav", 0.3 * np.sin(2 * np.pi * 2000 * t), 16000)
    out = tmp_path / "real"
    assert main(["demo", "--model", str(OMNI_PATH), "--video", str(mp4), "--audio", str(tmp_path / "other.wav"),
                 "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "Your clip with its own sound" in report and "Your clip's frames with the sound of" in report
    assert "Factual" not in report and "Knockout" in report
    for plot in ("attention_share.png", "patching.png"):
        assert (out / plot).stat().st_size > 5000
        assert f"]({plot})" in report
    assert report.count("### Figure: ") == 2


def test_the_readmes_patching_gaps_are_the_demo_pairs():
    """The README's figures for the demo's eight patching pairs (seed 1000, clips 0-7): the gap at the
    last prompt position (range of its absolute value, how many of the wrong sign) and after the
    teacher-forced "I hear", recomputed here with plain forward passes."""
    import re
    from pathlib import Path

    import torch

    from hooked_avllm.inputs import teacher_forced_inputs
    from hooked_avllm.toy import ToyScenes, load_toy
    from hooked_avllm.toy.data import Clip
    from hooked_avllm.toy.evaluate import prepare_clips

    omni = load_toy("omni")
    prefix = omni.tokenizer("I hear", add_special_tokens=False)["input_ids"]
    last, forced = [], []
    for i in range(8):
        clip = ToyScenes(1000).clip("counterfactual", i)
        ids = [omni.tokenizer.convert_tokens_to_ids(w) for w in (clip.sound_word, clip.implied_sound_word)]
        runs = (prepare_clips(omni, [Clip("audio_only", None, clip.audio, None, clip.sound)], "hear"),
                prepare_clips(omni, [clip], "hear"))
        with torch.no_grad():
            at_last = [omni(x)[0, -1] for x in runs]
            at_word = [omni(teacher_forced_inputs(x, prefix))[0, -1] for x in runs]
        last.append(float((at_last[0] - at_last[1])[ids[0]] - (at_last[0] - at_last[1])[ids[1]]))
        forced.append(float((at_word[0] - at_word[1])[ids[0]] - (at_word[0] - at_word[1])[ids[1]]))
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    stated = re.search(r"the audio-only vs conflict gap there is ([\d.]+) to ([\d.]+) logits in absolute value, (\w+) of "
                       r"the wrong sign; after \"I hear\" it is ([\d.]+) to ([\d.]+) logits", readme)
    assert stated, "the README states the demo pairs' gaps"
    words = {"no": 0, "one": 1, "two": 2, "three": 3, "four": 4}
    absolute = [abs(g) for g in last]
    assert stated.group(1, 2) == (f"{min(absolute):.2f}", f"{max(absolute):.2f}")
    assert words[stated.group(3)] == sum(g < 0 for g in last)
    assert stated.group(4, 5) == (f"{min(forced):.1f}", f"{max(forced):.1f}")
