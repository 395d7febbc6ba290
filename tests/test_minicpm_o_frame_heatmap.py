"""MiniCPM-o's frame heatmaps: scores of resampler rows routed onto the frames' patches through the
resampler's attention (``architectures/minicpm_o/frame_grid.py``), with known answers: a score on
one query lands exactly on that query's head-averaged attention row (read from the cache, not from
the heatmap code), the mass is kept (each attention row sums to 1), a sliced frame's cells land in
their half of the refined frame, and the figure is drawn with its frames' times."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.analysis import attention_to_video, frame_heatmap, plot_frame_heatmaps, video_token_grid
from hooked_avllm.architectures.minicpm_o.config import config_from_hf, tiny_config_json
from hooked_avllm.architectures.minicpm_o.layout import FrameInfo, layout_from_ids
from hooked_avllm.architectures.minicpm_o.preprocess import image_placeholder
from hooked_avllm.inputs import ModelInputs
from minicpm_cases import QUERIES, TOKENS, VOCAB, case, ids_of, slices


@pytest.fixture(scope="module")
def model():
    return HookedAVLLM.from_config(config_from_hf(tiny_config_json(vocab_size=VOCAB), TOKENS), seed=0).eval()


@pytest.fixture(scope="module")
def omni(model):
    ids, media = case("omni")  # 3 units: one 4 x 5-patch frame and a second of sound each
    return model.to_inputs(torch.tensor([ids]), None, **media)


def sliced_video(model, grid=(2, 1)):
    """A vision-only video of 2 frames, each a 4 x 6 overview and ``grid`` (cols, rows) slices of 4 x 3."""
    body = image_placeholder(grid, use_image_id=False, n_queries=QUERIES)
    head = ids_of("<|im_start|>user\n")
    ids = head + ids_of(body) * 2 + ids_of("Describe.<|im_end|>")
    frames = {len(head): FrameInfo(0, 0.0), len(head) + len(ids_of(body)): FrameInfo(0, 1.0)}
    layout = layout_from_ids(torch.tensor([ids]), None, TOKENS, n_queries=QUERIES, frames=[frames])
    cols, rows = grid
    cell = (4, 6 // cols) if rows == 1 else (4 // rows, 6)
    pixels, sizes = slices(([(4, 6)] + [cell] * (cols * rows)) * 2, 1)
    media = dict(pixel_values=pixels, tgt_sizes=sizes, video_slices=torch.ones(len(sizes), dtype=torch.bool))
    return ModelInputs(layout.input_ids, layout.attention_mask, layout, media, model.architecture.input_spec(model.cfg))


def one_hot(inputs, token: int) -> torch.Tensor:
    scores = torch.zeros(inputs.layout.shape)
    scores[0, torch.nonzero(inputs.layout.video[0]).flatten()[token]] = 1.0
    return scores


def test_a_score_on_one_query_lands_on_its_attention_row(model, omni):
    _, cache = model.run_with_cache(omni, names_filter="vision_proj.attn.hook_pattern")
    pattern = cache["vision_proj.attn.hook_pattern"].mean(1)  # [slice, query, patch]
    heat = frame_heatmap(model, omni, one_hot(omni, QUERIES + 3))  # frame 1, query 3
    assert heat.grid.shape == (3, 4, 5)
    torch.testing.assert_close(heat.grid[1].flatten(), pattern[1, 3, :20], rtol=0, atol=1e-6)
    assert heat.grid[0].abs().sum() == 0 and heat.grid[2].abs().sum() == 0
    assert heat.first_frame.tolist() == [0, 1, 2]
    assert heat.time.tolist() == omni.layout.video_time[0][omni.layout.video[0]][::QUERIES].tolist()
    assert "resampler" in heat.cell


def test_the_score_mass_is_kept(model, omni):
    scores = attention_to_video(model, omni)
    heat = frame_heatmap(model, omni, scores)
    assert torch.isfinite(heat.grid).all()
    torch.testing.assert_close(heat.grid.sum(), scores[0][omni.layout.video[0]].sum(), rtol=1e-5, atol=0)
    per_token = scores[0][omni.layout.video[0]]
    torch.testing.assert_close(frame_heatmap(model, omni, per_token).grid, heat.grid)  # per-token scores too


@pytest.mark.parametrize("grid", [(2, 1), (1, 2)], ids=["one row of 2", "two rows of 1"])
def test_a_sliced_frame_puts_each_cell_in_its_part_of_the_frame(model, grid):
    inputs = sliced_video(model, grid)
    scores = attention_to_video(model, inputs)
    heat = frame_heatmap(model, inputs, scores)
    assert heat.grid.shape == (2, 4, 6) and heat.time.tolist() == [0.0, 1.0]
    torch.testing.assert_close(heat.grid.sum(), scores[0][inputs.layout.video[0]].sum(), rtol=1e-5, atol=0)
    second_cell = frame_heatmap(model, inputs, one_hot(inputs, 2 * QUERIES + 1)).grid[0]  # frame 0's second cell
    inside = second_cell[:, 3:] if grid == (2, 1) else second_cell[2:, :]
    assert torch.isclose(inside.sum(), torch.tensor(1.0), atol=1e-5) and inside.sum() == second_cell.sum()
    overview = frame_heatmap(model, inputs, one_hot(inputs, 0)).grid[0]  # the overview covers the whole frame
    assert bool((overview > 0).all()) and torch.isclose(overview.sum(), torch.tensor(1.0), atol=1e-5)


def test_the_layout_grid_alone_refuses_resampler_rows(model, omni):
    with pytest.raises(ValueError, match="frame_heatmap"):
        video_token_grid(omni.layout, torch.zeros(omni.layout.shape))
    with pytest.raises(ValueError, match="video=1 does not exist"):
        frame_heatmap(model, omni, torch.zeros(omni.layout.shape), video=1)


def test_the_figure_shows_each_frame_at_its_time(model, tmp_path):
    inputs = sliced_video(model)
    heat = frame_heatmap(model, inputs, attention_to_video(model, inputs))
    fig = plot_frame_heatmaps(torch.rand(2, 3, 56, 84), heat, path=tmp_path / "heat.png", title="tiny MiniCPM-o")
    assert (tmp_path / "heat.png").stat().st_size > 0
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles == ["t = 0.0 s", "t = 1.0 s"]
    assert "resampler" in fig.axes[-1].get_ylabel()
    with pytest.raises(ValueError, match="frames the model saw"):
        plot_frame_heatmaps(torch.rand(1, 3, 56, 84), heat)
