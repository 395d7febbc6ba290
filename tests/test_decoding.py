"""Decoding over a static KV cache, eager and captured (``hooked_avllm.decoding``).

On the CPU the eager path runs (every generation test of the suite goes through the static cache);
here: the cache itself, the eager path equal to a step-by-step recomputation without any cache,
and the choice of path. On a GPU (the device machine) the captured path is compared with the eager
one on every family: identical tokens for padded batches, under knockout and token dropping, and a
graph reused by the next call of the same shape.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hooked_avllm.analysis import KnockoutRule, drop_tokens, generate_with_knockout
from hooked_avllm.components.kv_cache import StaticKVCache
from hooked_avllm.decoding import _kept
from hooked_avllm.inputs.batching import teacher_forced_inputs

GPU = torch.cuda.is_available()


def test_the_static_cache_returns_what_a_growing_cache_would():
    cache = StaticKVCache.allocate(2, 1, 6, 4, torch.float32, "cpu")
    k1, v1 = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    assert cache.append(k1, v1)[0] is k1  # the prefill attends within its own keys
    k2, v2 = torch.randn(2, 1, 1, 4), torch.randn(2, 1, 1, 4)
    k, v = cache.append(k2, v2)
    assert torch.equal(k, torch.cat((k1, k2), 2)) and torch.equal(v, torch.cat((v1, v2), 2))
    with pytest.raises(RuntimeError, match="holds 6 positions; 4 written \\+ 3 new"):
        cache.append(torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4))


def test_captured_use_writes_at_the_position_tensor():
    cache = StaticKVCache.allocate(1, 1, 5, 2, torch.float32, "cpu")
    mask = torch.full((1, 1, 1, 5), float("-inf"))
    cache.capture_at(torch.tensor([3]), mask)
    k, _ = cache.append(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
    assert k.shape[2] == 5 and k[0, 0, :, 0].tolist() == [0, 0, 0, 1, 0]
    assert cache.static_mask is mask


def test_generation_kept_tokens_stop_where_every_row_has_ended():
    new = torch.tensor([[5, 9, 9, 9], [5, 6, 9, 9]])
    assert _kept(new, torch.tensor([9])) == 3
    assert _kept(new, torch.tensor([7])) == 4
    assert _kept(new, torch.tensor([], dtype=torch.long)) == 4


def test_eager_static_decoding_equals_recomputing_every_step(family, model):
    """Greedy tokens through the static cache equal argmax of full forwards over the growing sequence."""
    ids = family.text(model, torch.tensor([[5, 17, 42, 99, 7, 3]]))
    tokens = model.generate(ids, max_new_tokens=4, eos_token_id=[], cuda_graph=False)
    seq = ids.input_ids if hasattr(ids, "input_ids") else ids
    with torch.no_grad():
        for _ in range(4):
            seq = torch.cat((seq, model(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(tokens, seq)


def test_cuda_graph_true_on_the_cpu_says_why_not(model):  # the model is on the CPU on a GPU machine too
    with pytest.raises(ValueError, match="cuda_graph=True, but .* cannot be captured: the model runs on cpu"):
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be None"):
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, cuda_graph="yes")


# ------------------------------------------------------------- the captured step's arithmetic, on the CPU


def static_steps(monkeypatch):
    """Generation through the captured path's static buffers with its step run as plain Python (no
    graph): what a GPU records, checkable on the CPU."""
    import hooked_avllm.decoding as decoding

    real = decoding._captured_decode
    monkeypatch.setattr(decoding, "_why_not_captured", lambda *args: None)
    monkeypatch.setattr(decoding, "_captured_decode", lambda *args, **kwargs: real(*args, **kwargs, record=False))


def padded_batch(family, model):
    return family.batch(model, [family.clip(model, seconds=2, seed=1), family.clip(model, video=False, seconds=2, seed=2)])


def test_the_static_step_equals_eager_decoding(family, model, monkeypatch):
    batch = padded_batch(family, model)
    runs = {}
    for mode in ("eager", "static"):
        if mode == "static":
            static_steps(monkeypatch)
        out = [model.generate(batch, max_new_tokens=7, eos_token_id=[], cuda_graph=False if mode == "eager" else None)]
        free = out[0]
        out.append(model.generate(batch, max_new_tokens=9, eos_token_id=[int(free[0, -3])],
                                  cuda_graph=False if mode == "eager" else None))
        out.append(generate_with_knockout(model, batch, KnockoutRule("generated", ("text", "generated"), [0, -1]), 6,
                                          eos_token_id=[], cuda_graph=False if mode == "eager" else None))
        with drop_tokens(model, "text", after_layer=0):
            out.append(model.generate(batch, max_new_tokens=6, eos_token_id=[], cuda_graph=False if mode == "eager" else None))
        runs[mode] = out
    for eager, static in zip(runs["eager"], runs["static"]):
        assert torch.equal(static, eager)


def test_attention_share_in_the_static_step_equals_eager(family, model, monkeypatch):
    from hooked_avllm.analysis import attention_share

    batch = padded_batch(family, model)
    rule = KnockoutRule("generated", "text", [-1])
    with generate_edit(model, rule):
        eager = attention_share(model, batch, max_new_tokens=5, eos_token_id=[])
        static_steps(monkeypatch)
        static = attention_share(model, batch, max_new_tokens=5, eos_token_id=[])
    assert static.values.shape == eager.values.shape
    assert torch.equal(static.batch, eager.batch) and torch.equal(static.step, eager.step)
    assert torch.equal(static.position, eager.position)
    assert float((static.values - eager.values).abs().max()) < 1e-5


def test_returned_logits_are_the_teacher_forced_predictions(family, model, monkeypatch):
    """``generate(return_logits=True)``: the logits each token was chosen from equal a full forward
    over prompt + generated tokens at those positions (fp32), on the eager and the static path,
    for a padded batch with an end token; row i's argmax is new token i."""
    batch = padded_batch(family, model)
    free = model.generate(batch, max_new_tokens=6, eos_token_id=[])
    eos = [int(free[0, -3])]
    results = {}
    for mode in ("eager", "static"):
        if mode == "static":
            static_steps(monkeypatch)
        tokens, logits = model.generate(batch, max_new_tokens=6, eos_token_id=eos, return_logits=True,
                                        cuda_graph=False if mode == "eager" else None)
        assert torch.equal(tokens, model.generate(batch, max_new_tokens=6, eos_token_id=eos, cuda_graph=False))
        results[mode] = logits
    n_prompt = batch.input_ids.shape[1]
    new = tokens[:, n_prompt:]
    assert results["eager"].shape == (2, new.shape[1], model.cfg.d_vocab) and results["eager"].dtype == torch.float32
    ended = torch.isin(new, torch.tensor(eos)).int().cumsum(1) - torch.isin(new, torch.tensor(eos)).int() > 0
    assert torch.equal(results["eager"].argmax(-1)[~ended], new[~ended])  # after its end token a row repeats it
    with torch.no_grad():
        full = model(teacher_forced_inputs(batch, new[:, :-1]))[:, n_prompt - 1 :].float()
    for mode, logits in results.items():
        assert float((logits - full).abs().max()) < 1e-4, mode
    with pytest.raises(TypeError, match="return_logits must be True or False; got 'yes'"):
        model.generate(batch, max_new_tokens=2, return_logits="yes")


