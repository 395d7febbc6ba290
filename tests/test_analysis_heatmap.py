"""Frame heatmaps (E4): token -> grid cell mapping, attention to video against a full pattern cache, the plot;
on every family (tiny Qwen2.5-Omni and Qwen3-Omni thinkers and a tiny VideoLLaMA2.1-AV; see
``analysis_support.Family``)."""

import numpy as np
import pytest
import torch
from analysis_support import FAMILIES, Family

from hooked_avllm.analysis.heatmap import (
    attention_to_video,
    plot_frame_heatmaps,
    query_mask,
    upsample_grid,
    video_token_grid,
)
from hooked_avllm.architectures.qwen3_omni.positions import time_ordered_runs
from hooked_avllm.inputs import teacher_forced_inputs
from hooked_avllm.inputs import TokenLayout, Video
from hooked_avllm.inputs.interleave import audio_in_video_runs
from hooked_avllm.inputs.layout import Segment
from hooked_avllm.inputs.model_spec import ModelInputSpec

qwen_only = pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"], indirect=True)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return Family(request.param)


@pytest.fixture(scope="module")
def model(family):
    return family.model(seed=0)


def assert_bijection(layout, batch=0, video=0):
    """Every video token lands in exactly one cell and every cell receives exactly one token."""
    n_tokens = len(layout.spans_of("video", batch=batch)[video].positions)
    grid = video_token_grid(layout, torch.arange(n_tokens, dtype=torch.float32), batch=batch, video=video)
    assert not torch.isnan(grid).any()
    assert grid.numel() == n_tokens
    assert sorted(grid.flatten().long().tolist()) == list(range(n_tokens))
    return grid


# the tiny clip's token grid: the Qwen families 3 s at 1 frame group a second of 2 x 2 merged cells (audio
# interleaved in 2-s chunks / merged in time order); VideoLLaMA2's STC connector makes 4 frames of 4 x 4
# SigLIP patches into 2 x 2 x 2 tokens
CLIP_GRID = {"qwen2_5_omni": (3, 2, 2), "qwen3_omni": (3, 2, 2), "videollama2": (2, 2, 2)}


def test_tiny_clip_grid_is_a_bijection(family, model):
    inputs = family.clip(model, seconds=3, seed=0)
    grid = assert_bijection(inputs.layout)
    assert grid.shape == CLIP_GRID[family.name]
    assert grid[1].flatten().tolist() == [4.0, 5.0, 6.0, 7.0]  # row-major within a frame group
    # per-position scores land on the same cells; non-video positions are ignored
    seq = inputs.input_ids.shape[1]
    scores = torch.arange(seq, dtype=torch.float32)
    video_positions = inputs.layout.spans_of("video")[0].positions
    assert torch.equal(video_token_grid(inputs.layout, scores).flatten(), scores[video_positions])
    assert torch.equal(video_token_grid(inputs.layout, scores[None]), video_token_grid(inputs.layout, scores))
    with pytest.raises(ValueError, match="per position"):
        video_token_grid(inputs.layout, torch.zeros(5))


@qwen_only  # audio inside the video's bracket is the Qwen layouts' (2-s chunks; Qwen3-Omni: token by token)
def test_bigger_grid_with_interleaved_audio_is_a_bijection(family, model):
    spec = model.architecture.input_spec(model.cfg)
    tok = model.cfg.tokens
    grid_thw = (4, 12, 16)  # 4 frame groups of 6 x 8 cells, with 4 s of audio
    if family.name == "qwen2_5_omni":  # 25 tokens a second, each 2-s chunk's video then its audio
        n_audio = 100
        runs = audio_in_video_runs(grid_thw, 1.0, n_audio, position_id_per_second=model.cfg.position_id_per_second,
                                   seconds_per_chunk=model.cfg.seconds_per_chunk)
    else:  # 13 AuT tokens a second, each frame group's 48 tokens before the audio token of its second
        n_audio = 4 * 13
        runs = time_ordered_runs(grid_thw, 1.0, n_audio, spec)
        assert runs == [("video", 48), ("audio", 13)] * 4
    body = [t for kind, count in runs for t in [tok.video if kind == "video" else tok.audio] * count]
    ids = torch.tensor([[1, 2, tok.vision_start, tok.audio_start, *body, tok.audio_end, tok.vision_end, 3]])
    layout = TokenLayout.from_input_ids(ids, None, spec, video_grid_thw=torch.tensor([grid_thw]),
                                        video_second_per_grid=torch.tensor([1.0]),
                                        audio_token_counts=torch.tensor([n_audio]), use_audio_in_video=True)
    grid = assert_bijection(layout)
    assert grid.shape == (4, 6, 8)


@pytest.mark.parametrize("family", ["videollama2"], indirect=True)
def test_release_sized_connector_grid_is_a_bijection(family, model):
    """VideoLLaMA2.1-AV's release: 16 frames of 27 x 27 SigLIP patches -> the STC connector's 8 x 13 x 13
    tokens (time-major, row-major within a frame group), followed by the audio tokens."""
    t, h, w = 8, 13, 13
    order = torch.arange(t * h * w)
    group, row, col = order // (h * w), (order % (h * w)) // w, order % w
    tok = model.cfg.tokens
    segments = [Segment.text([1, 2]), Segment("video", n_tokens=len(order), token_id=tok.video, time=group.float(),
                                              frame_group=group, row=row, col=col),
                Segment("audio", n_tokens=16, token_id=tok.audio, time=(torch.arange(16) // 8) * 0.16, in_video=0),
                Segment.text([3])]
    layout = TokenLayout.from_segments([segments], ModelInputSpec(), pad_id=0)
    grid = assert_bijection(layout)
    assert grid.shape == (t, h, w)
    assert grid[3, 5].tolist() == [float(3 * h * w + 5 * w + c) for c in range(w)]
    no_cells = TokenLayout.from_segments([[Segment("video", n_tokens=4, token_id=tok.video)]], ModelInputSpec(), pad_id=0)
    with pytest.raises(ValueError, match="no grid cell"):
        video_token_grid(no_cells, torch.zeros(4))


def test_each_row_of_a_padded_batch_has_its_own_grid(family, model):
    # a left-padded batch of two clips: each row's video on its own grid
    batch = family.batch(model, [family.clip(model, seed=1, **family.other_length), family.clip(model, seconds=3, seed=2)])
    assert bool((batch.attention_mask == 0).any())
    shapes = {"qwen2_5_omni": [(2, 2, 2), (3, 2, 2)], "qwen3_omni": [(2, 2, 2), (3, 2, 2)],
              "videollama2": [(2, 2, 2), (2, 2, 2)]}[family.name]
    assert assert_bijection(batch.layout, batch=0).shape == shapes[0]
    assert assert_bijection(batch.layout, batch=1).shape == shapes[1]
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
