"""Properties every family's tiny model keeps over random layouts and random text sizes (hypothesis):
a padded batch equals its rows run one at a time, an empty attention edit equals the plain run,
patching a run into itself is the identity, attention shares sum to one, and the plain, cached and
hooked forwards agree.

The layouts come from each family's test kit (``tests/kits/``) through ``property_strategies``: rows of
random kinds (text only, audio only, video only, audio+video), 1-3 s clips with 0-6 text tokens before
and 0-4 after, left or right padding. ``derandomize=True`` draws the same examples on every run, so CI
is deterministic; the models are module-scoped and the example counts small (2 CPU cores). For a deeper
search set ``HOOKED_AVLLM_PROPERTY_SCALE=20`` (20 times the examples, same derandomized start).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooked_avllm import HookedAVLLM
from hooked_avllm.analysis import Knockout, attention_share, knockout, patch, shares_from_patterns
from hooked_avllm.inputs import teacher_forced_inputs
from property_strategies import (
    PATCHED_HOOKS,
    TEXT_IDS,
    build_batch,
    layouts,
    present_kinds,
    resized_config,
    text_sizes,
)

LOGITS_ATOL = 1e-4  # float32, as the parity tests: a row padded in a batch against the row alone
SAME_RUN_ATOL = 1e-5  # the same inputs through another path (a watched pattern takes the explicit attention)
SHARE_ATOL = 1e-5
SCALE = int(os.environ.get("HOOKED_AVLLM_PROPERTY_SCALE", "1"))  # more examples for a deeper local search


def examples(n: int):
    """Hypothesis settings of a property: ``n`` examples, the same ones on every run, no deadline
    (tiny models on 2 shared cores), no example database written beside the tests."""
    return settings(max_examples=n * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


LEFT = ("left",)  # generation takes left-padded batches


# ----------------------------------------------------------------------------- shared checks


def assert_rows_match(model: HookedAVLLM, batch, alone) -> None:
    """Each row's logits at its real positions equal the row run alone."""
    with torch.no_grad():
        logits = model(batch)
        for b, row in enumerate(alone):
            real = batch.attention_mask[b].bool()
            want = model(row)[0]
            got = logits[b, real]
            assert got.shape == want.shape, f"row {b}: {int(real.sum())} real positions in the batch, {want.shape[0]} alone"
            gap = float((got - want).abs().max())
            assert gap < LOGITS_ATOL, f"row {b} differs from the row alone by {gap:.2e} (layout {batch.layout.shape})"


def assert_forwards_agree(model: HookedAVLLM, x, names_filter=None):
    """``model(x)`` equals ``run_with_cache(x)[0]`` (every hook cached, and with ``names_filter``
    when given) and ``run_with_hooks(x, fwd_hooks=[])``; returns the full cache."""
    with torch.no_grad():
        plain = model(x)
        cached, cache = model.run_with_cache(x)
        runs = [("run_with_cache", cached), ("run_with_hooks", model.run_with_hooks(x, fwd_hooks=[]))]
        if names_filter is not None:
            runs.append(("run_with_cache(names_filter)", model.run_with_cache(x, names_filter=names_filter)[0]))
    assert any(name.endswith("hook_pattern") for name in cache.cache_dict), "the full cache holds the patterns"
    for name, other in runs:
        assert other.shape == plain.shape, name
        gap = float((other - plain).abs().max())
        assert gap < SAME_RUN_ATOL, f"{name} differs from model(x) by {gap:.2e}"
    return cache


# ----------------------------------------------------------------------------- 1. batching


@examples(4)
@given(data=st.data())
def test_a_padded_batch_equals_its_rows_one_at_a_time(family, model, data):
    layout = data.draw(layouts(family), label="layout")
    batch, alone = build_batch(family, model, layout)
    assert_rows_match(model, batch, alone)


@examples(3)
@given(lengths=st.lists(st.integers(1, 10), min_size=2, max_size=3), padding_side=st.sampled_from(("left", "right")),
       seed=st.integers(0, 2**16))