def generate_edit(model, rule):
    from hooked_avllm.analysis import knockout

    return knockout(model, rule)


# ----------------------------------------------------------------------------------- GPU


@pytest.fixture
def on_gpu(family):
    if not GPU:
        pytest.skip("CUDA graphs need a GPU (run on the device machine)")
    model = family.model(seed=0).cuda()
    batch = family.batch(model, [family.clip(model, seconds=2, seed=1), family.clip(model, video=False, seconds=2, seed=2)])
    return model, batch.to("cuda")


def test_captured_decoding_equals_eager_on_a_padded_batch(on_gpu):
    model, batch = on_gpu
    eager = model.generate(batch, max_new_tokens=12, eos_token_id=[], cuda_graph=False)
    captured = model.generate(batch, max_new_tokens=12, eos_token_id=[], cuda_graph=True)
    assert torch.equal(captured, eager)
    decoders = model._captured_decoders
    graph = next(iter(decoders.values())).graph
    again = model.generate(batch, max_new_tokens=12, eos_token_id=[], cuda_graph=True)
    assert torch.equal(again, eager) and len(decoders) == 1 and next(iter(decoders.values())).graph is graph


def test_captured_decoding_stops_where_eager_does(on_gpu):
    model, batch = on_gpu
    free = model.generate(batch, max_new_tokens=6, eos_token_id=[], cuda_graph=False)
    end = int(free[0, -4])  # a token row 0 produces: generation stops there for row 0
    eager = model.generate(batch, max_new_tokens=10, eos_token_id=[end], cuda_graph=False)
    assert torch.equal(model.generate(batch, max_new_tokens=10, eos_token_id=[end], cuda_graph=True), eager)


