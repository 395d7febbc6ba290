"""Models split over devices (``hooked_avllm.device_map``), on the CPU: placement plans at real
size on the meta device, checks of hand-written maps, and accelerate's device hooks exercised
with disk-offloaded blocks (the hooks then load each block's weights for its forward), which must
change nothing: logits, caches, generation, knockout and loading from a checkpoint.

Real GPU splits are measured on the GPU machine (``bench/bench_device_map.py``,
``docs/benchmarks.md``)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from hooked_avllm import AVLLMConfig, HookedAVLLM
from hooked_avllm.analysis import Knockout, KnockoutRule
from hooked_avllm.architectures.qwen3_omni.config import config_from_hf
from hooked_avllm.device_map import devices_of, no_split_classes, plan_device_map
from reference_models import build_omni_thinker

GIB = 2**30


def qwen3_on_meta() -> HookedAVLLM:
    config = json.loads(open("tests/fixtures/hub/Qwen__Qwen3-Omni-30B-A3B-Instruct/config.json").read())
    with torch.device("meta"):
        return HookedAVLLM(config_from_hf(config))


def plan_quietly(*args, **kwargs):
    with warnings.catch_warnings():  # accelerate notes that the GPU ids of max_memory are not on this machine
        warnings.simplefilter("ignore")
        return plan_device_map(*args, **kwargs)


def test_a_balanced_plan_splits_qwen3_omni_over_two_gpus_keeping_blocks_and_towers_whole():
    model = qwen3_on_meta()
    plan = plan_quietly(model, "balanced", max_memory={0: "40GiB", 1: "40GiB"}, dtype=torch.bfloat16)
    assert set(plan.values()) == {0, 1}
    assert {plan[name] for name in ("vision", "vision_proj", "audio", "audio_proj", "embed")} == {0}
    assert plan["unembed"] == plan["ln_final"] == 1
    per_device = {0: 0, 1: 0}
    for name, p in model.named_parameters():
        owner = max((k for k in plan if name == k or name.startswith(k + ".")), key=len)  # one entry per parameter
        assert owner.count(".") <= 1, f"{name} placed below its block ({owner})"  # blocks / towers are never split
        per_device[plan[owner]] += p.numel() * 2
    assert all(size <= 40 * GIB for size in per_device.values())
    assert abs(per_device[0] - per_device[1]) < 0.25 * sum(per_device.values())  # balanced
    blocks = [plan[f"blocks.{i}"] for i in range(48)]
    assert blocks == sorted(blocks)  # layers in order: the stream crosses once
    assert "InjectionBlock" in no_split_classes(model) and "AuTAudioTower" in no_split_classes(model)


def test_a_sequential_plan_fills_the_first_gpu_first():
    model = qwen3_on_meta()
    plan = plan_quietly(model, "sequential", max_memory={0: "50GiB", 1: "50GiB"}, dtype=torch.bfloat16)
    first = sum(1 for i in range(48) if plan[f"blocks.{i}"] == 0)
    assert 30 < first < 48 and plan["blocks.47"] == 1


def test_hand_written_maps_are_checked():
    model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    with pytest.raises(ValueError, match="does not place .* parameters"):
        plan_device_map(model, {"blocks": "cpu"})
    with pytest.raises(ValueError, match="is not a device"):
        plan_device_map(model, {"": "gpu0"})
    with pytest.raises(ValueError, match="device_map='everywhere'"):
        plan_device_map(model, "everywhere")


def offloading_map(model: HookedAVLLM) -> dict:
    """Every module on the CPU but the second block and the audio tower, offloaded to disk."""
    plan = {name: "cpu" for name, _ in model.named_children() if any(True for _ in _.parameters())}
    plan.update({"blocks.0": "cpu", "blocks.1": "disk"})
    plan.pop("blocks")
    plan["audio"] = "disk"
    return plan


def test_offloaded_blocks_through_accelerate_hooks_change_nothing(tmp_path):
    from cases import build_case

    reference = HookedAVLLM.from_config(AVLLMConfig.tiny(), seed=3).eval()
    split = HookedAVLLM.from_config(AVLLMConfig.tiny(), seed=3).eval()
    from hooked_avllm.device_map import dispatch

    split = dispatch(split, offloading_map(split), offload_dir=str(tmp_path))
    assert split.hf_device_map["blocks.1"] == "disk"
    assert devices_of(split)["blocks.1.attn.qkv.weight"] == "meta"  # the weights live on disk between forwards
    inputs = build_case("audio_in_video", seed=2)
    with torch.no_grad():
        want, want_cache = reference.run_with_cache(**inputs)
        got, got_cache = split.run_with_cache(**inputs)
    assert torch.equal(got, want)
    for name in ("blocks.1.hook_resid_post", "blocks.1.attn.hook_z", "audio.hook_out", "audio_proj.hook_out"):
        assert torch.equal(got_cache[name], want_cache[name]), name
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 150, 12]])
    assert torch.equal(split.generate(ids, max_new_tokens=4, eos_token_id=[]),
                       reference.generate(ids, max_new_tokens=4, eos_token_id=[]))
    rule = Knockout(KnockoutRule("text", "text", layers=range(1, 2)))
    with split.edit_attention(rule), torch.no_grad():
        knocked = split(ids)
    with reference.edit_attention(rule), torch.no_grad():
        assert torch.equal(knocked, reference(ids))


def test_from_pretrained_with_a_device_map_streams_into_the_planned_devices(tmp_path):
    thinker = build_omni_thinker("a", seed=4)
    thinker.save_pretrained(tmp_path / "ckpt")
    plain = HookedAVLLM.from_pretrained(tmp_path / "ckpt")
    plan = offloading_map(plain)
    split = HookedAVLLM.from_pretrained(tmp_path / "ckpt", device_map=plan, offload_dir=str(tmp_path / "offload"))
    assert split.hf_device_map == plan and not split.training
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(split(ids), plain(ids))


def test_a_patching_sweep_and_the_logit_lens_on_an_offloaded_model_equal_the_plain_ones(tmp_path):
    from hooked_avllm.analysis import logit_lens, patching_sweep
    from hooked_avllm.device_map import dispatch

    from kits.qwen2_5_omni import clip_inputs

    plain = HookedAVLLM.from_config(AVLLMConfig.tiny(), seed=5).eval()
    split = dispatch(HookedAVLLM.from_config(AVLLMConfig.tiny(), seed=5).eval(), offloading_map(plain), offload_dir=str(tmp_path))
    source = clip_inputs(plain, video=False, audio=True, seconds=2, audio_seed=9)  # the audio-only run
    target = clip_inputs(plain, video=True, audio=True, seconds=2, audio_seed=9)  # the same audio with a video

    def metric(logits, inputs):
        return logits[:, -1, 7] - logits[:, -1, 9]

    kw = dict(components=("resid_pre", "attn_out"), progress=False)
    want = patching_sweep(plain, source, target, metric, **kw)
    got = patching_sweep(split, source, target, metric, **kw)
    assert torch.equal(got.values, want.values)
    lens_plain = logit_lens(plain, target, layers=[0, 1], progress=False)
    lens_split = logit_lens(split, target, layers=[0, 1], progress=False)
    assert torch.equal(lens_split.top_ids, lens_plain.top_ids) and torch.equal(lens_split.top_probs, lens_plain.top_probs)


def test_loading_with_a_device_map_writes_each_tensor_once_into_its_planned_storage(tmp_path, monkeypatch):
    """No whole-model copy on the CPU first: the meta model gets per-device storage, then each
    checkpoint tensor is copied into it (``to_empty`` of the whole model never runs)."""
    thinker = build_omni_thinker("a", seed=6)
    thinker.save_pretrained(tmp_path)
    plain = HookedAVLLM.from_pretrained(tmp_path)
    plan = {name: "cpu" for name, module in plain.named_children() if any(True for _ in module.parameters())}

    def refuse(*args, **kwargs):
        raise AssertionError("a device-map load must not materialise the whole model on one device")

    monkeypatch.setattr(HookedAVLLM, "to_empty", refuse)
    split = HookedAVLLM.from_pretrained(tmp_path, device_map=plan)
    assert all(device == "cpu" for device in devices_of(split).values())
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(split(ids), plain(ids))
