"""The bad-input catalogue, area "hooks": hook names, what hooks return, and the activation cache
they fill, for every family. An unknown hook name (``run_with_hooks``, ``hooks()``, ``add_hook``,
a ``names_filter`` list, ``cache[...]``, ``cache.select``) raises a ``KeyError`` suggesting the
closest names; a hook returning a tensor that cannot replace its activation (another shape, dtype)
raises naming the hook (``hooked_avllm.components.hook_checks``); a time window outside the clip
raises naming the window and the clip's span. Every case leaves the model as a fresh one: no hook
left behind, even when the call raised inside a hook context.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bad_inputs import Case, ModelSnapshot, check, family_cases

RESID = "blocks.0.hook_resid_post"
UNKNOWN = r"no hook point 'blocks\.0\.hook_resid_pots'; did you mean 'blocks\.0\.hook_resid_post'"


def keep(act, hook):
    return None


def hooked(ctx, name, hook, inputs=None):
    """``run_with_hooks`` of the clip (or ``inputs``) with one forward hook."""
    return ctx.model.run_with_hooks(ctx.inputs if inputs is None else inputs, fwd_hooks=[(name, hook)])


def in_hooks_context(ctx, name, hook):
    """A forward inside ``model.hooks(...)`` (the context must clean up when the forward raises)."""
    with ctx.model.hooks(fwd_hooks=[(name, hook)]):
        return ctx.model(ctx.inputs)


def add_then_run(ctx, name, hook):
    """``model.add_hook`` then a forward; the hook is removed whatever happens."""
    try:
        ctx.model.add_hook(name, hook)
        return ctx.model(ctx.inputs)
    finally:
        ctx.model.reset_hooks()


def same_logits(got, expected):
    assert torch.equal(got, expected), f"max difference {float((got - expected).abs().max())}"


def fired_names(ctx):
    """The hook names a name-filter function fires on, against the model's own layer count."""
    fired = []
    in_decoder = lambda name: name.startswith("blocks.") and name.endswith("hook_resid_post")  # noqa: E731
    with ctx.model.hooks(fwd_hooks=[(in_decoder, lambda act, hook: fired.append(hook.name))]):
        ctx.model(ctx.inputs)
    assert fired == [f"blocks.{layer}.hook_resid_post" for layer in range(len(ctx.model.blocks))], fired


def audio_window(ctx):
    got = ctx.cache.select(RESID, "audio", time=(1.0, 2.0)).shape[0]
    expected = ctx.family.answers.audio_in_second_two  # counted by hand from the tower's token rate (kits)
    assert got == expected, (got, expected)


def cached_as_tuple(ctx):
    logits, cache = ctx.model.run_with_cache(ctx.inputs, names_filter=(RESID,))
    assert list(cache.keys()) == [RESID]
    same_logits(logits, ctx.logits)
    assert torch.equal(cache[RESID], ctx.cache[RESID])


def run_generating(ctx, hook):
    with ctx.model.hooks(fwd_hooks=[(RESID, hook)]):
        return ctx.model.generate(ctx.inputs, 2)


