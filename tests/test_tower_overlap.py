"""Two tower forwards arranged to overlap (hooked_avllm/components/tower_overlap.py): on the CPU
they run in the written order; the queued order and the threaded path (a second host thread; on a
GPU also a second CUDA stream: see tests/test_gpu_numerics.py) return the same values, propagate
errors and grad mode, and are taken only when nothing watches the towers."""

from __future__ import annotations

import importlib
import threading

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.hook_state import towers_unwatched
from hooked_avllm.components.tower_overlap import overlapped
from kits import kit_named

CPU = torch.device("cpu")


def test_on_the_cpu_first_runs_then_second_on_this_thread():
    order = []
    out = overlapped(lambda: order.append(("first", threading.current_thread().name)) or 1,
                       lambda: order.append(("second", threading.current_thread().name)) or 2, CPU)
    here = threading.current_thread().name
    assert out == (1, 2) and order == [("first", here), ("second", here)]


def test_the_thread_runs_first_beside_second_and_keeps_grad_mode():
    seen = {}

    def first():
        seen["thread"], seen["grad"] = threading.current_thread().name, torch.is_grad_enabled()
        return torch.ones(2) * 3

    with torch.no_grad():
        one, two = overlapped(first, lambda: "second", CPU, mode="thread", force=True)
    assert torch.equal(one, torch.full((2,), 3.0)) and two == "second"
    assert seen["thread"].startswith("hooked_avllm_tower") and seen["grad"] is False
    with torch.enable_grad():
        overlapped(first, lambda: None, CPU, mode="thread", force=True)
    assert seen["grad"] is True


def test_errors_of_either_side_come_up_after_both_finished():
    done = []

    def slow_first():
        threading.Event().wait(0.05)
        done.append("first")

    with pytest.raises(ZeroDivisionError):
        overlapped(slow_first, lambda: 1 / 0, CPU, mode="thread", force=True)
    assert done == ["first"]  # joined before the error went up
    with pytest.raises(KeyError):
        overlapped(lambda: {}["missing"], lambda: 2, CPU, mode="thread", force=True)


def test_queued_launches_the_gpu_bound_tower_first_and_returns_in_the_written_order():
    order = []
    out = overlapped(lambda: order.append("host") or 1, lambda: order.append("gpu") or 2, CPU, mode="queued", force=True)
    assert out == (1, 2) and order == ["gpu", "host"]
    order.clear()
    assert overlapped(lambda: order.append("host") or 1, lambda: order.append("gpu") or 2, CPU, mode="serial", force=True) == (1, 2)
    assert order == ["host", "gpu"]


def test_an_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'sideways' is not one of .*queued"):
        overlapped(lambda: 1, lambda: 2, CPU, mode="sideways")


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


def test_every_kind_of_watcher_deep_in_a_tower_counts():
    """Deep modules, pre-hooks, backward hooks, an SAE-style point (``always_watched`` on its class
    or on the instance): each makes the tower watched, as :func:`watched` sees them."""
    def tower():
        return torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(HookPoint())))

    deep = tower()
    deep[0][1][0].add_hook(lambda grad, hook: None, dir="bwd")
    assert not towers_unwatched(deep)
    deep = tower()
    deep[0][0].register_forward_pre_hook(lambda *args: None)
    assert not towers_unwatched(None, deep)

    class Replacement(torch.nn.Module):  # what an attached SAE puts in a hook point's place
        always_watched = True

    deep = tower()
    deep[0][1][0] = Replacement()
    assert not towers_unwatched(deep)
    deep = tower()
    deep[0][1][0].always_watched = True
    assert not towers_unwatched(deep)
    assert towers_unwatched(tower(), tower())


@pytest.mark.parametrize("mode", ["queued", "thread"])
def test_an_omni_forward_with_its_towers_overlapped_equals_the_plain_one(monkeypatch, mode):
    """The Qwen2.5-Omni family's towers queued vision-first, or threaded, give the serial path's logits."""
    family = kit_named("qwen2_5_omni")
    model = family.model(seed=0)
    clip = family.clip(model, seconds=2, seed=1)
    with torch.no_grad():
        serial = model(clip)
        family_module = importlib.import_module("hooked_avllm.architectures.qwen2_5_omni.family")
        calls = []
        original = family_module.overlapped

        def spy(host_bound, gpu_bound, device, **kwargs):
            calls.append(kwargs["allowed"]())
            return original(host_bound, gpu_bound, device, mode=mode, force=True)

        monkeypatch.setattr(family_module, "overlapped", spy)
        rearranged = model(clip)
    assert torch.equal(serial, rearranged) and calls == [True]
