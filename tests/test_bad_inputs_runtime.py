"""The bad-input catalogue, areas "device_map", "parallel" and "saes": placements a machine cannot
honour, torchrun environments that could never form a group (which would wait forever), and SAEs
that do not fit their hook, for every family. Each case that takes a model leaves it as a fresh
one (``ModelSnapshot``): a refused plan moves no weight, a refused SAE stays detached.

A valid but unusual placement is checked too: a decoder block (Qwen3-Omni's: a mixture of experts,
whose router reads its weight directly) and the audio tower offloaded to disk give the logits,
per-head results and generated tokens of the model in memory, bit for bit.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from bad_inputs import Case, ModelSnapshot, check, environment
from test_saes import TinySAE  # the suite's hand-made SAE with SAELens's names

from hooked_avllm import parallel
from hooked_avllm.device_map import dispatch, plan_device_map

RESID = "blocks.0.hook_resid_post"


# ------------------------------------------------------------------------------- helpers


def sae(ctx, hook: str | None = RESID, d_in: int | None = None, seed: int = 0) -> TinySAE:
    return TinySAE(hook, ctx.model.cfg.d_model if d_in is None else d_in, d_sae=8, seed=seed)



def init_with(**env: str | None):
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29513", "LOCAL_RANK": None, "LOCAL_WORLD_SIZE": None}

    def run(ctx):
        with environment(**{**base, **env}):
            return parallel.init_from_env(backend="gloo")

    return run


def whole_model_on(device):
    return lambda ctx: ctx.model.dispatch({"": device})


def plan(**placements):
    """Every top-level module with weights on the CPU, then ``placements`` (``blocks_1="disk"`` -> ``blocks.1``)."""
    def build(model) -> dict:
        out = {name: "cpu" for name, module in model.named_children() if any(True for _ in module.parameters())}
        out.pop("blocks", None)
        out.update({f"blocks.{i}": "cpu" for i in range(model.cfg.n_layers)})
        out.update({k.replace("_", "."): v for k, v in placements.items()})
        return out

    return build


def offloaded_equals_in_memory(ctx):
    """Block 1 and the audio tower on disk: logits, per-head results and greedy tokens as in memory
    (``ctx.model``, the same seed, is the model in memory)."""
    reference = ctx.model
    split = ctx.family.model(seed=0).dispatch(plan(blocks_1="disk", audio="disk")(reference),
                                              offload_dir=str(ctx.tmp / f"offload_{ctx.family.name}"))
    assert {str(p.device) for n, p in split.named_parameters() if n.startswith("blocks.1.")} == {"meta"}
    name = "blocks.1.attn.hook_result"
    try:
        with torch.no_grad():
            assert torch.equal(split(ctx.inputs), reference(ctx.inputs))
            for model in (split, reference):
                model.set_use_attn_result(True)  # the attention then reads out.weight itself to split the heads
            got = split.run_with_cache(ctx.inputs, names_filter=name)[1][name]
            assert torch.equal(got, reference.run_with_cache(ctx.inputs, names_filter=name)[1][name])
    finally:
        reference.set_use_attn_result(False)
    ids = ctx.family.text(reference, torch.tensor([[5, 17, 42, 99, 7, 3]]))
    assert torch.equal(split.generate(ids, max_new_tokens=3, eos_token_id=[]),
                       reference.generate(ids, max_new_tokens=3, eos_token_id=[]))


def dispatch_with(build, **kwargs):
    return lambda ctx: dispatch(ctx.model, plan_device_map(ctx.model, build(ctx.model)), **kwargs)


def used_offload_dir(ctx):
    folder = ctx.tmp / "used_offload"
    folder.mkdir(exist_ok=True)
    (folder / "index.json").write_text("{}")  # what an earlier dispatch leaves there
    dispatch(ctx.model, plan_device_map(ctx.model, plan(blocks_1="disk")(ctx.model)), offload_dir=str(folder))


def two_saes_one_hook(ctx):
    ctx.model.run_with_saes(ctx.inputs, saes=[sae(ctx, seed=1), sae(ctx, seed=2)])


def add_sae_twice(ctx):
    first, second = sae(ctx, seed=1), sae(ctx, seed=2)
    try:
        ctx.model.add_sae(first)
        ctx.model.add_sae(second)
        assert ctx.model.acts_to_saes == {RESID: second}  # replaced, as in SAELens, and said so
    finally:
        ctx.model.reset_saes()


def sae_of_width(width):
    return lambda ctx: ctx.model.run_with_saes(ctx.inputs, saes=[sae(ctx, d_in=width)])


def sae_at(hook):
    return lambda ctx: ctx.model.run_with_saes(ctx.inputs, saes=[sae(ctx, hook=hook)])


def sae_on_meta(ctx):
    ctx.model.run_with_saes(ctx.inputs, saes=[sae(ctx).to("meta")])


def error_term_keeps_logits(ctx):
    """An SAE with its error term: the model's logits unchanged, the features cached at every position."""
    with torch.no_grad():
        plain = ctx.model(ctx.inputs)
        logits, cache = ctx.model.run_with_cache_with_saes(ctx.inputs, saes=[sae(ctx)], use_error_term=True)
    assert (logits - plain).abs().max() < 1e-5
    assert cache[RESID + ".hook_sae_acts_post"].shape == (*ctx.inputs.input_ids.shape, 8)


