"""Modality selection, generation caching, knockout, token dropping and attention share: known answers,
on every family (each family's test kit in ``tests/kits/``: tiny Qwen2.5-Omni and Qwen3-Omni thinkers,
a tiny VideoLLaMA2.1-AV, ...)."""

from __future__ import annotations


import pytest
import torch

from hooked_avllm.analysis.attention_share import attention_share, shares_from_patterns
from hooked_avllm.analysis.knockout import Knockout, KnockoutRule, generate_with_knockout, knockout, knockout_sweep
from hooked_avllm.analysis.token_dropping import drop_tokens
from hooked_avllm.inputs import teacher_forced_inputs
from hooked_avllm.vocabulary import AUDIO, GENERATED, VIDEO
from kits import families_where

# ESPnet's BEATs (the VideoLLaMA2 reference) uses a deprecated autocast spelling
pytestmark = pytest.mark.filterwarnings("ignore:.*autocast.*:FutureWarning")

NEW = 6
RESIDS = ("hook_resid_pre", "hook_resid_post")


@pytest.fixture(scope="module")
def model_seed():
    return 3


@pytest.fixture(scope="module")
def av(family, model):
    return family.clip(model, seconds=3, seed=1)


@pytest.fixture(scope="module")
def batch(family, model):
    return family.batch(model, [family.clip(model, seconds=3, seed=1), family.clip(model, seed=2, **family.other_length)])


def teacher_forced(inputs, tokens):
    """The inputs with the generated tokens appended (the layout marks them generated)."""
    return teacher_forced_inputs(inputs, tokens[:, inputs.input_ids.shape[1]:])


# ----------------------------------------------------------------------------- selection


# the known answers (the kit's ``answers``): audio tokens of the batch in [0, 2) s (early_audio), of its
# second row (other_row_audio), and of each row in [0.5, 1.1) s (window_audio)


def test_select_by_modality_time_and_item(family, model, batch):
    _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("resid_post") or n.endswith("hook_pattern"))
    layout = cache.layout
    resid = cache["blocks.1.hook_resid_post"]
    assert torch.equal(cache.select("blocks.1.hook_resid_post", "audio"), resid[layout.audio])
    early = cache.select("blocks.1.hook_resid_post", "audio", time=(0.0, 2.0))
    assert early.shape[0] == family.answers.early_audio
    assert torch.equal(cache.positions("audio", time=(0.0, 2.0)), layout.audio & (layout.audio_time < 2.0))
    # a window inside the clip picks the tokens whose time, from the tower's token rate, lies in [a, b)
    window = cache.positions("audio", time=(0.5, 1.1))
    for b in range(2):
        audio = torch.nonzero(layout.audio[b]).flatten()
        times = family.audio_token_times(len(audio))
        want = torch.zeros_like(layout.audio[b])
        want[audio[(times >= 0.5) & (times < 1.1)]] = True
        assert torch.equal(window[b], want) and int(want.sum()) == family.answers.window_audio
    second_video = cache.select("blocks.1.hook_resid_post", "video", item=1)
    span = layout.spans_of("video")[1]
    assert torch.equal(second_video, resid[span.batch, span.positions])
    assert cache.select("blocks.1.hook_resid_post", "audio", batch=1).shape[0] == family.answers.other_row_audio
    last = cache.select("blocks.0.attn.hook_pattern", "last")  # query axis: [n, head, key]
    assert last.shape == (2, 4, batch.input_ids.shape[1])
    assert torch.equal(last[0], cache["blocks.0.attn.hook_pattern"][0, :, -1])
    with pytest.raises(ValueError, match="encoder activation"):
        cache.select("audio.blocks.0.hook_resid_post", "audio")
    with pytest.raises(ValueError, match="no video item 5"):
        cache.select("blocks.1.hook_resid_post", "video", item=5)
    with pytest.raises(ValueError, match="unknown positions"):
        cache.select("blocks.1.hook_resid_post", "sound")