def test_captured_knockout_and_token_dropping_equal_eager(on_gpu):
    model, batch = on_gpu
    n = model.cfg.n_layers
    for rule in (KnockoutRule("generated", "audio", (0, n)), KnockoutRule("generated", ("text", "generated"), [-1])):
        eager = generate_with_knockout(model, batch, rule, 8, eos_token_id=[], cuda_graph=False)
        assert torch.equal(generate_with_knockout(model, batch, rule, 8, eos_token_id=[], cuda_graph=True), eager)
    with drop_tokens(model, "audio", after_layer=0):
        eager = model.generate(batch, max_new_tokens=8, eos_token_id=[], cuda_graph=False)
        assert torch.equal(model.generate(batch, max_new_tokens=8, eos_token_id=[], cuda_graph=True), eager)


def test_captured_logits_equal_eager(on_gpu):
    model, batch = on_gpu
    eager, eager_logits = model.generate(batch, max_new_tokens=7, eos_token_id=[], cuda_graph=False, return_logits=True)
    captured, logits = model.generate(batch, max_new_tokens=7, eos_token_id=[], cuda_graph=True, return_logits=True)
    assert torch.equal(captured, eager) and logits.shape == eager_logits.shape
    assert float((logits - eager_logits).abs().max()) < 1e-4


def test_a_hook_makes_generation_eager_and_fires_every_step(on_gpu):
    model, batch = on_gpu
    steps = []
    hook = ("blocks.0.hook_resid_post", lambda act, hook: steps.append(model.forward_context.step))
    with model.hooks(fwd_hooks=[hook]):
        with pytest.raises(ValueError, match="a hook watches blocks.0.hook_resid_post"):
            model.generate(batch, max_new_tokens=3, eos_token_id=[], cuda_graph=True)
        model.generate(batch, max_new_tokens=3, eos_token_id=[])
    assert steps == [0, 1, 2]


