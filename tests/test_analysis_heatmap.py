"""Frame heatmaps (E4): token -> grid cell mapping, attention to video against a full pattern cache, the plot."""

import numpy as np
import pytest
import torch
from analysis_support import batch_inputs, clip_inputs, tiny_model

from hooked_avllm.analysis.heatmap import (
    attention_to_video,
    plot_frame_heatmaps,
    query_mask,
    upsample_grid,
    video_token_grid,
)
from hooked_avllm.inputs import teacher_forced_inputs
from hooked_avllm.inputs import TokenLayout, Video
from hooked_avllm.inputs.interleave import audio_in_video_runs
from hooked_avllm.inputs.model_spec import ModelInputSpec


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


def assert_bijection(layout, batch=0, video=0):
    """Every video token lands in exactly one cell and every cell receives exactly one token."""
    n_tokens = len(layout.spans_of("video", batch=batch)[video].positions)
    grid = video_token_grid(layout, torch.arange(n_tokens, dtype=torch.float32), batch=batch, video=video)
    assert not torch.isnan(grid).any()
    assert grid.numel() == n_tokens
    assert sorted(grid.flatten().long().tolist()) == list(range(n_tokens))
    return grid


def test_tiny_clip_grid_is_a_bijection(model):
    inputs = clip_inputs(model, seconds=3, seed=0)  # audio interleaved with 3 frame groups of 2 x 2 cells
    grid = assert_bijection(inputs.layout)
    assert grid.shape == (3, 2, 2)
    assert grid[1].flatten().tolist() == [4.0, 5.0, 6.0, 7.0]  # row-major within a frame group
    # per-position scores land on the same cells; non-video positions are ignored
    seq = inputs.input_ids.shape[1]
    scores = torch.arange(seq, dtype=torch.float32)
    video_positions = inputs.layout.spans_of("video")[0].positions
    assert torch.equal(video_token_grid(inputs.layout, scores).flatten(), scores[video_positions])
    assert torch.equal(video_token_grid(inputs.layout, scores[None]), video_token_grid(inputs.layout, scores))
    with pytest.raises(ValueError, match="per position"):
        video_token_grid(inputs.layout, torch.zeros(5))


def test_bigger_grid_with_interleaved_audio_is_a_bijection(model):
    spec = ModelInputSpec.from_config(model.cfg)
    tok = model.cfg.tokens
    grid_thw, n_audio = (4, 12, 16), 100  # 4 frame groups of 6 x 8 cells, 4 s of audio
    runs = audio_in_video_runs(grid_thw, 1.0, n_audio, position_id_per_second=model.cfg.position_id_per_second,
                               seconds_per_chunk=model.cfg.seconds_per_chunk)
    body = [t for kind, count in runs for t in [tok.video if kind == "video" else tok.audio] * count]
    ids = torch.tensor([[1, 2, tok.vision_start, tok.audio_start, *body, tok.audio_end, tok.vision_end, 3]])
    layout = TokenLayout.from_input_ids(ids, None, spec, video_grid_thw=torch.tensor([grid_thw]),
                                        video_second_per_grid=torch.tensor([1.0]),
                                        audio_token_counts=torch.tensor([n_audio]), use_audio_in_video=True)
    grid = assert_bijection(layout)
    assert grid.shape == (4, 6, 8)
    # a second row with the tiny clip, left-padded in a batch: each row's video on its own grid
    batch = batch_inputs(model, [clip_inputs(model, seconds=2, seed=1), clip_inputs(model, seconds=3, seed=2)])
    assert assert_bijection(batch.layout, batch=0).shape == (2, 2, 2)
    assert assert_bijection(batch.layout, batch=1).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="video"):
        video_token_grid(batch.layout, torch.zeros(8), batch=0, video=1)


@torch.no_grad()
def by_hand(model, inputs, qmask, layers, heads):
    """Mean attention to every key from a full hook_pattern cache."""
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.startswith("blocks.") and n.endswith("hook_pattern"))
    rows = []
    for b in range(qmask.shape[0]):
        per_layer = [cache[f"blocks.{l}.attn.hook_pattern"][b][heads][:, qmask[b]] for l in layers]  # [head, q, key]
        rows.append(torch.stack(per_layer).mean(dim=(0, 1, 2)))
    return torch.stack(rows)  # [batch, key]


def test_attention_to_video_equals_the_full_pattern_cache(model):
    inputs = clip_inputs(model, seconds=3, seed=0)
    forced = teacher_forced_inputs(inputs, torch.tensor([10, 11, 12, 13, 14]))
    video = forced.layout.video
    scores = attention_to_video(model, forced, queries="generated", layers=[0, 1], heads=[1, 3])
    want = by_hand(model, forced, forced.layout.generated, [0, 1], [1, 3])
    assert (scores[video] - want[video]).abs().max() < 1e-6
    assert torch.isnan(scores[~video]).all()
    # a span of the caption (tokens 1..3), one layer, all heads
    span = query_mask(forced.layout, slice(1, 4))
    assert span[0].nonzero().flatten().tolist() == (forced.layout.generated[0].nonzero().flatten()[1:4]).tolist()
    scores = attention_to_video(model, forced, queries=slice(1, 4), layers=[-1])
    want = by_hand(model, forced, span, [1], list(range(model.cfg.text.n_heads)))
    assert (scores[video] - want[video]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="no generated"):
        attention_to_video(model, inputs, queries="generated")


def test_attention_to_video_last_query_in_a_padded_batch(model):
    batch = batch_inputs(model, [clip_inputs(model, seconds=2, seed=1), clip_inputs(model, seconds=3, seed=2)])
    scores = attention_to_video(model, batch, queries="last")
    last = torch.zeros_like(batch.layout.video)
    last[:, -1] = True
    want = by_hand(model, batch, last, [0, 1], list(range(model.cfg.text.n_heads)))
    video = batch.layout.video
    assert (scores[video] - want[video]).abs().max() < 1e-6
    # the grid of row 0 holds the scores of its own video tokens
    grid = video_token_grid(batch.layout, scores, batch=0)
    assert torch.equal(grid.flatten(), scores[0][batch.layout.spans_of("video", batch=0)[0].positions])


def test_plot_writes_png(tmp_path):
    grid = torch.rand(3, 2, 2)
    grid[2, 1, 1] = float("nan")
    video = Video(frames=torch.rand(6, 3, 56, 56) * 255, fps=2.0, sample_fps=2.0)
    plot_frame_heatmaps(video, grid, path=tmp_path / "heat.png", title="caption span")
    frames_hwc = (np.random.default_rng(0).random((5, 56, 56, 3)) * 255).astype(np.uint8)  # odd frame count
    plot_frame_heatmaps(frames_hwc, grid, path=tmp_path / "heat_hwc.png", mode="bilinear")
    for name in ("heat.png", "heat_hwc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    up = upsample_grid(grid[2], (56, 56))
    assert up.shape == (56, 56) and torch.isnan(up[28:, 28:]).all() and not torch.isnan(up[:28]).any()
    assert float(up[0, 0]) == float(grid[2, 0, 0])
    smooth = upsample_grid(grid[2], (56, 56), mode="bilinear")  # empty cells neither spread nor pull towards 0
    known = grid[2][~torch.isnan(grid[2])]
    assert torch.isnan(smooth[28:, 28:]).all()
    assert smooth[:28].min() >= known.min() - 1e-6 and smooth[:28].max() <= known.max() + 1e-6