# a family that parses a layout from bare ids + media (Qwen); VideoLLaMA2 lays out only what its prompt builder made
@families_where(lambda kit: kit.lays_out_bare_ids)
def test_cache_of_hf_style_kwargs_gets_a_layout(model, av):
    _, cache = model.run_with_cache(**av.forward_kwargs())
    assert cache.layout is not None
    assert torch.equal(cache.layout.audio, av.layout.audio) and torch.equal(cache.layout.video, av.layout.video)


# ----------------------------------------------------------------------------- generation caching


def test_generate_with_cache_concatenated_equals_teacher_forced_forward(model, batch):
    names = lambda n: n.endswith("hook_resid_post") or n == "blocks.1.attn.hook_pattern"  # noqa: E731
    tokens, cache = model.generate_with_cache(batch, NEW, names_filter=names, eos_token_id=[], device="cpu")
    assert cache.layout.shape == tuple(tokens.shape) and int(cache.layout.generated.sum()) == 2 * NEW
    _, full = model.run_with_cache(teacher_forced(batch, tokens), names_filter=names)
    real = cache.layout.attention_mask.bool()
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
        assert (cache[name][real] - full[name][real]).abs().max() < 1e-5
    pattern, reference = cache["blocks.1.attn.hook_pattern"], full["blocks.1.attn.hook_pattern"]
    assert pattern.shape == reference.shape
    assert (pattern - reference).abs().max() < 1e-5
    assert cache.select("blocks.1.hook_resid_post", "generated").shape == (2 * NEW, model.cfg.d_model)


def test_generate_with_cache_per_step(model, av):
    tokens, caches = model.generate_with_cache(av, 4, names_filter=["blocks.0.hook_resid_post", "audio.hook_out"],
                                               concat=False, eos_token_id=[])
    assert len(caches) == 5  # prefill + 4 steps (the last token is run too)
    assert caches[0]["blocks.0.hook_resid_post"].shape[1] == av.input_ids.shape[1]
    assert all(c["blocks.0.hook_resid_post"].shape[1] == 1 for c in caches[1:])
    assert "audio.hook_out" in caches[0].cache_dict and "audio.hook_out" not in caches[1].cache_dict


# ----------------------------------------------------------------------------- knockout


def test_empty_knockout_equals_plain_forward_and_generate(model, batch):
    with torch.no_grad():
        plain = model(batch)
        with knockout(model, []):
            edited = model(batch)
    assert torch.equal(plain, edited)
    assert torch.equal(model.generate(batch, NEW, eos_token_id=[]),
                       generate_with_knockout(model, batch, [], NEW, eos_token_id=[]))


@pytest.fixture(scope="module")
def reference_pair(family, tmp_path_factory):
    """(independent reference, our model loaded from its checkpoint): the kit's reference, e.g. the
    Hugging Face Qwen2.5-Omni or Qwen3-Omni thinker (3 MoE layers, DeepStack into layers 0-1);
    VideoLLaMA2.1-AV assembled from transformers' Qwen2 and SigLIP, timm and ESPnet's BEATs."""
    return family.reference_pair(seed=1, folder=tmp_path_factory.mktemp("knockout_ref"), variant="a")


