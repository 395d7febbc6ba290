"""Frame heatmaps (E4): token -> grid cell mapping, attention to video against a full pattern cache, the plot;
on every family (each family's test kit in ``tests/kits/``)."""

import numpy as np
import pytest
import torch

from hooked_avllm.analysis.heatmap import (
    attention_to_video,
    frame_heatmap,
    plot_frame_heatmaps,
    query_mask,
    upsample_grid,
    video_token_grid,
)
from hooked_avllm.inputs import teacher_forced_inputs
from hooked_avllm.inputs import TokenLayout, Video
from hooked_avllm.inputs import Segment
from kits import families_where

def assert_bijection(layout, batch=0, video=0):
    """Every video token lands in exactly one cell and every cell receives exactly one token."""
    n_tokens = len(layout.spans_of("video", batch=batch)[video].positions)
    grid = video_token_grid(layout, torch.arange(n_tokens, dtype=torch.float32), batch=batch, video=video)
    assert not torch.isnan(grid).any()
    assert grid.numel() == n_tokens
    assert sorted(grid.flatten().long().tolist()) == list(range(n_tokens))
    return grid


# video tokens that are cells of the layout's grid (Qwen's merged patches, VideoLLaMA2's connector grid)
on_grid = families_where(lambda kit: kit.video_tokens_on_grid)


@on_grid
def test_tiny_clip_grid_is_a_bijection(family, model):
    inputs = family.clip(model, seconds=3, seed=0)
    grid = assert_bijection(inputs.layout)
    assert grid.shape == family.answers.clip_grid  # the 3-s clip's token grid
    assert grid[1].flatten().tolist() == [4.0, 5.0, 6.0, 7.0]  # row-major within a frame group
    # per-position scores land on the same cells; non-video positions are ignored
    seq = inputs.input_ids.shape[1]
    scores = torch.arange(seq, dtype=torch.float32)
    video_positions = inputs.layout.spans_of("video")[0].positions
    assert torch.equal(video_token_grid(inputs.layout, scores).flatten(), scores[video_positions])
    assert torch.equal(video_token_grid(inputs.layout, scores[None]), video_token_grid(inputs.layout, scores))
    with pytest.raises(ValueError, match="per position"):
        video_token_grid(inputs.layout, torch.zeros(5))


# audio inside the video's bracket, the layout parsed from the ids (Qwen: 2-s chunks; Qwen3-Omni: token by token)
@families_where(lambda kit: kit.audio_inside_video_bracket and kit.lays_out_bare_ids)
def test_bigger_grid_with_interleaved_audio_is_a_bijection(family, model):
    spec = model.architecture.input_spec(model.cfg)
    tok = model.cfg.tokens
    grid_thw = (4, 12, 16)  # 4 frame groups of 6 x 8 cells, with 4 s of audio
    n_audio = 4 * family.audio_tokens_per_second
    runs = family.audio_in_video_runs(model, grid_thw, 1.0, n_audio)  # the family's merge rule
    assert runs == family.answers.interleaved_runs
    body = [t for kind, count in runs for t in [tok.video if kind == "video" else tok.audio] * count]
    ids = torch.tensor([[1, 2, tok.vision_start, tok.audio_start, *body, tok.audio_end, tok.vision_end, 3]])
    frames = 100 * 4  # mel frames whose audio token count (the family's rule) is n_audio
    features = torch.zeros(1, 128, frames)
    assert int(spec.rules.audio_token_counts(torch.tensor([frames]))[0]) == n_audio
    layout = model.layout_of(ids, None, video_grid_thw=torch.tensor([grid_thw]), video_second_per_grid=torch.tensor([1.0]),
                             input_features=features, use_audio_in_video=True)  # the family parses the ids
    grid = assert_bijection(layout)
    assert grid.shape == (4, 6, 8)


