"""Token shift (E4): teacher forcing, KL / rank / labels against hand computations, on every family
(each family's test kit in ``tests/kits/``: tiny Qwen2.5-Omni and Qwen3-Omni thinkers, a tiny VideoLLaMA2.1-AV,
a tiny MiniCPM-o 2.6). The vision-language base B is the family's model without its audio tower: a stand-in
for Qwen2.5-VL (the study's base for Qwen2.5-Omni), Qwen3-Omni's thinker without AuT (its ViT and DeepStack
kept), VideoLLaMA2.1-AV's own vision-only variant, and MiniCPM-V 2.6 (``minicpmv``: MiniCPM-o's vision path
and a Qwen2 LLM, no audio). The tool needs no
aligned layouts: each model reads its own prompt, the caption appended after it."""

from dataclasses import replace

import pytest
import torch

from hooked_avllm.analysis.token_shift import shift_summary, token_shift
from hooked_avllm.inputs import teacher_forced_inputs


@pytest.fixture(scope="module")
def model_a(model):
    return model  # the family's tiny model, seed 0 (conftest)


@pytest.fixture(scope="module")
def inputs_a(family, model_a):
    return family.clip(model_a, seconds=2, seed=0)


@torch.no_grad()
def plain_logits(model, inputs, caption):
    """Prompt + caption run as ordinary ids, positions computed by the model from the ids alone."""
    kwargs = inputs.forward_kwargs()
    kwargs["input_ids"] = torch.cat([inputs.input_ids, caption[None]], dim=1)
    kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
    return model(**kwargs)[0]  # [seq, vocab]


def test_teacher_forced_inputs_mark_the_caption_and_match_a_plain_run(model_a, inputs_a):
    caption = torch.tensor([7, 8, 9, 10])
    forced = teacher_forced_inputs(inputs_a, caption)
    n = inputs_a.input_ids.shape[1]
    assert forced.layout.generated[0].nonzero().flatten().tolist() == list(range(n, n + 4))
    assert not inputs_a.layout.generated.any() and inputs_a.layout.shape == (1, n)  # the original is untouched
    assert (model_a(forced)[0] - plain_logits(model_a, inputs_a, caption)).abs().max() < 1e-5


def test_model_against_itself_is_unshifted_and_greedy_caption_is_rank_zero(model_a, inputs_a):
    shift = token_shift(model_a, inputs_a, model_a, inputs_a, max_new_tokens=6, eos_token_id=[])  # no early stop
    assert len(shift.caption_ids) == 6
    assert set(shift.labels) == {"unshifted"}
    assert shift.kl.abs().max() < 1e-6
    assert shift.rank_a.tolist() == [0] * 6  # A generated it greedily: the teacher-forced run agrees
    summary = shift.summary()
    assert summary["unshifted"] == 1.0 and summary["within_top_k"] == 1.0 and summary["n_tokens"] == 6


def test_two_random_models_shift_and_ranks_by_hand(family, model_a, inputs_a, tmp_path):
    model_b = family.model(seed=1)
    caption = torch.tensor([11, 50, 3, 120, 77, 9, 199, 42])
    shift = token_shift(model_a, inputs_a, model_b, inputs_a, caption=caption)
    table = shift.table()
    assert len(table) == 8 and "shifted" in shift.labels
    assert table["label"].tolist() == [
        "unshifted" if r == 0 else "marginal" if r < 3 else "shifted" for r in table["rank"]
    ]
    n = inputs_a.input_ids.shape[1]
    logits_a = plain_logits(model_a, inputs_a, caption)
    logits_b = plain_logits(model_b, inputs_a, caption)
    for j in (0, 5):
        row_a, row_b = logits_a[n - 1 + j], logits_b[n - 1 + j]
        token = int(caption[j])
        assert int(table["rank"][j]) == int((row_b > row_b[token]).sum())
        assert int(table["top1_b"][j]) == int(row_b.argmax())
        p, q = row_a.softmax(-1), row_b.softmax(-1)
        assert abs(float(table["kl"][j]) - float((p * (p.log() - q.log())).sum())) < 1e-5
        assert abs(float(table["prob_b"][j]) - float(q[token])) < 1e-6
        assert int(table["position_b"][j]) == n - 1 + j
    pooled = shift_summary([shift, shift])
    assert pooled["n_tokens"] == 16
    assert abs(pooled["unshifted"] + pooled["marginal"] + pooled["shifted"] - 1) < 1e-9
    assert shift.summary(tokens=[0, 5])["n_tokens"] == 2
    shift.plot(tmp_path / "shift.png")
    assert (tmp_path / "shift.png").read_bytes()[:4] == b"\x89PNG"


