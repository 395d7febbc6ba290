"""Two tower forwards side by side (hooked_avllm/components/side_by_side.py): on the CPU they run
in order; the threaded path (a second host thread; on a GPU also a second CUDA stream: see
tests/test_gpu_numerics.py) returns the same values, propagates errors and grad mode, and is taken
only when nothing watches the towers."""

from __future__ import annotations

import functools
import importlib
import threading

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.side_by_side import side_by_side, towers_unwatched
from kits import kit_named

CPU = torch.device("cpu")


def test_on_the_cpu_first_runs_then_second_on_this_thread():
    order = []
    out = side_by_side(lambda: order.append(("first", threading.current_thread().name)) or 1,
                       lambda: order.append(("second", threading.current_thread().name)) or 2, CPU)
    here = threading.current_thread().name
    assert out == (1, 2) and order == [("first", here), ("second", here)]


def test_the_thread_runs_first_beside_second_and_keeps_grad_mode():
    seen = {}

    def first():
        seen["thread"], seen["grad"] = threading.current_thread().name, torch.is_grad_enabled()
        return torch.ones(2) * 3

    with torch.no_grad():
        one, two = side_by_side(first, lambda: "second", CPU, force_thread=True)
    assert torch.equal(one, torch.full((2,), 3.0)) and two == "second"
    assert seen["thread"].startswith("hooked_avllm_tower") and seen["grad"] is False
    with torch.enable_grad():
        side_by_side(first, lambda: None, CPU, force_thread=True)
    assert seen["grad"] is True


def test_errors_of_either_side_come_up_after_both_finished():
    done = []

    def slow_first():
        threading.Event().wait(0.05)
        done.append("first")

    with pytest.raises(ZeroDivisionError):
        side_by_side(slow_first, lambda: 1 / 0, CPU, force_thread=True)
    assert done == ["first"]  # joined before the error went up
    with pytest.raises(KeyError):
        side_by_side(lambda: {}["missing"], lambda: 2, CPU, force_thread=True)


def test_a_hook_or_a_module_hook_on_a_tower_counts_as_watched():
    tower = torch.nn.Sequential(torch.nn.Linear(2, 2), HookPoint())
    assert towers_unwatched(tower, None)
    tower[1].add_hook(lambda x, hook: x)
    assert not towers_unwatched(tower)
    tower[1].remove_hooks()
    handle = tower[0].register_forward_hook(lambda *args: None)
    assert not towers_unwatched(tower)
    handle.remove()
    assert towers_unwatched(tower)


def test_an_omni_forward_with_its_towers_side_by_side_equals_the_plain_one(monkeypatch):
    """The Qwen2.5-Omni family's towers through the threaded path give the serial path's logits."""
    family = kit_named("qwen2_5_omni")
    model = family.model(seed=0)
    clip = family.clip(model, seconds=2, seed=1)
    with torch.no_grad():
        serial = model(clip)
        family_module = importlib.import_module("hooked_avllm.architectures.qwen2_5_omni.family")
        monkeypatch.setattr(family_module, "side_by_side", functools.partial(side_by_side, force_thread=True))
        threaded = model(clip)
    assert torch.equal(serial, threaded)