@families_where(lambda kit: kit.release_video_grid is not None)
def test_release_sized_connector_grid_is_a_bijection(family, model):
    """A release-sized video laid out from segments (VideoLLaMA2.1-AV's release: 16 frames of 27 x 27
    SigLIP patches -> the STC connector's 8 x 13 x 13 tokens), time-major, row-major within a frame
    group, followed by the audio tokens."""
    t, h, w = family.release_video_grid
    order = torch.arange(t * h * w)
    group, row, col = order // (h * w), (order % (h * w)) // w, order % w
    tok = model.cfg.tokens
    segments = [Segment.text([1, 2]), Segment("video", n_tokens=len(order), token_id=tok.video, time=group.float(),
                                              frame_group=group, row=row, col=col),
                Segment("audio", n_tokens=16, token_id=tok.audio, time=(torch.arange(16) // 8) * 0.16, in_video=0),
                Segment.text([3])]
    layout = TokenLayout.from_segments([segments], pad_id=0)
    grid = assert_bijection(layout)
    assert grid.shape == (t, h, w)
    assert grid[3, 5].tolist() == [float(3 * h * w + 5 * w + c) for c in range(w)]
    no_cells = TokenLayout.from_segments([[Segment("video", n_tokens=4, token_id=tok.video)]], pad_id=0)
    with pytest.raises(ValueError, match="no grid cell"):
        video_token_grid(no_cells, torch.zeros(4))


@on_grid
def test_each_row_of_a_padded_batch_has_its_own_grid(family, model):
    # a left-padded batch of two clips: each row's video on its own grid
    batch = family.batch(model, [family.clip(model, seed=1, **family.other_length), family.clip(model, seconds=3, seed=2)])
    assert bool((batch.attention_mask == 0).any())
    shapes = [family.answers.other_clip_grid, family.answers.clip_grid]
    assert assert_bijection(batch.layout, batch=0).shape == shapes[0]
    assert assert_bijection(batch.layout, batch=1).shape == shapes[1]
    with pytest.raises(ValueError, match="video"):
        video_token_grid(batch.layout, torch.zeros(8), batch=0, video=1)


def test_frame_heatmap_keeps_every_score_on_the_frames_of_each_row(family, model):
    """The family's placement (the layout's grid, or MiniCPM-o's resampler attention onto the
    patches): each row's grid has its clip's shape, holds exactly the row's video score mass, starts
    group g at frame g * frames_per_group at the layout's time, and equals the layout grid where
    video tokens are grid cells."""
    batch = family.batch(model, [family.clip(model, seed=1, **family.other_length), family.clip(model, seconds=3, seed=2)])
    scores = attention_to_video(model, batch, queries="last")
    for row, shape in enumerate([family.answers.other_clip_grid, family.answers.clip_grid]):
        heat = frame_heatmap(model, batch, scores, batch=row)
        assert heat.grid.shape == shape
        video = batch.layout.spans_of("video", batch=row)[0].positions
        torch.testing.assert_close(heat.grid.nansum(), scores[row, video].sum(), rtol=1e-5, atol=0)
        assert heat.first_frame.tolist() == [g * family.frames_per_group for g in range(shape[0])]
        groups = batch.layout.frame_group[row, video]
        times = batch.layout.video_time[row, video]
        assert torch.equal(heat.time, torch.stack([times[groups == g][0] for g in range(shape[0])]))
        if family.video_tokens_on_grid:
            assert torch.equal(heat.grid, video_token_grid(batch.layout, scores, batch=row))
    with pytest.raises(ValueError, match="video=1 does not exist"):
        frame_heatmap(model, batch, scores, batch=0, video=1)


def test_frame_heatmap_plot_of_every_family(family, model, tmp_path):
    inputs = family.clip(model, seconds=3, seed=0)
    heat = frame_heatmap(model, inputs, attention_to_video(model, inputs))
    frames = torch.rand(int(heat.first_frame.max()) + 1, 3, 56, 56)
    fig = plot_frame_heatmaps(frames, heat, path=tmp_path / "heat.png")
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes[-1].get_ylabel().replace("\n", " ") == heat.cell


@torch.no_grad()
def by_hand(model, inputs, qmask, layers, heads):
    """Mean attention to every key from a full hook_pattern cache."""
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.startswith("blocks.") and n.endswith("hook_pattern"))
    rows = []
    for b in range(qmask.shape[0]):
        per_layer = [cache[f"blocks.{l}.attn.hook_pattern"][b][heads][:, qmask[b]] for l in layers]  # [head, q, key]
        rows.append(torch.stack(per_layer).mean(dim=(0, 1, 2)))
    return torch.stack(rows)  # [batch, key]


def test_attention_to_video_equals_the_full_pattern_cache(family, model):
    inputs = family.clip(model, seconds=3, seed=0)
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


def test_attention_to_video_last_query_in_a_padded_batch(family, model):
    batch = family.batch(model, [family.clip(model, seed=1, **family.other_length), family.clip(model, seconds=3, seed=2)])
    scores = attention_to_video(model, batch, queries="last")
    last = torch.zeros_like(batch.layout.video)
    last[:, -1] = True
    want = by_hand(model, batch, last, [0, 1], list(range(model.cfg.text.n_heads)))
    video = batch.layout.video
    assert (scores[video] - want[video]).abs().max() < 1e-6
    # the grid of row 0 holds the scores of its own video tokens
    if family.video_tokens_on_grid:
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
