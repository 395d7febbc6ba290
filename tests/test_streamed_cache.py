"""``run_with_cache`` copies each activation where it goes as it is made (``hooked_avllm.streamed_cache``):
the same cache as TransformerLens's own caching, in the asked dtype, with a warning before a cache
outgrows its device."""

from __future__ import annotations

import warnings

import pytest
import torch

import hooked_avllm.streamed_cache as streamed
from hooked_avllm.streamed_cache import CacheSizeWarning


def test_the_streamed_cache_equals_transformer_lens_caching(family, model):
    inputs = family.clip(model, seconds=2)
    logits, cache = model.run_with_cache(inputs)
    root = next(c for c in type(model).__mro__ if c.__name__ == "HookedRootModule")  # TransformerLens 3.x or 4.x
    with torch.no_grad():
        tl_logits, tl_cache = root.run_with_cache(model, inputs, layout=cache.layout)
    assert torch.equal(logits, tl_logits)
    assert list(cache.cache_dict) == list(tl_cache)  # every hook, in the order they fire
    for name, act in tl_cache.items():
        assert torch.equal(cache[name], act), name


def test_cache_dtype_and_remove_batch_dim(family, model):
    inputs = family.clip(model, seconds=2)
    _, full = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_resid_post"))
    _, half = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_resid_post"), cache_dtype=torch.bfloat16,
                                   remove_batch_dim=True)
    for name, act in full.cache_dict.items():
        assert half[name].dtype == torch.bfloat16 and torch.equal(half[name], act[0].to(torch.bfloat16))
    with pytest.raises(ValueError, match="cache_dtype works for forward caches"):
        model.run_with_cache(inputs, cache_dtype=torch.float16, incl_bwd=True, return_type="loss")


def test_a_cache_on_its_way_past_free_memory_warns_once(model, monkeypatch):
    monkeypatch.setattr(streamed, "free_bytes", lambda device: 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
    sized = [w for w in caught if w.category is CacheSizeWarning]
    assert len(sized) == 1
    assert "more than the 0.0 GiB free there: narrow names_filter=, cache to device='cpu'" in str(sized[0].message)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned host copies of a GPU model")
def test_a_gpu_model_caches_to_pinned_host_memory(family):
    model = family.model(seed=0).cuda()
    inputs = family.clip(model, seconds=2).to("cuda")
    _, on_gpu = model.run_with_cache(inputs)
    _, on_host = model.run_with_cache(inputs, device="cpu")
    for name, act in on_gpu.cache_dict.items():
        assert on_host[name].device.type == "cpu" and on_host[name].is_pinned()
        assert torch.equal(on_host[name], act.cpu()), name
