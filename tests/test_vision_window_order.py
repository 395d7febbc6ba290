"""The Qwen vision tower runs its blocks in window order while nothing watches them
(``towers/qwen_vision.py``: ``window_order``): the same rows, bit for bit, as the processor's
order that a hook on a block sees, for frames whose windows are all full, several items of
different sizes, and frames with partial windows (which keep the processor's order)."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm.towers.qwen_vision import QwenVisionConfig, QwenVisionTower, window_order, window_segments

GRIDS = {"two full frames": [[2, 8, 8]], "items of two sizes": [[1, 8, 12], [2, 4, 4]],
         "partial windows": [[1, 6, 6]], "an image and partial video": [[1, 8, 8], [2, 6, 4]]}


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    cfg = QwenVisionConfig(depth=4, d_model=32, d_mlp=64, n_heads=4, out_dim=64, fullatt_block_indexes=(1, 3), window_size=56)
    return QwenVisionTower(cfg).eval()


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
@torch.no_grad()
def test_window_order_computes_the_rows_of_the_processor_order(tower, grid):
    grid = torch.tensor(grid)
    pixels = torch.randn(int(grid.prod(-1).sum()), tower.cfg.patch_dim, generator=torch.Generator().manual_seed(1))
    fast = tower(pixels, grid)
    seen = []
    tower.blocks[2].hook_resid_post.add_hook(lambda x, hook: seen.append(x.clone()))
    try:
        watched = tower(pixels, grid)
    finally:
        tower.blocks[2].hook_resid_post.remove_hooks()
    assert torch.equal(fast, watched)
    # the hook saw the processor's order: the same rows as the blocks' output in that order, re-run by hand
    x = tower.hook_patch_embed(tower.patch_embed(pixels)[None])
    from hooked_avllm.components.rotary import rotary_axial_2d
    from hooked_avllm.towers.qwen_vision import frame_segments, patch_positions

    rotary = rotary_axial_2d(patch_positions(grid, 2), tower.cfg.d_head, tower.cfg.rope_theta)
    windows, full = window_segments(grid, 2, 2), frame_segments(grid)
    for i, block in enumerate(tower.blocks[:3]):
        x = block(x, rotary=rotary, segments=full if i in tower.cfg.fullatt_block_indexes else windows)
    assert torch.equal(seen[0], x)


def test_window_order_is_taken_only_when_every_window_is_full():
    full = window_segments(torch.tensor([[1, 8, 8]]), merge=2, window_units=2)
    order = window_order(full)
    assert sorted(order.tolist()) == list(range(64)) and order[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert order[8:16].tolist() == [16, 17, 18, 19, 20, 21, 22, 23]  # the window's second row of merge blocks
    assert window_order(window_segments(torch.tensor([[1, 6, 6]]), merge=2, window_units=2)) is None
