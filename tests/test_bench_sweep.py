"""``bench/bench_sweep.py`` on every family's tiny model (CPU, float32): the study's sweep shape
(14 windows x 2 rules, here over the tiny depth) through ``knockout_sweep`` equals one generation
per condition, and every condition's tokens are the top tokens of a teacher-forced forward under
its knockout. The same script times the sweep at real dimensions on a GPU (docs/benchmarks.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_sweep import study_windows, sweep_timing  # noqa: E402


def test_study_windows_are_fourteen_positions_of_four_layers_at_the_study_depth():
    windows = study_windows(36)
    assert len(windows) == 14 and windows[0] == (0, 4) and windows[-1] == (32, 36)
    assert all(end - start == 4 for start, end in windows)
    assert study_windows(2) == [(0, 1), (1, 2)]


def test_the_shared_sweep_equals_one_generation_per_condition(family, model):
    clips = [family.clip(model, seconds=2, seed=i) for i in range(2)]
    with torch.no_grad():
        result = sweep_timing(model, clips, 3)
    assert result["conditions"] == 1 + 2 * len(result["windows"]) and result["shared_prefill_clips"] == 2
    assert result["conditions_with_equal_tokens"] == 1.0 and result["baseline_equal_tokens"] == 1.0
    for way in ("shared", "per_condition"):
        assert result["forced_margins_clip_0"][way]["top1_agreement"] == 1.0, way