# ------------------------------------------------------------------------------- the catalogue

MODEL_CASES = [
    # device maps (model.dispatch / plan_device_map / dispatch): refused before any weight moves
    Case("the whole model on cuda:99", "device_map", whole_model_on("cuda:99"), ValueError,
         r"device_map\[''\]='cuda:99' is not on this machine, which has \['cpu', 'disk'.*\]"),
    Case("the whole model on GPU 7 (an index)", "device_map", whole_model_on(7), ValueError,
         r"device_map\[''\]=7 is not on this machine, which has \['cpu', 'disk'"),
    Case("the whole model on xpu:3", "device_map", whole_model_on("xpu:3"), ValueError,
         r"device_map\[''\]='xpu:3' is not on this machine"),
    Case("a device named 'gpu0'", "device_map", whole_model_on("gpu0"), ValueError,
         r"device_map\[''\] = 'gpu0' is not a device: use a GPU index, 'cuda:N', 'cpu' or 'disk'"),
    Case("a device given as True", "device_map", whole_model_on(True), ValueError, r"device_map\[''\] = True is not a device"),
    Case("a module name with a typo", "device_map", lambda ctx: ctx.model.dispatch({"": "cpu", "block.0": "cpu"}),
         ValueError, r"device_map names 'block\.0', which is not a module of this model; did you mean \['blocks\.0'"),
    Case("a plan that leaves modules out", "device_map", lambda ctx: ctx.model.dispatch({"blocks": "cpu"}), ValueError,
         r"device_map does not place \d+ parameters \(e\.g\. \['\w+.*give every top-level module a device"),
    Case("an unknown strategy", "device_map", lambda ctx: ctx.model.dispatch("everywhere"), ValueError,
         r"device_map='everywhere': use one of \('auto', 'balanced', 'balanced_low_0', 'sequential'\)"),
    Case("device_map=True", "device_map", lambda ctx: ctx.model.dispatch(True), ValueError,
         r"device_map=True: use one of \('auto'"),
    Case("a block on disk without offload_dir", "device_map", lambda ctx: ctx.model.dispatch(plan(blocks_1="disk")(ctx.model)),
         ValueError, r"device_map puts \['blocks\.1'\] on 'disk' but no offload_dir was given: pass offload_dir="),
    Case("the embedding on disk", "device_map", dispatch_with(plan(embed="disk"), offload_dir="unused"), ValueError,
         r"device_map puts the embedding on 'disk' \(\['embed'\]\).*put 'embed' on 'cpu' or a GPU"),
    Case("an offload_dir holding an earlier offload", "device_map", used_offload_dir, ValueError,
         r"offload_dir='.*used_offload' already holds offloaded weights \(index\.json\).*pass an empty folder"),
    Case("a block and the audio tower offloaded to disk", "device_map", offloaded_equals_in_memory, None),
    # SAEs
    Case("two SAEs for one hook in one list", "saes", two_saes_one_hook, ValueError,
         r"saes\[0\] \(TinySAE\(d_in=\d+, d_sae=8\)\) and saes\[1\] \(TinySAE\(d_in=\d+, d_sae=8\)\) both read "
         r"blocks\.0\.hook_resid_post; one hook holds one SAE"),
    Case("add_sae twice at one hook", "saes", add_sae_twice, UserWarning,
         r"add_sae replaces the SAE at blocks\.0\.hook_resid_post \(TinySAE\(d_in=\d+, d_sae=8\)\) with "
         r"TinySAE\(d_in=\d+, d_sae=8\)"),
    Case("an SAE of another width", "saes", sae_of_width(7), ValueError,
         r"the SAE at blocks\.0\.hook_resid_post has d_in=7 but the activation there is \d+ wide.*use an SAE trained on "
         r"blocks\.0\.hook_resid_post \(d_in=\d+\)"),
    Case("an SAE hook name with a typo", "saes", sae_at("blocks.0.hook_resid_pots"), ValueError,
         r"the model has no hook point 'blocks\.0\.hook_resid_pots' \(the SAE's hook name\); similar names: "
         r"\['blocks\.0\.hook_resid_post'"),
    Case("an SAE at a layer the model lacks", "saes", sae_at("blocks.9.hook_resid_post"), ValueError,
         r"no hook point 'blocks\.9\.hook_resid_post'.*similar names: \['blocks\.\d\.hook_resid_post'"),
    Case("an SAE config without a hook name", "saes", sae_at(None), ValueError,
         r"the SAE's config names no hook: set sae\.cfg\.metadata\.hook_name"),
    Case("a hook name instead of an SAE", "saes", lambda ctx: ctx.model.run_with_saes(ctx.inputs, saes=RESID), TypeError,
         r"saes='blocks\.0\.hook_resid_post' is not an SAE or a list of SAEs; pass saes=\[sae, \.\.\.\]"),
    Case("None in the list of SAEs", "saes", lambda ctx: ctx.model.run_with_saes(ctx.inputs, saes=[None]), TypeError,
         r"NoneType None is not an SAE \(it has no encode, decode, cfg, hook_dict\)"),
    Case("an SAE on the meta device", "saes", sae_on_meta, ValueError,
         r"the SAE for blocks\.0\.hook_resid_post has parameters on meta but the model is on cpu: move it first"),
    Case("use_error_term='yes'", "saes", lambda ctx: ctx.model.add_sae(sae(ctx), use_error_term="yes"), TypeError,
         r"use_error_term='yes' must be True, False or None"),
    Case("exclude_special_tokens=True", "saes", lambda ctx: ctx.model.add_sae(sae(ctx), exclude_special_tokens=True),
         ValueError, r"exclude_special_tokens is not supported: the SAE runs at every position"),
    Case("reset_saes where none is attached", "saes", lambda ctx: ctx.model.reset_saes(RESID), ValueError,
         r"no SAE is attached at \['blocks\.0\.hook_resid_post'\]; attached: none"),
    Case("an SAE with its error term", "saes", error_term_keeps_logits, None),
]


