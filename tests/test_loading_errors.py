"""Bad checkpoints fail with a clear error that names the tensor or file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hooked_avllm import HookedAVLLM
from reference_models import build_omni_thinker


@pytest.fixture
def checkpoint(tmp_path):
    build_omni_thinker("a").save_pretrained(tmp_path)  # one model.safetensors
    return tmp_path


def rewrite(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_loads_cleanly(checkpoint):
    assert HookedAVLLM.from_pretrained(checkpoint).cfg.architecture == "qwen2_5_omni_thinker"


def test_missing_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensors.*blocks\.1\.mlp\.gate_up\.weight"):
        HookedAVLLM.from_pretrained(checkpoint)


def test_extra_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.update({"model.layers.7.mlp.up_proj.weight": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected tensors.*model\.layers\.7\.mlp\.up_proj\.weight"):
        HookedAVLLM.from_pretrained(checkpoint)


def test_wrong_shape(checkpoint):
    def shrink(t):
        t["visual.blocks.0.attn.q.weight"] = t["visual.blocks.0.attn.q.weight"][:, :16].contiguous()

    rewrite(checkpoint, shrink)
    with pytest.raises(ValueError, match=r"visual\.blocks\.0\.attn\.q\.weight has shape \(32, 16\).*\(32, 32\)"):
        HookedAVLLM.from_pretrained(checkpoint)


def test_unknown_model_type(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "llava_next_video"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown architecture: model_type 'llava_next_video'.*qwen2_5_omni"):
        HookedAVLLM.from_pretrained(checkpoint)


def test_truncated_safetensors(checkpoint):
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"could not read .*model\.safetensors.*truncated or corrupt"):
        HookedAVLLM.from_pretrained(checkpoint)


def test_pickle_only_checkpoint_is_refused(checkpoint):
    (checkpoint / "model.safetensors").rename(checkpoint / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"safetensors only"):
        HookedAVLLM.from_pretrained(checkpoint)


def test_missing_folder_or_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"could not find 'nobody/no-such-model'"):
        HookedAVLLM.from_pretrained("nobody/no-such-model")