@pytest.mark.parametrize("rule,layers", [(("any", "audio"), None), (("text", "video"), (1, 2))])
def test_knockout_equals_masked_reference(family, reference_pair, rule, layers):
    """The reference run with an explicit 4D additive mask built here (edges blocked in every
    layer) is the independent reference; with a layer range, only the covered layers differ,
    checked through each layer's residual."""
    reference, ours = reference_pair
    inputs = family.clip(ours, seconds=3, seed=5)
    n = inputs.input_ids.shape[1]
    kinds = family.token_kinds(inputs.input_ids, inputs.attention_mask, ours.cfg.tokens)
    codes = {"any": [0, 1, 2, 3], "audio": [AUDIO], "video": [VIDEO], "text": [0]}
    q = torch.isin(kinds, torch.tensor(codes[rule[0]]))[:, :, None]
    k = torch.isin(kinds, torch.tensor(codes[rule[1]]))[:, None, :]
    allowed = torch.ones(n, n, dtype=torch.bool).tril()[None] & ~(q & k) | torch.eye(n, dtype=torch.bool)[None]
    mask = torch.zeros(1, 1, n, n).masked_fill(~allowed[:, None], float("-inf"))
    with torch.no_grad():
        ref = family.reference_forward(reference, inputs, mask)
        with knockout(ours, KnockoutRule(*rule, layers=layers)):
            logits, cache = ours.run_with_cache(inputs, names_filter=lambda name: name.endswith(RESIDS))
        plain = ours(inputs)
    if layers is None:
        assert (logits - ref.logits).abs().max() < 1e-4
        assert (plain - ref.logits).abs().max() > 1e-2  # the rule matters
    else:
        # layer 0 is not covered: its output equals the plain run's; layer 1 is: equals the reference's
        # layer-1 block applied to the plain layer-1 input, which is what the masked reference computes
        # (the layer-0 output, plus Qwen3-Omni's DeepStack rows at the visual positions).
        # The plain run is a no-grad run like the knocked-out one: with grad enabled SDPA may take another
        # kernel where it gets a float mask that requires grad (BEATs' relative position bias: ~1e-6 apart)
        with torch.no_grad():
            _, plain_cache = ours.run_with_cache(inputs, names_filter=lambda name: name.endswith(RESIDS))
        assert torch.allclose(cache["blocks.0.hook_resid_post"], plain_cache["blocks.0.hook_resid_post"])
        assert torch.allclose(cache["blocks.1.hook_resid_pre"], plain_cache["blocks.1.hook_resid_pre"])
        text_model, position_ids = family.reference_decoder(reference, inputs)
        block = text_model.layers[1]
        layer_input = plain_cache["blocks.1.hook_resid_pre"]
        rotary = text_model.rotary_emb(layer_input, position_ids)
        out = block(layer_input, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
        out = out[0] if isinstance(out, tuple) else out
        assert (cache["blocks.1.hook_resid_post"] - out).abs().max() < 1e-4


def test_knockout_generation_with_cache_equals_without(model, batch):
    rules = Knockout([KnockoutRule("generated", "video", layers=(1, 2)), KnockoutRule("generated", "audio", (0, 1))],
                     last_prompt_as_generated=True)
    with knockout(model, rules):
        cached = model.generate(batch, NEW, eos_token_id=[])
        tokens = batch.input_ids
        with torch.no_grad():
            for _ in range(NEW):  # no cache: the whole sequence every step, generated positions marked
                logits = model(teacher_forced(batch, tokens))
                tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, tokens)
    assert not torch.equal(cached, model.generate(batch, NEW, eos_token_id=[]))  # the rules change the text


def test_last_prompt_as_generated_moves_the_last_prompt_query(model, av):
    rule = KnockoutRule("generated", "audio")
    with torch.no_grad():
        plain = model(av)
        with knockout(model, rule):  # no generated positions in a plain forward: nothing changes
            same = model(av)
        with knockout(model, rule, last_prompt_as_generated=True):
            moved = model(av)
    assert torch.equal(plain, same)
    assert torch.equal(moved[:, :-1], plain[:, :-1]) and not torch.allclose(moved[:, -1], plain[:, -1])


def test_knockout_rules_are_checked_and_compose():
    with pytest.raises(ValueError, match="unknown kind"):
        KnockoutRule("generated", "sound")
    combined = KnockoutRule("generated", "video", (18, 30)) | KnockoutRule("generated", "audio")
    assert isinstance(combined, Knockout) and len(combined.rules) == 2
    assert "generated->video @ layers 18-29" in repr(combined)


def test_knockout_sweep_table_and_plot(model, av, tmp_path):
    sweep = knockout_sweep(
        model, [av], {"gen->audio": lambda layers: KnockoutRule("generated", "audio", layers)},
        windows=[(0, 1), (1, 2)], score=lambda new_tokens, clip: float(new_tokens[0]), max_new_tokens=3,
        eos_token_id=[], progress=False,
    )
    assert sweep.scores.shape == (1, 2, 1) and sweep.baseline.shape == (1,)
    assert len(sweep.table()) == 1 + 2
    sweep.plot(tmp_path / "ko.png")
    assert (tmp_path / "ko.png").stat().st_size > 0


# ----------------------------------------------------------------------------- token dropping