CASES = [
    # ---------------------------------------------------------------- unknown hook names
    Case("run_with_hooks on a misspelt hook", "hooks", lambda ctx: hooked(ctx, "blocks.0.hook_resid_pots", keep), KeyError,
         UNKNOWN),
    Case("run_with_hooks on a layer the model lacks", "hooks", lambda ctx: hooked(ctx, "blocks.7.hook_resid_post", keep),
         KeyError, r"no hook point 'blocks\.7\.hook_resid_post'; did you mean .*; the model has 2 blocks, 0-1\)"),
    Case("run_with_hooks backward hook on a misspelt hook", "hooks",
         lambda ctx: ctx.model.run_with_hooks(ctx.inputs, bwd_hooks=[("blocks.0.hook_resid_pots", keep)], reset_hooks_end=False),
         KeyError, UNKNOWN),
    Case("hooks() on a misspelt hook", "hooks", lambda ctx: in_hooks_context(ctx, "blocks.0.hook_resid_pots", keep), KeyError,
         UNKNOWN),
    Case("hooks() on a module that is not a hook point", "hooks", lambda ctx: in_hooks_context(ctx, "blocks.0.attn", keep),
         KeyError, r"'blocks\.0\.attn' is a module, not a hook point; hook its hook points instead, e\.g\. \['blocks\.0\.attn\.hook_"),
    Case("add_hook on a misspelt hook", "hooks", lambda ctx: add_then_run(ctx, "blocks.0.hook_resid_pots", keep), KeyError,
         UNKNOWN),
    Case("add_hook on a TransformerLens short name", "hooks", lambda ctx: add_then_run(ctx, "resid_post", keep), KeyError,
         r"no hook point 'resid_post'; .*model\.hook_dict lists them all"),
    Case("run_with_cache names_filter listing a misspelt hook", "hooks",
         lambda ctx: ctx.model.run_with_cache(ctx.inputs, names_filter=[RESID, "blocks.0.hook_resid_pots"]), KeyError, UNKNOWN),
    Case("run_with_cache names_filter naming a misspelt hook", "hooks",
         lambda ctx: ctx.model.run_with_cache(ctx.inputs, names_filter="blocks.0.hook_resid_pots"), KeyError, UNKNOWN),
    Case("run_with_cache names_filter of the wrong type", "hooks",
         lambda ctx: ctx.model.run_with_cache(ctx.inputs, names_filter=3), TypeError,
         r"names_filter must be a hook name, a list of hook names or a function of the name; got int"),
    Case("generate_with_cache names_filter listing a misspelt hook", "hooks",
         lambda ctx: ctx.model.generate_with_cache(ctx.inputs, 2, names_filter=["blocks.0.hook_resid_pots"]), KeyError, UNKNOWN),
    # ---------------------------------------------------------------- the cache
    Case("cache[...] of a misspelt hook", "hooks", lambda ctx: ctx.cache["blocks.0.hook_resid_pots"], KeyError,
         r"this cache has no 'blocks\.0\.hook_resid_pots'; did you mean 'blocks\.0\.hook_resid_post'.*\(cache\.keys\(\) lists"),
    Case("cache[name, layer] of a layer the model lacks", "hooks", lambda ctx: ctx.cache["resid_post", 9], KeyError,
         r"this cache has no 'blocks\.9\.hook_resid_post'; .*the model has 2 blocks, 0-1\)"),
    Case("cache.select of a hook the names_filter left out", "hooks", lambda ctx: ctx.cache.select("blocks.0.hook_attn_out"),
         KeyError, r"this cache does not hold 'blocks\.0\.hook_attn_out': the model has that hook, but it was not cached"),
    Case("cache.select of a gradient that was not cached", "hooks", lambda ctx: ctx.cache.select(RESID + "_grad"),
         KeyError, r"does not hold 'blocks\.0\.hook_resid_post_grad'.*incl_bwd=True"),
    Case("cache.select with a time window after the clip", "hooks",
         lambda ctx: ctx.cache.select(RESID, "audio", time=(50.0, 60.0)), ValueError,
         r"time=\(50\.0, 60\.0\) selects none of the audio positions: they span \d+\.\d\d-\d+\.\d\d s of the clip"),
    Case("cache.select with a time window on text", "hooks",
         lambda ctx: ctx.cache.select(RESID, "text", time=(0.0, 1.0)), ValueError,
         r"time=\(0\.0, 1\.0\) selects nothing: the text positions have no clip time"),
    Case("cache.select with a reversed time window", "hooks",
         lambda ctx: ctx.cache.select(RESID, "audio", time=(2.0, 1.0)), ValueError,
         r"time=\(start, end\) needs end > start, got \(2\.0, 1\.0\)"),
    Case("cache.select with a time that is not a window", "hooks",
         lambda ctx: ctx.cache.select(RESID, "audio", time=1.0), ValueError,
         r"time must be \(start, end\) in seconds; got 1\.0"),
    Case("cache.select of misspelt positions", "hooks", lambda ctx: ctx.cache.select(RESID, "audoi"), ValueError,
         r"unknown positions 'audoi' \(did you mean 'audio'\?\); use one of text, audio, video"),
    Case("cache.restrict with a time window before the clip", "hooks",
         lambda ctx: ctx.cache.restrict("video", time=(-9.0, -5.0)), ValueError,
         r"time=\(-9\.0, -5\.0\) selects none of the video positions: they span"),
    Case("cache.select with a window inside the clip", "hooks", audio_window, None),
    # ---------------------------------------------------------------- what hooks return
    Case("a hook returning [batch, 1, d] for [batch, pos, d]", "hooks",
         lambda ctx: hooked(ctx, RESID, lambda act, hook: act[:, :1]), ValueError,
         r"a hook on blocks\.0\.hook_resid_post returned a tensor of shape \(1, 1, \d+\) float32 where the activation it "
         r"replaces is \(1, \d+, \d+\) float32"),
    Case("a hook returning float64", "hooks", lambda ctx: hooked(ctx, RESID, lambda act, hook: act.double()), ValueError,
         r"a hook on blocks\.0\.hook_resid_post returned a tensor of shape \(1, (\d+), (\d+)\) float64 where the activation "
         r"it replaces is \(1, \1, \2\) float32"),
    Case("a hook returning a tuple", "hooks", lambda ctx: hooked(ctx, RESID, lambda act, hook: (act,)), ValueError,
         r"a hook on blocks\.0\.hook_resid_post returned a tuple; a hook returns a tensor of the activation's shape"),
    Case("a wrong-shaped hook inside hooks()", "hooks",
         lambda ctx: in_hooks_context(ctx, "blocks.1.hook_mlp_out", lambda act, hook: act.mean(1, keepdim=True)), ValueError,
         r"a hook on blocks\.1\.hook_mlp_out returned a tensor of shape \(1, 1, \d+\)"),
    Case("a wrong-shaped hook added with add_hook", "hooks",
         lambda ctx: add_then_run(ctx, RESID, lambda act, hook: act[0]), ValueError,
         r"a hook on blocks\.0\.hook_resid_post returned a tensor of shape \(\d+, \d+\) float32"),
    Case("a wrong-shaped hook on the audio projector", "hooks",
         lambda ctx: hooked(ctx, "audio_proj.hook_out", lambda act, hook: act[..., :1, :]), ValueError,
         r"a hook on audio_proj\.hook_out returned a tensor of shape \(.*1, \d+\) float32 where the activation it replaces"),
    Case("a wrong-shaped hook while generating", "hooks",
         lambda ctx: run_generating(ctx, lambda act, hook: act[:, :1] if act.shape[1] > 1 else act), ValueError,
         r"a hook on blocks\.0\.hook_resid_post returned a tensor of shape \(1, 1, \d+\)"),
    Case("a hook returning None keeps the activation", "hooks",
         lambda ctx: same_logits(hooked(ctx, RESID, keep), ctx.logits), None),
    Case("a hook returning a copy of the right shape", "hooks",
         lambda ctx: same_logits(hooked(ctx, RESID, lambda act, hook: act.clone()), ctx.logits), None),
    Case("a name-filter function hooks every matching layer", "hooks", fired_names, None),
    Case("run_with_cache names_filter as a tuple", "hooks", cached_as_tuple, None),
]





@pytest.fixture(scope="module")
def clip(family, model):
    inputs = family.clip(model)
    logits, cache = model.run_with_cache(inputs, names_filter=lambda name: name.endswith("hook_resid_post"))
    return SimpleNamespace(model=model, family=family, inputs=inputs, logits=logits, cache=cache)


@pytest.mark.parametrize("case, family", family_cases(CASES), indirect=["family"])
def test_bad_hook(case, family, model, clip):
    snapshot = ModelSnapshot(model)
    check(case, clip)
    snapshot.assert_unchanged()
