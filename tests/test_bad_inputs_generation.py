"""The bad-input catalogue, area "generation": ``generate`` / ``generate_with_cache`` arguments for
every family. ``max_new_tokens`` must be an int of at least 1 (0 raises: generating nothing is a
plain forward, ``model(inputs)``); a prompt string is refused with the way to tokenize it;
``eos_token_id`` must be ids of the vocabulary; batches must be left-padded. Each case leaves the
model as a fresh one; valid but unusual arguments (a numpy int, an end token given as a tensor or
``[]``) are checked against the model's own forward.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bad_inputs import Case, ModelSnapshot, check, family_cases
from hooked_avllm.inputs.errors import InputError


def generate(ctx, *args, **kwargs):
    return ctx.model.generate(ctx.inputs, *args, **kwargs)


def first_greedy_token(ctx) -> int:
    """The token greedy decoding must pick first: the argmax of the plain forward's last logits."""
    return int(ctx.model(ctx.inputs)[0, -1].argmax())


def stops_at(ctx, eos):
    """Generation stops right after the end token when it is the first greedy token."""
    first = first_greedy_token(ctx)
    tokens = generate(ctx, 5, eos_token_id=eos(first))
    n = ctx.inputs.input_ids.shape[1]
    assert tokens.shape == (1, n + 1) and int(tokens[0, -1]) == first, (tokens.shape, tokens[0, n:].tolist(), first)


def runs_to_the_end(ctx, max_new_tokens):
    tokens = generate(ctx, max_new_tokens, eos_token_id=[])
    n = ctx.inputs.input_ids.shape[1]
    assert tokens.shape == (1, n + int(max_new_tokens)), tokens.shape
    assert torch.equal(tokens[:, :n], ctx.inputs.input_ids)
    assert int(tokens[0, n]) == first_greedy_token(ctx)


def right_padded(ctx):
    rows = [ctx.family.clip(ctx.model), ctx.family.clip(ctx.model, **ctx.family.other_length)]
    return ctx.model.generate(ctx.family.batch(ctx.model, rows, padding_side="right"), 2)


def nan_features(ctx):
    features = ctx.inputs.input_features.clone()
    features.view(-1)[0] = float("nan")
    return ctx.model.generate(ctx.inputs.replace(media={**ctx.inputs.media, "input_features": features}), 2)


AT_LEAST_ONE = r"max_new_tokens must be at least 1; got {} \(to run the prompt without generating, call model\(inputs\)"

CASES = [
    Case("max_new_tokens=-1", "generation", lambda ctx: generate(ctx, -1), ValueError, AT_LEAST_ONE.format("-1")),
    Case("max_new_tokens=0", "generation", lambda ctx: generate(ctx, 0), ValueError, AT_LEAST_ONE.format("0")),
    Case("max_new_tokens=2.5", "generation", lambda ctx: generate(ctx, 2.5), TypeError,
         r"max_new_tokens must be an int \(the number of tokens to generate\); got 2\.5 \(float\)"),
    Case("max_new_tokens='10'", "generation", lambda ctx: generate(ctx, "10"), TypeError,
         r"max_new_tokens must be an int .*; got '10' \(str\)"),
    Case("max_new_tokens=True", "generation", lambda ctx: generate(ctx, True), TypeError,
         r"max_new_tokens must be an int .*; got True \(bool\)"),
    Case("max_new_tokens=None", "generation", lambda ctx: generate(ctx, None), TypeError,
         r"max_new_tokens must be an int .*; got None \(NoneType\)"),
    Case("generate_with_cache with max_new_tokens=0", "generation",
         lambda ctx: ctx.model.generate_with_cache(ctx.inputs, 0), ValueError, AT_LEAST_ONE.format("0")),
    Case("generate('a string')", "generation", lambda ctx: ctx.model.generate("Describe the clip."), TypeError,
         r"input_ids must be token ids, not text \('Describe the clip\.'\); tokenize plain text with model\.to_tokens"
         r".*model\.prepare"),
    Case("generate(['two', 'strings'])", "generation", lambda ctx: ctx.model.generate(["two", "strings"]), TypeError,
         r"input_ids must be token ids, not text .*model\.to_tokens"),
    Case("generate_with_cache('a string')", "generation", lambda ctx: ctx.model.generate_with_cache("hello", 2), TypeError,
         r"input_ids must be token ids, not text \('hello'\)"),
    Case("eos_token_id as the token's text", "generation", lambda ctx: generate(ctx, 2, eos_token_id="</s>"), TypeError,
         r"eos_token_id must be a token id \(int\) or a list of ids; got '</s>' \(str\): .*model\.to_single_token\('</s>'\)"),
    Case("eos_token_id=2.0", "generation", lambda ctx: generate(ctx, 2, eos_token_id=2.0), TypeError,
         r"eos_token_id must be a token id \(int\) or a list of ids; got 2\.0 \(float\)"),
    Case("eos_token_id list holding None", "generation", lambda ctx: generate(ctx, 2, eos_token_id=[5, None]), TypeError,
         r"eos_token_id must be a token id \(int\) or a list of ids; got \[5, None\] \(NoneType\)"),
    Case("eos_token_id=-1", "generation", lambda ctx: generate(ctx, 2, eos_token_id=-1), ValueError,
         r"eos_token_id -1 is outside the vocabulary \[0, \d+\): generation could never stop at it"),
    Case("eos_token_id beyond the vocabulary", "generation",
         lambda ctx: generate(ctx, 2, eos_token_id=ctx.model.cfg.d_vocab), ValueError,
         r"eos_token_id (\d+) is outside the vocabulary \[0, \1\)"),
    Case("a right-padded batch", "generation", right_padded, ValueError,
         r"generate needs left padding \(the last column must be real tokens for every row\)"),
    Case("NaN audio features", "generation", nan_features, InputError,
         r"input_features holds 1 NaN and 0 infinite value\(s\)"),
    Case("float ids", "generation", lambda ctx: ctx.model.generate(ctx.inputs.input_ids.float(), 2, **ctx.inputs.media),
         TypeError, r"input_ids must hold integer token ids; got dtype torch\.float32"),
    Case("max_new_tokens as a numpy int", "generation", lambda ctx: runs_to_the_end(ctx, np.int64(2)), None),
    Case("eos_token_id=[] never stops early", "generation", lambda ctx: runs_to_the_end(ctx, 3), None),
    Case("eos_token_id as an int stops at it", "generation", lambda ctx: stops_at(ctx, lambda first: first), None),
    Case("eos_token_id as a 1-D tensor stops at it", "generation",
         lambda ctx: stops_at(ctx, lambda first: torch.tensor([first, 0])), None),
]



@pytest.fixture(scope="module")
def clip(family, model):
    return SimpleNamespace(model=model, family=family, inputs=family.clip(model, seconds=2))


@pytest.mark.parametrize("case, family", family_cases(CASES), indirect=["family"])
def test_bad_generation_argument(case, family, model, clip):
    snapshot = ModelSnapshot(model)
    check(case, clip)
    snapshot.assert_unchanged()
