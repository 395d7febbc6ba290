"""The main job runs and reports what it measured."""

from hooked_avllm.__main__ import main


def test_demo_runs(capsys):
    assert main(["demo", "--seconds", "3"]) == 0
    out = capsys.readouterr().out
    assert "hook points" in out and "attention share" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2  # one row per LLM layer
    for _, audio, video, text in rows:
        assert abs(float(audio) + float(video) + float(text) - 1.0) < 2e-3  # shares sum to 1