def test_captured_attention_share_equals_eager(on_gpu):
    from hooked_avllm.analysis import attention_share

    model, batch = on_gpu
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: None)]):  # not graph-safe: eager
        eager = attention_share(model, batch, max_new_tokens=6, eos_token_id=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture falls back to eager with one: not here
        captured = attention_share(model, batch, max_new_tokens=6, eos_token_id=[])
    assert not model.__dict__.get("_capture_failed")
    assert torch.equal(captured.step, eager.step) and torch.equal(captured.position, eager.position)
    assert float((captured.values - eager.values).abs().max()) < 1e-4
    recorded = {key: decoder.graph for key, decoder in model._captured_decoders.items()}
    again = attention_share(model, batch, max_new_tokens=6, eos_token_id=[])  # replays the graph recorded above
    assert {key: decoder.graph for key, decoder in model._captured_decoders.items()} == recorded
    assert torch.equal(again.values, captured.values) and torch.equal(again.step, captured.step)
    last = attention_share(model, batch, max_new_tokens=6, eos_token_id=[], layers=[-1])  # other layers: another graph
    assert len(model._captured_decoders) == len(recorded) + 1
    assert float((last.values[:, 0] - eager.values[:, -1]).abs().max()) < 1e-4


def test_conditions_over_one_shared_prefill_equal_one_generation_each(family, model):
    """``decode_conditions``: one prefix prefill, the conditions as blocks of one batch (the last
    prompt position per block, so ``last_prompt_as_generated`` is exact) - the same tokens as
    generating under each edit alone, end tokens included."""
    from hooked_avllm.analysis.knockout import Knockout
    from hooked_avllm.decoder_inputs import decoder_inputs
    from hooked_avllm.decoding import decode_conditions

    batch = padded_batch(family, model)
    n = model.cfg.n_layers
    edits = [None, Knockout(KnockoutRule("generated", "text", (0, n))).bind(model),
             Knockout(KnockoutRule("generated", ("text", "generated"), [-1]), last_prompt_as_generated=True).bind(model),
             Knockout(KnockoutRule("generated", "audio", (0, 1))).bind(model)]
    free = model.generate(batch, max_new_tokens=6, eos_token_id=[])
    for eos in ([], [int(free[1, -2])]):
        together = decode_conditions(model, decoder_inputs(model, batch), edits, 6, torch.tensor(eos, dtype=torch.long), None)
        assert together is not None and len(together) == len(edits)
        for edit, tokens in zip(edits, together):
            if edit is None:
                alone = model.generate(batch, max_new_tokens=6, eos_token_id=eos)
            else:
                with model.edit_attention(edit):
                    alone = model.generate(batch, max_new_tokens=6, eos_token_id=eos)
            assert torch.equal(tokens, alone), edit


def test_conditions_that_edit_the_prompt_are_left_to_one_generation_each(family, model):
    from hooked_avllm.analysis.knockout import Knockout
    from hooked_avllm.decoder_inputs import decoder_inputs
    from hooked_avllm.decoding import decode_conditions

    batch = padded_batch(family, model)
    prompt_edit = Knockout(KnockoutRule("text", "audio")).bind(model)  # prompt queries: the prefill changes
    assert decode_conditions(model, decoder_inputs(model, batch), [None, prompt_edit], 3, torch.tensor([]), None) is None


def test_conditions_on_a_deeper_model_each_keep_their_own_window():
    """Six layers and windows that differ layer by layer (where a stale per-layer mask would show):
    the shared-prefill conditions equal one generation per condition, over several runs (the
    allocator reuses addresses differently from run to run)."""
    from dataclasses import replace

    from kits.qwen2_5_omni import clip_inputs

    from hooked_avllm import AVLLMConfig, HookedAVLLM
    from hooked_avllm.analysis.knockout import Knockout
    from hooked_avllm.decoder_inputs import decoder_inputs
    from hooked_avllm.decoding import decode_conditions

    cfg = AVLLMConfig.tiny()
    model = HookedAVLLM.from_config(replace(cfg, text=replace(cfg.text, n_layers=6)), seed=1).eval()
    clip = clip_inputs(model, seconds=2, seed=3)
    windows = [(0, 1), (1, 2), (2, 4), (4, 6), (0, 6), (3, 4)]
    edits = [None] + [Knockout(KnockoutRule("generated", kind, w)).bind(model) for kind in ("audio", "video") for w in windows]
    alone = []
    for edit in edits:
        with model.edit_attention(*([edit] if edit is not None else [])):
            alone.append(model.generate(clip, max_new_tokens=5, eos_token_id=[]))
    for _ in range(3):
        together = decode_conditions(model, decoder_inputs(model, clip), edits, 5, torch.tensor([], dtype=torch.long), None)
        for edit, tokens, want in zip(edits, together, alone):
            assert torch.equal(tokens, want), edit


def test_a_model_pickles_and_copies_without_its_captured_decoders(model):
    """Captured graphs and the weak reference to the last decoder are per-process state: ``torch.save``
    of the whole model and ``copy.deepcopy`` leave them out (a copy records its own)."""
    import copy
    import io
    import weakref

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("a CUDA graph cannot be pickled")

    held = Unpicklable()
    model._captured_decoders, model._last_decoder, model._capture_failed = {"key": held}, weakref.ref(held), True
    try:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)  # our own object, written just above
        twin = copy.deepcopy(model)
        for other in (loaded, twin):
            assert not any(hasattr(other, name) for name in ("_captured_decoders", "_last_decoder", "_capture_failed"))
            ids = torch.tensor([[1, 2, 3]])
            assert torch.equal(other.generate(ids, max_new_tokens=2, eos_token_id=[]), model.generate(ids, max_new_tokens=2,
                                                                                                     eos_token_id=[]))
        assert model._captured_decoders == {"key": held}  # the original keeps its own
    finally:
        for name in ("_captured_decoders", "_last_decoder", "_capture_failed"):
            model.__dict__.pop(name, None)