def test_padded_bare_ids_equal_each_row_alone(model, lengths, padding_side, seed):
    """The same for bare ids with an attention mask (the Hugging Face calling convention)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, TEXT_IDS, (n,), generator=g) for n in lengths]
    ids = torch.zeros(len(rows), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        where = slice(ids.shape[1] - len(row), None) if padding_side == "left" else slice(0, len(row))
        ids[b, where], mask[b, where] = row, 1
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)
        for b, row in enumerate(rows):
            gap = float((logits[b, mask[b].bool()] - model(row[None])[0]).abs().max())
            assert gap < LOGITS_ATOL, f"row {b} of {padding_side}-padded ids differs from the row alone by {gap:.2e}"


@examples(2)
@given(data=st.data())
def test_batched_generation_picks_what_each_row_alone_ranks_first(family, model, data):
    """Greedy decoding of a left-padded batch (KV cache, padding in every step) chooses, in each row,
    tokens the row alone ranks first when fed them without a cache (within the batching tolerance,
    so a near-tie may go either way)."""
    layout = data.draw(layouts(family, padding_sides=LEFT), label="layout")
    new = data.draw(st.integers(2, 4), label="max_new_tokens")
    batch, alone = build_batch(family, model, layout)
    with torch.no_grad():
        tokens = model.generate(batch, new, eos_token_id=[])[:, -new:]
        for b, row in enumerate(alone):
            logits = model(teacher_forced_inputs(row, tokens[b : b + 1]))[0, -new - 1 : -1]
            chosen = logits.gather(-1, tokens[b, :, None])[:, 0]
            shortfall = float((logits.max(-1).values - chosen).max())
            assert shortfall < LOGITS_ATOL, f"row {b}: the batch chose {tokens[b].tolist()}, {shortfall:.2e} below the row's best"


# ----------------------------------------------------------------------------- 2. empty edits

EMPTY_EDITS = {
    "knockout(model, [])": lambda model: knockout(model, []),
    "knockout(model, [], last_prompt_as_generated=True)": lambda model: knockout(model, [], last_prompt_as_generated=True),
    "edit_attention(Knockout([]))": lambda model: model.edit_attention(Knockout([])),
    "edit_attention()": lambda model: model.edit_attention(),
}


@examples(3)
@given(data=st.data())
def test_an_empty_edit_equals_the_plain_run_and_generation(family, model, data):
    layout = data.draw(layouts(family, min_rows=1, max_rows=2, padding_sides=LEFT), label="layout")
    edit = data.draw(st.sampled_from(sorted(EMPTY_EDITS)), label="edit")
    new = data.draw(st.integers(1, 3), label="max_new_tokens")
    batch, _ = build_batch(family, model, layout)
    with torch.no_grad():
        plain, tokens = model(batch), model.generate(batch, new, eos_token_id=[])
        with EMPTY_EDITS[edit](model):
            edited, edited_tokens = model(batch), model.generate(batch, new, eos_token_id=[])
    assert not model.has_attention_edits, f"{edit} left an edit on the model"
    assert torch.equal(plain, edited)
    assert torch.equal(tokens, edited_tokens)


# ----------------------------------------------------------------------------- 3. self-patching


@st.composite
def patch_targets(draw, model: HookedAVLLM, inputs):
    """A hook (a full name or a ``(component, layer)`` pair, per-head ``hook_z`` with some heads)
    and the positions to patch: a kind every row holds, or a random mask with at least one position."""
    layer = draw(st.integers(0, model.cfg.n_layers - 1), label="layer")
    hook = draw(st.sampled_from(PATCHED_HOOKS + ("attn.hook_z",)), label="hook")
    heads = None
    if hook == "attn.hook_z":
        heads = draw(st.none() | st.lists(st.integers(0, model.cfg.n_heads - 1), min_size=1, unique=True), label="heads")
        spec = f"blocks.{layer}.{hook}"
    else:
        spec = draw(st.sampled_from([f"blocks.{layer}.{hook}", (hook.removeprefix("hook_"), layer)]), label="spec")
    if draw(st.booleans(), label="random mask"):
        seed = draw(st.integers(0, 2**16), label="mask seed")
        positions = torch.rand(inputs.layout.shape, generator=torch.Generator().manual_seed(seed)) < 0.3
        positions[0, -1] = True
    else:
        positions = draw(st.sampled_from(present_kinds(inputs)), label="positions")
    return spec, heads, positions


@examples(5)
@given(data=st.data())
def test_patching_a_run_into_itself_is_the_identity(family, model, data):
    layout = data.draw(layouts(family, min_rows=1, max_rows=2), label="layout")
    x, _ = build_batch(family, model, layout)
    spec, heads, positions = data.draw(patch_targets(model, x), label="patch")
    with torch.no_grad():
        plain = model(x)
    patched = patch(model, x, x, spec, modality=positions, heads=heads)
    gap = float((patched - plain).abs().max())
    assert gap < SAME_RUN_ATOL, f"patching {spec} at {positions if isinstance(positions, str) else 'a mask'} into itself moved the logits by {gap:.2e}"


# ----------------------------------------------------------------------------- 4. attention shares


@st.composite
def real_position_masks(draw, inputs):
    """A random mask ``[batch, pos]`` of real (non-padding) positions, at least one per row."""
    seed = draw(st.integers(0, 2**16), label="mask seed")
    real = inputs.attention_mask.bool()
    mask = (torch.rand(real.shape, generator=torch.Generator().manual_seed(seed)) < 0.3) & real
    mask[:, -1] = True  # left padding: the last column is real in every row
    return mask


@examples(3)
@given(data=st.data())
def test_attention_shares_sum_to_one(family, model, data):
    layout = data.draw(layouts(family, min_rows=1, max_rows=2, padding_sides=LEFT), label="layout")
    x, _ = build_batch(family, model, layout)
    new = data.draw(st.integers(1, 3), label="max_new_tokens")
    queries = data.draw(st.none() | st.sampled_from(present_kinds(x)) | real_position_masks(x), label="queries")
    layers = data.draw(st.none() | st.lists(st.integers(0, model.cfg.n_layers - 1), min_size=1, unique=True), label="layers")
    shares = attention_share(model, x, max_new_tokens=new, queries=queries, layers=layers, eos_token_id=[], progress=False)
    want_layers = sorted(layers) if layers is not None else list(range(model.cfg.n_layers))
    assert shares.layers == want_layers and shares.values.shape[1:3] == (len(want_layers), model.cfg.n_heads)
    assert set(shares.batch.tolist()) == set(range(len(layout.rows))), "every row has queries"
    assert int((shares.step > 0).sum()) == len(layout.rows) * (new - 1), "one query per row and decoding step"
    assert not shares.values.isnan().any()
    assert float((shares.values.sum(-1) - 1).abs().max()) < SHARE_ATOL
    assert float(shares.values.min()) >= 0


def test_a_query_mask_on_padding_positions_is_refused(family, model):
    rows = [family.text(model, torch.tensor([[5, 6, 7, 8, 9]])), family.text(model, torch.tensor([[5, 6]]))]
    batch = family.batch(model, rows)  # left-padded: row 1 starts with 3 padding positions
    queries = batch.attention_mask == 0
    queries[:, -1] = True
    with pytest.raises(ValueError, match=r"queries.*padding"):
        attention_share(model, batch, queries=queries, progress=False)


# ----------------------------------------------------------------------------- 5. plain, cached, hooked


@st.composite
def forward_inputs(draw, kit, model: HookedAVLLM):
    """Bare text ids ``[batch, n]`` or the kit's prepared inputs of a random layout."""
    if draw(st.booleans(), label="bare ids"):
        shape = (draw(st.integers(1, 3), label="batch"), draw(st.integers(1, 12), label="length"))
        return torch.randint(0, TEXT_IDS, shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    return build_batch(kit, model, draw(layouts(kit, min_rows=1, max_rows=2), label="layout"))[0]


NAME_FILTERS = {"resid_post": lambda name: name.endswith("hook_resid_post"), "pattern": lambda name: name.endswith("hook_pattern"),
                "nothing": lambda name: False}


@examples(4)
@given(data=st.data())
def test_forward_equals_run_with_cache_and_run_with_hooks(family, model, data):
    x = data.draw(forward_inputs(family, model), label="inputs")
    names = data.draw(st.sampled_from(sorted(NAME_FILTERS)), label="names_filter")
    assert_forwards_agree(model, x, NAME_FILTERS[names])


# ----------------------------------------------------------------------------- 6. random text sizes


@examples(3)
@given(data=st.data())
def test_random_text_sizes_keep_batching_and_caching_exact(family, model, data):
    """The family's tiny config with another decoder (1-3 layers, heads and key/value heads that
    divide, d_head 8-32) parses and builds; batching and the cached forward stay exact on it, and the
    attention shares (which group query heads onto key/value heads themselves) are the cached
    patterns' (summed per key kind). A family
    that adds rows after its first decoder layers (``injection_layers``) needs that many layers: fewer
    are refused when the model is built, naming the layer count."""
    sizes = data.draw(text_sizes(), label="sizes")
    config = resized_config(model, sizes)
    needed = max(model.architecture.injection_layers(model.cfg), default=-1) + 1
    if sizes.n_layers < needed:
        with pytest.raises(ValueError, match=rf"layers.*\b{sizes.n_layers}\b"):
            HookedAVLLM.from_config(config, seed=1)
        return
    resized = HookedAVLLM.from_config(config, seed=data.draw(st.integers(0, 2**16), label="seed"))
    text = resized.cfg.text
    assert (text.n_layers, text.n_heads, text.n_kv_heads, text.d_head) == (sizes.n_layers, sizes.n_heads, sizes.n_kv_heads, sizes.d_head)
    assert len(resized.blocks) == sizes.n_layers
    layout = data.draw(layouts(family, max_rows=2), label="layout")
    batch, alone = build_batch(family, resized, layout)
    assert_rows_match(resized, batch, alone)
    cache = assert_forwards_agree(resized, batch)
    shares = attention_share(resized, batch, queries="all", progress=False)
    kinds = batch.layout.kind_codes()
    for layer in range(sizes.n_layers):
        full = shares_from_patterns(cache["pattern", layer], kinds)[shares.batch, :, shares.position]
        gap = float((shares.values[:, layer] - full).abs().max())
        assert gap < SHARE_ATOL, f"layer {layer}: shares differ from the cached pattern's by {gap:.2e}"
