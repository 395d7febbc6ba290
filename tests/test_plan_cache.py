"""Tower index plans cached by shape (hooked_avllm/components/plan_cache.py): built once per grids
or lengths, reused by later forwards with the same values, usable by a forward with autograd
after an inference-mode one built them, and keyed on whether the vision blocks run in window
order (a hooked forward gets the processor's order)."""

from __future__ import annotations

import torch

from hooked_avllm.components import plan_cache
from hooked_avllm.towers.qwen_vision import QwenVisionConfig, QwenVisionTower
from hooked_avllm.towers.whisper_audio import ChunkPlan, QwenAudioConfig, QwenOmniAudioTower, audio_token_counts


def vision(seed: int = 0) -> QwenVisionTower:
    torch.manual_seed(seed)
    return QwenVisionTower(QwenVisionConfig(depth=2, d_model=32, d_mlp=64, n_heads=4, out_dim=64,
                                            fullatt_block_indexes=(1,))).eval()


def test_a_plan_is_built_once_per_grids_and_reused(monkeypatch):
    plan_cache.clear_plans()
    built = []
    original = plan_cache.cached_plan

    def counting(key, build):
        return original(key, lambda: built.append(key) or build())

    monkeypatch.setattr("hooked_avllm.towers.qwen_vision.cached_plan", counting)
    tower, grid = vision(), torch.tensor([[2, 8, 8]])
    pixels = torch.randn(128, tower.cfg.patch_dim)
    with torch.no_grad():
        first = tower(pixels, grid)
        again = tower(pixels, grid)
        other = tower(torch.randn(64, tower.cfg.patch_dim), torch.tensor([[1, 8, 8]]))
    assert len(built) == 2 and torch.equal(first, again) and other.shape == (1, 64, 32)


def test_a_plan_built_in_inference_mode_serves_a_forward_with_gradients():
    plan_cache.clear_plans()
    tower, grid = vision(), torch.tensor([[1, 8, 12]])
    pixels = torch.randn(96, tower.cfg.patch_dim)
    with torch.inference_mode():
        expected = tower(pixels, grid)
    x = pixels.clone().requires_grad_(True)
    out = tower(x, grid)
    out.square().sum().backward()  # index_select and the rotary tables save the cached indices
    assert torch.equal(out.detach(), expected) and x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_a_hooked_forward_gets_the_processor_order_plan():
    plan_cache.clear_plans()
    tower, grid = vision(), torch.tensor([[1, 16, 16]])  # 4 full windows: the unwatched forward runs in window order
    pixels = torch.randn(256, tower.cfg.patch_dim)
    seen = []
    with torch.no_grad():
        plain = tower(pixels, grid)
        tower.blocks[0].hook_resid_pre.add_hook(lambda x, hook: seen.append(x.clone()))
        hooked = tower(pixels, grid)
        tower.blocks[0].hook_resid_pre.remove_hooks()
    assert torch.equal(plain, hooked)
    patch_embed = tower.patch_embed(pixels)[None]
    assert torch.equal(seen[0], patch_embed)  # the hook sees the patches in the processor's order


def test_the_chunk_plan_is_cached_per_lengths_and_padded_width():
    plan_cache.clear_plans()
    torch.manual_seed(0)
    tower = QwenOmniAudioTower(QwenAudioConfig(n_mels=128, d_model=32, n_layers=1, n_heads=4, d_mlp=64, out_dim=64)).eval()
    features = torch.randn(2, 128, 450)
    with torch.no_grad():
        a = tower(features, torch.tensor([450, 301]))
        b = tower(features, torch.tensor([450, 301]))
        c = tower(features, torch.tensor([450, 300]))
    keys = [k for k in plan_cache._PLANS if k[0] == "whisper_chunks"]
    assert keys == [("whisper_chunks", (450, 301), 450, 200, "cpu"), ("whisper_chunks", (450, 300), 450, 200, "cpu")]
    n = audio_token_counts(450) + audio_token_counts(301)  # 112 + 75; 300 frames also give 75
    assert torch.equal(a, b) and a.shape == (1, n, 32) and c.shape == (1, n, 32)
    fresh = ChunkPlan.of([450, 301], 450, 200)
    cached = plan_cache._PLANS[keys[0]]
    assert torch.equal(cached.first, fresh.first) and torch.equal(cached.kept, fresh.kept)


def test_the_cache_keeps_the_most_recent_plans(monkeypatch):
    plan_cache.clear_plans()
    monkeypatch.setattr(plan_cache, "MAX_PLANS", 2)
    for i in range(3):
        plan_cache.cached_plan(("k", i), lambda i=i: i)
    plan_cache.cached_plan(("k", 1), lambda: None)  # used again: now the most recent
    plan_cache.cached_plan(("k", 3), lambda: 3)
    assert list(plan_cache._PLANS) == [("k", 1), ("k", 3)]