def device_with_local_rank(value: str):
    def run(ctx):
        with environment(LOCAL_RANK=value):
            return parallel.device_for_rank()

    return run


def single_process(ctx):
    """torchrun's variables for one process: nothing to initialise, the world is (0, 1)."""
    assert init_with(WORLD_SIZE="1", RANK="0")(ctx) == (0, 1)


def generator_of_items(ctx):
    parallel.map_sharded(lambda i, x: x, (x for x in range(3)))


PLAIN_CASES = [
    Case("RANK = WORLD_SIZE", "parallel", init_with(WORLD_SIZE="2", RANK="2"), ValueError,
         r"RANK=2 with WORLD_SIZE=2 in the environment: ranks run from 0 to WORLD_SIZE - 1.*wait forever.*RANK in 0\.\.1"),
    Case("a negative RANK", "parallel", init_with(WORLD_SIZE="2", RANK="-1"), ValueError,
         r"RANK=-1 with WORLD_SIZE=2 in the environment"),
    Case("WORLD_SIZE='two'", "parallel", init_with(WORLD_SIZE="two", RANK="0"), ValueError,
         r"environment variable WORLD_SIZE='two' is not an integer"),
    Case("RANK='0.5'", "parallel", init_with(WORLD_SIZE="2", RANK="0.5"), ValueError,
         r"environment variable RANK='0\.5' is not an integer"),
    Case("WORLD_SIZE=0", "parallel", init_with(WORLD_SIZE="0", RANK="0"), ValueError,
         r"WORLD_SIZE=0 in the environment; it counts the processes, so it must be at least 1"),
    Case("LOCAL_RANK beyond LOCAL_WORLD_SIZE", "parallel", init_with(WORLD_SIZE="4", RANK="3", LOCAL_RANK="2",
                                                                   LOCAL_WORLD_SIZE="2"), ValueError,
         r"LOCAL_RANK=2 with LOCAL_WORLD_SIZE=2 in the environment"),
    Case("LOCAL_WORLD_SIZE above WORLD_SIZE", "parallel", init_with(WORLD_SIZE="2", RANK="0", LOCAL_WORLD_SIZE="4"),
         ValueError, r"LOCAL_WORLD_SIZE=4 with WORLD_SIZE=2 in the environment"),
    Case("MASTER_PORT=70000", "parallel", init_with(WORLD_SIZE="2", RANK="0", MASTER_PORT="70000"), ValueError,
         r"MASTER_PORT='70000' in the environment is not a port \(1\.\.65535\)"),
    Case("WORLD_SIZE=2 without MASTER_ADDR", "parallel", init_with(WORLD_SIZE="2", RANK="0", MASTER_ADDR=None),
         RuntimeError, r"WORLD_SIZE=2 but MASTER_ADDR unset: launch with torchrun"),
    Case("a negative LOCAL_RANK for the device", "parallel", device_with_local_rank("-1"), ValueError,
         r"LOCAL_RANK=-1 in the environment is negative"),
    Case("WORLD_SIZE=1: a single process", "parallel", single_process, None),
    Case("items from a generator", "parallel", generator_of_items, TypeError,
         r"items must be a list \(or another sequence\) of items, got a generator.*pass list\(items\)"),
    Case("distributed='yes'", "parallel", lambda ctx: parallel.active("yes"), TypeError,
         r"distributed must be True, False or None, got 'yes'"),
    Case("shard_indices(2.5)", "parallel", lambda ctx: parallel.shard_indices(2.5), TypeError,
         r"n=2\.5 must be an int \(the number of items\), not a float"),
    Case("gathered indices that do not split the list", "parallel", lambda ctx: parallel.gather(["a", "b"], [0, 0]),
         ValueError, r"rank 0 sent index 0, twice: the ranks' indices must split range\(n\)"),
]

CASES = MODEL_CASES + PLAIN_CASES


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="module")
def inputs(family, model):
    return family.clip(model, seconds=1)


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: c.name)
def test_bad_runtime_input(case, family, model, inputs, module_tmp):
    snapshot = ModelSnapshot(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*offloaded.*")  # accelerate notes meta parameters
        check(case, SimpleNamespace(model=model, inputs=inputs, family=family, tmp=module_tmp))
    snapshot.assert_unchanged()


@pytest.mark.parametrize("case", PLAIN_CASES, ids=lambda c: c.name)
def test_bad_parallel_environment(case):
    with environment(RANK=None, WORLD_SIZE=None, LOCAL_RANK=None, LOCAL_WORLD_SIZE=None):
        check(case, None)
