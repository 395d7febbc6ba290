"""The bad-input catalogue, area "tensors": token ids, attention masks, feature masks and media
tensors handed to the model, for every family. Each bad one is refused where ids, masks and media
become decoder inputs (``hooked_avllm.decoder_inputs``; a family's parser for its own media
metadata), with a message naming the argument and the value; each case leaves the model as a
fresh one (``ModelSnapshot``). Valid but unusual tensors (``[pos]`` ids, int32 ids, bool or float
masks) give the same logits as the usual ones.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bad_inputs import Case, ModelSnapshot, check, family_cases
from hooked_avllm.inputs.errors import InputError

QWEN = ("qwen2_5_omni", "qwen3_omni")
TEXT = torch.tensor([[5, 6, 7, 8]])  # plain text ids in every kit (below 199)
AUDIO_MEDIA = ("input_features", "feature_attention_mask", "feature_lens")  # the audio's tensors, every family


def bare(ctx, **changes):
    """The clip as bare ids + media keyword arguments, with some media replaced (None: dropped)."""
    media = {k: v for k, v in {**ctx.media, **changes}.items() if v is not None}
    return ctx.model(ctx.ids, ctx.mask, **media)


def prepared(ctx, **changes):
    """The clip as prepared inputs (its layout kept) with some media replaced."""
    return ctx.model(ctx.inputs.replace(media={**ctx.media, **changes}))


def poisoned(t: torch.Tensor, value: float) -> torch.Tensor:
    bad = t.clone()
    bad.view(-1)[bad.numel() // 2] = value
    return bad


def same_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(got, expected), f"max difference {float((got - expected).abs().max())}"


def padded_text(ctx):
    """Two left-padded text rows and their int mask."""
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    return ids, torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])


CASES = [
    # ---------------------------------------------------------------- token ids
    Case("input_ids of float dtype", "tensors", lambda ctx: ctx.model(TEXT.float()), TypeError,
         r"input_ids must hold integer token ids; got dtype torch\.float32: convert them with input_ids\.long\(\)"),
    Case("input_ids of bool dtype", "tensors", lambda ctx: ctx.model(TEXT > 6), TypeError,
         r"input_ids must hold integer token ids; got dtype torch\.bool"),
    Case("input_ids with a third axis [1, 1, 4]", "tensors", lambda ctx: ctx.model(TEXT[None]), ValueError,
         r"input_ids must be \[batch, pos\] \(or \[pos\]\); got shape \(1, 1, 4\)"),
    Case("input_ids of a prepared clip with a third axis", "tensors", lambda ctx: ctx.model(ctx.ids[None], **ctx.media),
         ValueError, r"input_ids must be \[batch, pos\] \(or \[pos\]\); got shape \(1, 1, \d+\)"),
    Case("input_ids equal to d_vocab", "tensors",
         lambda ctx: ctx.model(torch.tensor([[5, ctx.model.cfg.d_vocab]])), ValueError,
         r"input_ids hold (\d+) at \[row 0, position 1\]; token ids must lie in \[0, \1\)"),
    Case("input_ids far outside the vocabulary (another tokenizer's)", "tensors",
         lambda ctx: ctx.model(torch.tensor([[151000, 6]])), ValueError,
         r"input_ids hold 151000 at \[row 0, position 0\]; token ids must lie in \[0, \d+\).*another model's tokenizer"),
    Case("negative input_ids", "tensors", lambda ctx: ctx.model(torch.tensor([[5, -1, 7]])), ValueError,
         r"input_ids hold -1 at \[row 0, position 1\]; token ids must lie in \[0, \d+\)"),
    Case("input_ids holding -100 (a label id)", "tensors", lambda ctx: ctx.model(torch.tensor([[5, -100, 7]])), ValueError,
         r"input_ids hold -100 at \[row 0, position 1\]: -100 is the label id losses ignore, not a token"),
    Case("-100 at padded positions of a batch", "tensors",
         lambda ctx: ctx.model(torch.tensor([[-100, 5], [6, 7]]), torch.tensor([[0, 1], [1, 1]])), ValueError,
         r"input_ids hold -100 at \[row 0, position 0\].*pad with the pad id and attention_mask 0"),
    Case("empty input_ids [1, 0]", "tensors", lambda ctx: ctx.model(torch.zeros(1, 0, dtype=torch.long)), ValueError,
         r"input_ids are empty \(shape \(1, 0\)\); give at least one token"),
    Case("input_ids of no rows [0, 4]", "tensors", lambda ctx: ctx.model(torch.zeros(0, 4, dtype=torch.long)), ValueError,
         r"input_ids are empty \(shape \(0, 4\)\)"),
    Case("input_ids as a Python list", "tensors", lambda ctx: ctx.model([5, 6, 7]), TypeError,
         r"input_ids must be a tensor of token ids or prepared inputs \(model\.prepare\); got list"),
    Case("a prompt string for input_ids", "tensors", lambda ctx: ctx.model("What do you hear?"), TypeError,
         r"input_ids must be token ids, not text \('What do you hear\?'\); tokenize plain text with model\.to_tokens"),
    # ---------------------------------------------------------------- attention masks
    Case("attention_mask of the wrong batch", "tensors",
         lambda ctx: ctx.model(TEXT, torch.ones(2, 4, dtype=torch.long)), ValueError,
         r"attention_mask has shape \(2, 4\) but input_ids are \(1, 4\)"),
    Case("attention_mask one position short (bare clip)", "tensors",
         lambda ctx: ctx.model(ctx.ids, ctx.mask[:, 1:], **ctx.media), ValueError,
         r"attention_mask has shape \(1, (\d+)\) but input_ids are \(1, \d+\); give one 0/1 per token id"),
    Case("attention_mask one position short beside prepared inputs", "tensors",
         lambda ctx: ctx.model(ctx.inputs, ctx.mask[:, 1:]), ValueError,
         r"attention_mask has shape \(1, \d+\) but input_ids are \(1, \d+\)"),
    Case("attention_mask holding 2", "tensors", lambda ctx: ctx.model(TEXT, torch.tensor([[1, 1, 2, 1]])), ValueError,
         r"attention_mask must hold 1 \(real token\) and 0 \(padding\) only; got the values \[2\]"),
    Case("attention_mask holding 0.5", "tensors", lambda ctx: ctx.model(TEXT, torch.tensor([[1.0, 0.5, 1.0, 1.0]])),
         ValueError, r"attention_mask must hold 1 \(real token\) and 0 \(padding\) only; got the values \[0\.5\]"),
    Case("attention_mask with an all-padding row", "tensors",
         lambda ctx: ctx.model(torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 1], [0, 0]])), ValueError,
         r"row 1 of attention_mask is all padding \(0\); every row needs at least one real token"),
    Case("a mask that disagrees with prepared inputs' own", "tensors",
         lambda ctx: ctx.model(ctx.inputs, torch.cat([torch.zeros_like(ctx.mask[:, :1]), ctx.mask[:, 1:]], 1)), ValueError,
         r"attention_mask differs from the prepared inputs' own mask"),
    Case("attention_mask given as a list", "tensors", lambda ctx: ctx.model(TEXT, [1, 1, 1, 1]), TypeError,
         r"attention_mask must be a tensor \[batch, pos\] of 0/1; got list"),
    # ---------------------------------------------------------------- media tensors
    Case("NaN in the video pixels (prepared)", "tensors",
         lambda ctx: prepared(ctx, **{ctx.family.video_pixels: poisoned(ctx.media[ctx.family.video_pixels], float("nan"))}),
         InputError, r"pixel_values(_videos)? holds 1 NaN and 0 infinite value\(s\) \(of \d+\); the towers would give NaN logits"),
    Case("inf in the audio features (bare ids + media)", "tensors",
         lambda ctx: bare(ctx, input_features=poisoned(ctx.media["input_features"], float("inf"))), InputError,
         r"input_features holds 0 NaN and 1 infinite value\(s\)"),
    Case("-inf in the audio features, through run_with_cache", "tensors",
         lambda ctx: ctx.model.run_with_cache(
             ctx.inputs.replace(media={**ctx.media, "input_features": poisoned(ctx.media["input_features"], -float("inf"))})),
         InputError, r"input_features holds 0 NaN and 1 infinite value\(s\)"),
    Case("bare ids holding media placeholders, no media", "tensors", lambda ctx: ctx.model(ctx.ids, ctx.mask), InputError,
         r"input_ids hold \d+ .*placeholder\(s\) \(id \d+\).* but no media were given; pass the media tensors with the ids"
         r".*model\.prepare"),
    Case("bare ids holding media placeholders, no media, through to_inputs", "tensors",
         lambda ctx: ctx.model.to_inputs(ctx.ids, ctx.mask), InputError, r"placeholder\(s\).*no media were given"),
    Case("bare ids with audio placeholders but only the video's media", "tensors",
         lambda ctx: bare(ctx, **{name: None for name in AUDIO_MEDIA}), InputError,
         r"audio.*(0 given|no audio inputs were given|than audio inputs were given).*model\.prepare"),
    Case("a misspelt media argument", "tensors", lambda ctx: ctx.model(TEXT, input_feature=ctx.media["input_features"]),
         TypeError, r"unexpected argument 'input_feature' \(did you mean 'input_features'\?\)"),
    # ---------------------------------------------------------------- feature masks and media metadata
    Case("feature_attention_mask of the wrong batch", "tensors",
         lambda ctx: bare(ctx, feature_attention_mask=ctx.media["feature_attention_mask"].repeat(2, 1)), InputError,
         r"feature_attention_mask has shape \(2, 300\) but input_features are \(1, 128, 300\).*\[1, 300\]", families=QWEN),
    Case("feature_attention_mask 10 frames short", "tensors",
         lambda ctx: bare(ctx, feature_attention_mask=ctx.media["feature_attention_mask"][:, :-10]), InputError,
         r"feature_attention_mask has shape \(1, 290\) but input_features are \(1, 128, 300\)", families=QWEN),
    Case("feature_attention_mask holding 2", "tensors",
         lambda ctx: bare(ctx, feature_attention_mask=ctx.media["feature_attention_mask"] * 2), InputError,
         r"feature_attention_mask must hold 1 \(real frame\) and 0 \(padding\) only; got the values \[2\.0\]", families=QWEN),
    Case("negative seconds per frame group", "tensors",
         lambda ctx: bare(ctx, video_second_per_grid=torch.tensor([-1.0])), InputError,
         r"video_second_per_grid must be positive seconds per frame group .*; got -1 for video 0", families=QWEN),
    Case("zero seconds per frame group", "tensors",
         lambda ctx: bare(ctx, video_second_per_grid=torch.tensor([0.0])), InputError,
         r"video_second_per_grid must be positive .*; got 0 for video 0", families=QWEN),
    Case("feature_lens of the wrong batch", "tensors",
         lambda ctx: bare(ctx, feature_lens=ctx.media["feature_lens"].repeat(2)), ValueError,
         r"feature_lens must be \[n_piece\] = \[1\] .*got shape \(2,\)", families=("minicpm_o",)),
    Case("feature_lens beyond the features", "tensors",
         lambda ctx: prepared(ctx, feature_lens=ctx.media["feature_lens"] * 2), ValueError,
         r"feature_lens must be between 1 and the 300 frames of the input; got \[600\]", families=("minicpm_o",)),
    Case("tgt_sizes of the wrong batch", "tensors",
         lambda ctx: bare(ctx, tgt_sizes=ctx.media["tgt_sizes"].repeat(2, 1)), ValueError,
         r"pixel_values hold \d+ patch rows but tgt_sizes .* imply \d+; pass the tgt_sizes that belong", families=("minicpm_o",)),
    Case("video_slices of the wrong length", "tensors",
         lambda ctx: bare(ctx, video_slices=ctx.media["video_slices"].repeat(2)), InputError,
         r"video_slices has 6 flags, but the ids hold 3 image and slice bounds", families=("minicpm_o",)),
    # ---------------------------------------------------------------- valid but unusual: handled alike
    Case("[pos] ids equal [1, pos] ids", "tensors",
         lambda ctx: same_logits(ctx.model(TEXT[0]), ctx.model(TEXT)), None),
    Case("int32 ids equal int64 ids", "tensors",
         lambda ctx: same_logits(ctx.model(TEXT.int()), ctx.model(TEXT)), None),
    Case("a bool mask equals the int mask", "tensors",
         lambda ctx: same_logits(ctx.model(padded_text(ctx)[0], padded_text(ctx)[1].bool()), ctx.model(*padded_text(ctx))), None),
    Case("a float 0/1 mask equals the int mask", "tensors",
         lambda ctx: same_logits(ctx.model(padded_text(ctx)[0], padded_text(ctx)[1].float()), ctx.model(*padded_text(ctx))), None),
    Case("a [pos] mask with [pos] ids", "tensors",
         lambda ctx: same_logits(ctx.model(TEXT[0], torch.ones(4, dtype=torch.long)), ctx.model(TEXT)), None),
    Case("the prepared inputs' own mask passed again", "tensors",
         lambda ctx: same_logits(ctx.model(ctx.inputs, ctx.mask.clone()), ctx.model(ctx.inputs)), None),
]



@pytest.fixture(scope="module")
def clip(family, model):
    inputs = family.clip(model)
    return SimpleNamespace(model=model, family=family, inputs=inputs, ids=inputs.input_ids, mask=inputs.attention_mask,
                           media=dict(inputs.media))


@pytest.mark.parametrize("case, family", family_cases(CASES), indirect=["family"])
def test_bad_tensor(case, family, model, clip):
    snapshot = ModelSnapshot(model)
    check(case, clip)
    snapshot.assert_unchanged()