def test_dropping_equals_removing_the_tokens(family, model, av):
    """After layer 0, drop the video tokens: later layers equal a run where they are deleted from
    the sequence (remaining tokens keep their position ids), computed here block by block."""
    with torch.no_grad():
        with drop_tokens(model, "video", after_layer=0):
            dropped = model(av)
        _, cache = model.run_with_cache(av, names_filter="blocks.0.hook_resid_post")
        keep = ~av.layout.video[0]
        resid = cache["blocks.0.hook_resid_post"][:, keep]
        kept = av.layout.position_ids[:, :, keep]
        rotary = family.decoder_rotary(model.cfg.text, kept)  # the family's rotary, built by the kit
        for block in model.blocks[1:]:
            resid = block(resid, rotary=rotary, causal=True)
        removed = model.unembed(model.ln_final(resid))
    assert (dropped[:, keep] - removed).abs().max() < 1e-5


def test_dropping_in_generation_matches_recomputation(model, av):
    with drop_tokens(model, "audio", after_layer=0):
        cached = model.generate(av, NEW, eos_token_id=[])
        with torch.no_grad():
            full = model(teacher_forced(av, cached))
    assert torch.equal(full[:, av.input_ids.shape[1] - 1 : -1].argmax(-1), cached[:, av.input_ids.shape[1]:])


# ----------------------------------------------------------------------------- attention share


def test_shares_sum_to_one_and_match_full_patterns(model, batch):
    shares = attention_share(model, batch, queries="all")
    assert shares.values.shape[1:] == (2, 4, 5)
    assert (shares.values.sum(-1) - 1).abs().max() < 1e-5
    _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern"))
    kinds = batch.layout.kind_codes()
    for layer in range(2):
        full = shares_from_patterns(cache["pattern", layer], kinds)  # [batch, head, query, kind]
        expected = full[shares.batch, :, shares.position]
        assert (shares.values[:, layer] - expected).abs().max() < 1e-5


def test_shares_during_generation_match_cached_patterns(model, batch):
    shares = attention_share(model, batch, max_new_tokens=NEW, eos_token_id=[])
    n_prompt = batch.input_ids.shape[1]
    assert shares.values.shape[0] == 2 * NEW  # last prompt position + NEW - 1 fed tokens, per row
    assert sorted(set(shares.step.tolist())) == list(range(NEW))
    tokens, cache = model.generate_with_cache(batch, NEW, names_filter=lambda n: n.endswith("hook_pattern"),
                                              eos_token_id=[])
    kinds = cache.layout.kind_codes()
    for layer in range(2):
        full = shares_from_patterns(cache["pattern", layer], kinds)
        expected = full[shares.batch, :, shares.position]
        assert (shares.values[:, layer] - expected).abs().max() < 1e-5
    assert set(shares.position.tolist()) == set(range(n_prompt - 1, n_prompt + NEW - 1))
    assert (kinds[:, n_prompt:] == GENERATED).all()


def test_share_steps_after_the_end_token_are_left_out(model, av):
    first = int(model.generate(av, 1, eos_token_id=[])[0, -1])
    shares = attention_share(model, av, max_new_tokens=NEW, eos_token_id=first)
    assert shares.values.shape[0] == 1  # only the query that predicted the end token


def test_share_table_and_plot(model, batch, tmp_path):
    shares = attention_share(model, batch, max_new_tokens=3, eos_token_id=[])
    table = shares.table()
    assert set(table.columns) == {"clip", "layer", "kind", "share"} and len(table) == 2 * 2 * 5
    sums = table.groupby(["clip", "layer"]).share.sum()
    assert (sums - 1).abs().max() < 1e-5
    assert shares.mean().shape == (2, 5)
    shares.plot(tmp_path / "share.png")
    assert (tmp_path / "share.png").stat().st_size > 0
    with pytest.raises(ValueError, match="choose the queries"):
        attention_share(model, batch)


