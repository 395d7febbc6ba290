"""The main job: ``hooked-avllm demo`` runs the study in miniature on the shipped toy model."""

from __future__ import annotations

import json

from hooked_avllm.__main__ import main

PLOTS = ("attention_share.png", "logit_lens.png", "knockout.png", "patching_audio.png", "patching_answer.png",
         "token_shift.png", "frame_heatmap.png")


def test_demo_writes_the_report_with_its_numbers_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--clips", "4", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert report in capsys.readouterr().out
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
    assert "Factual" in report and "Counterfactual" in report and "Knockout" in report
    for plot in ("attention_share.png", "patching.png"):
        assert (out / plot).stat().st_size > 5000