def test_vision_only_base_with_larger_vocab(family, model_a):
    """A: AV model on audio + video. B: a vision-only model (44 more ids) on the same video, no audio."""
    # the family's model without its audio tower, a larger vocabulary (Qwen, MiniCPM: same placeholder
    # ids; VideoLLaMA2.1-AV: its placeholders move to the top of the larger vocabulary)
    shared = model_a.cfg.d_vocab
    model_b = family.model(seed=2, audio=False, vocab_size=shared + 44)
    inputs_a = family.clip(model_a, seconds=3, seed=5)
    inputs_b = family.clip(model_b, audio=False, seconds=3, seed=5)
    assert torch.equal(getattr(inputs_a, family.video_pixels), getattr(inputs_b, family.video_pixels))
    assert inputs_b.input_features is None and not inputs_b.layout.audio.any()
    caption = torch.tensor([4, 5, 6, 7, 8])
    shift = token_shift(model_a, inputs_a, model_b, inputs_b, caption=caption)
    assert shift.shared_vocab == shared
    n_b = inputs_b.input_ids.shape[1]
    assert shift.position_b.tolist() == list(range(n_b - 1, n_b + 4))
    row_a = plain_logits(model_a, inputs_a, caption)[inputs_a.input_ids.shape[1] + 1]
    row_b = plain_logits(model_b, inputs_b, caption)[n_b + 1]  # predicts caption[2]
    p, q = row_a[:shared].softmax(-1), row_b[:shared].softmax(-1)  # renormalised over the shared ids
    assert abs(float(shift.kl[2]) - float((p * (p.log() - q.log())).sum())) < 1e-5
    assert int(shift.rank_b[2]) == int((row_b[:shared] > row_b[6]).sum())
    with pytest.raises(ValueError, match="shared vocabulary"):
        token_shift(model_a, inputs_a, model_b, inputs_b, caption=[shared + 4])


def test_base_without_the_audio_tower_agrees_on_the_video_alone(family, model_a):
    """B is A minus its audio tower (A's other weights copied in): on the same video without audio,
    B's distributions are A's (KL 0, A's greedy caption unshifted); A hearing the audio shifts them."""
    model_b = family.model(seed=9, audio=False)
    model_b.load_state_dict({k: v for k, v in model_a.state_dict().items() if not k.startswith("audio")})
    video_a = family.clip(model_a, audio=False, seconds=3, seed=5)
    video_b = family.clip(model_b, audio=False, seconds=3, seed=5)
    assert torch.equal(video_a.input_ids, video_b.input_ids)
    same = token_shift(model_a, video_a, model_b, video_b, max_new_tokens=5, eos_token_id=[])
    assert same.kl.abs().max() < 1e-6 and set(same.labels) == {"unshifted"}
    heard = token_shift(model_a, family.clip(model_a, seconds=3, seed=5), model_b, video_b, caption=same.caption_ids)
    assert heard.kl.max() > 1e-3


def test_batches_and_padding_are_refused(family, model_a, inputs_a):
    batch = family.batch(model_a, [family.clip(model_a, seed=1, **family.other_length),
                                   family.clip(model_a, seconds=3, seed=2)])
    with pytest.raises(ValueError, match="one clip at a time"):
        token_shift(model_a, batch, model_a, inputs_a, caption=[1, 2])
    padded = replace(inputs_a, attention_mask=inputs_a.attention_mask.clone())
    padded.attention_mask[0, 0] = 0
    with pytest.raises(ValueError, match="padding"):
        token_shift(model_a, inputs_a, model_a, padded, caption=[1, 2])
