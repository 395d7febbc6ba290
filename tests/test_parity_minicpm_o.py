"""MiniCPM-o 2.6 against the reference assembly (``tests/minicpm_reference.py``: transformers' Qwen2,
Idefics2 vision and Whisper modules, the resampler written from the published code), through a
tiny checkpoint in the released layout loaded with ``HookedAVLLM.from_pretrained``: every stage
(SigLIP rows, resampled rows, Whisper states, projected audio rows, the merged embeddings, every
decoder layer) and the logits within 1e-4 in float32, for text, an image with slices, audio, a video
with its sound (omni units) and a left-padded batch; greedy tokens; the released ``data`` format."""

from __future__ import annotations

import pytest
import torch

from hooked_avllm import HookedAVLLM
from hooked_avllm.architectures.minicpm_o.config import tiny_config_json
from minicpm_cases import QUERIES, STRINGS, TOKENS, VOCAB, batch, case
from minicpm_reference import ReferenceMiniCPMO, find_bounds

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    reference = ReferenceMiniCPMO(tiny_config_json(vocab_size=VOCAB), TOKENS, seed=3)
    tokenizer_config = {"added_tokens_decoder": {str(i): {"content": s} for s, i in STRINGS.items()},
                        "pad_token": "<|endoftext|>"}
    folder = reference.save_checkpoint(tmp_path_factory.mktemp("minicpm_o"), tokenizer_config,
                                       {"image_feature_size": QUERIES})
    ours = HookedAVLLM.from_pretrained(folder, load_tokenizer=False)
    return reference, ours


def test_the_checkpoint_loads_every_thinker_tensor_and_the_layout_ids(pair):
    reference, ours = pair
    assert ours.architecture.name == "minicpm_o" and ours.cfg.tokens == TOKENS
    n_ours = sum(p.numel() for p in ours.parameters())
    n_reference = sum(v.numel() for k, v in reference.released_state_dict().items() if not k.startswith("tts."))
    k_biases = ours.cfg.audio.n_layers * ours.cfg.audio.d_model  # Whisper's key projections have no bias: zeros here
    assert n_ours == n_reference + k_biases


def compare(reference, ours, input_ids, mask, media, tol=1e-4):
    inputs = ours.to_inputs(input_ids, mask, **media)
    ref = reference(input_ids, mask, media)
    _, cache = ours.run_with_cache(inputs)
    real = mask.bool()
    if "pixel_values" in media:
        assert (cache["vision.hook_out"] - ref["vision"]).abs().max() < 1e-5, "vpm rows"
        assert (cache["vision_proj.hook_out"] - ref["resampled"]).abs().max() < 1e-5, "resampled rows"
    if "input_features" in media:
        audio = ref["audio"]
        lens = media["feature_lens"]
        frames = (lens - 1) // 2 + 1
        keep = torch.arange(cache["audio.hook_out"].shape[1])[None, :] < frames[:, None]
        assert (cache["audio.hook_out"][keep] - audio["out"][keep]).abs().max() < 1e-5, "apm states"
        assert (cache["audio_proj.hook_out"][0] - torch.cat(audio["pieces"])).abs().max() < 1e-5, "projected audio rows"
    assert (cache["hook_embed"][real] - ref["embeds"][real]).abs().max() < 1e-5, "merged embeddings"
    for layer in range(ours.cfg.n_layers - 1):  # transformers' last hidden state is after the final norm
        diff = (cache["resid_post", layer][real] - ref["hidden_states"][layer + 1][real]).abs().max()
        assert diff < tol, (layer, float(diff))
    final = (cache["ln_final.hook_normalized"][real] - ref["hidden_states"][-1][real]).abs().max()
    assert final < tol, float(final)
    logits_diff = (ours(inputs)[real] - ref["logits"][real]).abs().max()
    assert logits_diff < tol, float(logits_diff)
    return inputs, ref


@pytest.mark.parametrize("kind", ["text", "image", "audio", "omni"])
def test_every_stage_and_the_logits_match(pair, kind):
    reference, ours = pair
    input_ids, mask, media = batch([case(kind)])
    inputs, _ = compare(reference, ours, input_ids, mask, media)
    layout = inputs.layout
    if kind == "image":
        assert layout.image.sum() == 3 * QUERIES and layout.frame_group[layout.image].unique().tolist() == [0, 1, 2]
    if kind == "omni":  # the frames are one video, the sound its track, at 25 tokens a second
        assert layout.video.sum() == 3 * QUERIES and not layout.image.any()
        (audio,) = layout.spans_of("audio")
        assert audio.in_video == 0 and len(audio.positions) == 25 + 25 + 15
        assert torch.allclose(layout.audio_time[layout.audio], torch.arange(65) / 25)


def test_a_left_padded_batch_of_every_kind(pair):
    reference, ours = pair
    input_ids, mask, media = batch([case("omni", 1), case("text", 2), case("image", 3), case("audio", 4)])
    assert not mask.all()
    compare(reference, ours, input_ids, mask, media)


def test_greedy_tokens_match(pair):
    reference, ours = pair
    input_ids, mask, media = batch([case("omni", 5), case("image", 6)])
    tokens = ours.generate(ours.to_inputs(input_ids, mask, **media), max_new_tokens=5, eos_token_id=[])
    expected, current_mask = input_ids, mask
    for _ in range(5):  # the reference re-runs the whole sequence each step (no cache to trust but its own)
        logits = reference(expected, current_mask, media)["logits"][:, -1]
        expected = torch.cat([expected, logits.argmax(-1)[:, None]], dim=1)
        current_mask = torch.cat([current_mask, torch.ones_like(current_mask[:, :1])], dim=1)
    assert torch.equal(tokens, expected)


def test_the_released_data_format(pair):
    _, ours = pair
    input_ids, mask, media = batch([case("image", 7), case("audio", 8)])
    data = ours.to_inputs(input_ids, mask, **media).model_kwargs()
    for b in range(2):
        assert torch.equal(data["image_bound"][b], find_bounds(input_ids[b], [301, 303], [302, 304]))
        assert torch.equal(data["audio_bounds"][b], find_bounds(input_ids[b], [308], [309]))
    assert [len(row) for row in data["pixel_values"]] == [3, 0] and data["tgt_sizes"][0].tolist() == [[5, 7], [6, 3], [4, 4]]
    assert data["pixel_values"][0][0].shape == (3, 14, 35 * 14)
    assert data["audio_feature_lens"][1].tolist() == media["feature_lens"].tolist()