def test_shares_during_generation_equal_hf_eager_output_attentions(family, reference_pair):
    """The reference generates with eager attention and returns every step's patterns; shares
    reduced from those equal ours, step by step (float32, so the greedy tokens agree)."""
    reference, ours = reference_pair
    inputs = family.clip(ours, seconds=3, seed=6)
    n_prompt = inputs.input_ids.shape[1]
    out = family.reference_generate(reference, inputs, attn_implementation="eager", max_new_tokens=NEW,
                                    min_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=0,
                                    output_attentions=True, return_dict_in_generate=True)
    shares = attention_share(ours, inputs, max_new_tokens=NEW, eos_token_id=[])
    sequences = out.sequences  # the prompt, then the new tokens
    kinds = family.token_kinds(sequences, None, ours.cfg.tokens)
    kinds[:, n_prompt:] = GENERATED
    for step, layers in enumerate(out.attentions):  # step 0: prefill, its last row is the last prompt position
        ours_step = shares.values[shares.step == step][0]  # [layer, head, kind]
        for layer, pattern in enumerate(layers):
            expected = shares_from_patterns(pattern[:, :, -1:], kinds[:, : pattern.shape[-1]])[0, :, 0]
            assert (ours_step[layer] - expected).abs().max() < 1e-5, (step, layer)


def test_share_over_a_list_of_clips_equals_the_batch(family, model):
    clips = [family.clip(model, seconds=3, seed=1), family.clip(model, seed=2, **family.other_length)]
    separate = attention_share(model, clips, max_new_tokens=3, eos_token_id=[], progress=False)
    together = attention_share(model, family.batch(model, clips), max_new_tokens=3, eos_token_id=[])
    assert sorted(separate.batch.tolist()) == sorted(together.batch.tolist())
    assert (separate.per_clip() - together.per_clip()).abs().max() < 1e-5


def test_knockout_sweep_regroups_clips_into_batches(family, model):
    clips = [family.clip(model, seconds=3, seed=1), family.clip(model, seed=2, **family.other_length),
             family.clip(model, seed=4)]
    kwargs = dict(rules={"gen->video": lambda layers: KnockoutRule("generated", "video", layers)}, windows=[(0, 2)],
                  score=lambda new_tokens, clip: float(new_tokens[-1]), max_new_tokens=3, eos_token_id=[], progress=False)
    one_by_one = knockout_sweep(model, clips, **kwargs)
    batched = knockout_sweep(model, clips, batch_size=2, **kwargs)
    assert (one_by_one.scores == batched.scores).all() and (one_by_one.baseline == batched.baseline).all()


def test_shares_under_knockout_match_the_knocked_out_patterns(model, batch):
    rules = Knockout([KnockoutRule("generated", "video", layers=(1, 2)), KnockoutRule("any", "audio", (0, 1))],
                     last_prompt_as_generated=True)
    with knockout(model, rules):
        shares = attention_share(model, batch, max_new_tokens=4, eos_token_id=[])
        tokens, cache = model.generate_with_cache(batch, 4, names_filter=lambda n: n.endswith("hook_pattern"),
                                                  eos_token_id=[])
    kinds = cache.layout.kind_codes()
    for layer in range(2):
        expected = shares_from_patterns(cache["pattern", layer], kinds)[shares.batch, :, shares.position]
        assert (shares.values[:, layer] - expected).abs().max() < 1e-5
    assert float(shares.values[:, 0, :, 1].max()) < 1e-6  # no attention to audio in layer 0


def test_tools_take_bare_token_ids(family, model):
    """A tensor's ``.layout`` attribute is torch's memory layout: tools must not mistake it for ours."""
    from hooked_avllm.analysis import logit_lens

    ids = torch.tensor([[5, 6, 7, 8]])
    # every family lays out bare text ids (VideoLLaMA2: one text segment per row)
    tokens, cache = model.generate_with_cache(ids, 3, eos_token_id=[], names_filter=lambda n: "resid_post" in n)
    assert cache.layout.shape == tuple(tokens.shape) and int(cache.layout.generated.sum()) == 3
    lens = logit_lens(model, ids, positions="last", progress=False)  # "last" needs no layout
    assert lens.n_pos == 1
    shares = attention_share(model, ids, max_new_tokens=2, eos_token_id=[])
    assert (shares.values.sum(-1) - 1).abs().max() < 1e-5
