"""TokenLayout: masks partition every position, media origins, spans, positions, generation growth.

Placeholder counts are checked against transformers' own thinker (a tiny random
``Qwen2_5OmniThinkerForConditionalGeneration`` with the real token ids), whose forward refuses
inputs whose placeholder counts differ from its towers' output lengths; its ``get_rope_index`` is
the reference for the position ids.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_inputs_support import AUDIO_BOS, AUDIO_EOS, OMNI, VISION_BOS, VISION_EOS, audio_tokens, omni_tokenizer

from hooked_avllm.architectures.qwen import ModelInputSpec, layout_from_ids, PreprocessorConfig, load_video, prepare_inputs

from hooked_avllm.inputs import InputError

RNG = np.random.default_rng(0)
SMALL = PreprocessorConfig(video_min_pixels=28 * 28 * 4)  # small frames keep the reference towers fast


@pytest.fixture(scope="module")
def hf_thinker():
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration
    from transformers.utils import logging

    logging.set_verbosity_error()
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16, output_dim=32),
        vision_config=dict(
            depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[1]
        ),
        text_config=dict(
            vocab_size=151936,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        ),
        audio_token_index=151646,
        image_token_index=151655,
        video_token_index=151656,
        audio_start_token_id=151647,
        audio_end_token_id=151648,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
    )
    torch.manual_seed(0)
    return Qwen2_5OmniThinkerForConditionalGeneration(config).eval()


def _sound(seconds: float) -> np.ndarray:
    return (0.1 * RNG.standard_normal(int(round(seconds * 16000)))).astype(np.float32)


def _video(seconds: float, audio_seconds: float | None = None, size=(60, 80)):
    frames = RNG.integers(0, 256, (int(seconds * 2), *size, 3), dtype=np.uint8)
    return load_video(frames, SMALL, audio=None if audio_seconds is None else (_sound(audio_seconds), 16000))


CASES = {
    "audio": dict(prompt="What do you hear?", audio=_sound(3.7)),
    "image": dict(prompt="What is this?", images=np.zeros((100, 150, 3), np.uint8)),
    "video": dict(prompt="What happens?", video=_video(3.0), use_audio_in_video=False),
    "audio-in-video": dict(prompt="Describe what you see and hear.", video=_video(5.0, 5.3)),
    "mixed-batch-left": dict(
        prompt=["<|IMAGE|> and <|AUDIO|>?", "Describe.", "Two clips: <|VIDEO|> <|VIDEO|>"],
        images=[np.zeros((56, 84, 3), np.uint8), None, None],
        audio=[_sound(1.3), None, None],
        video=[None, _video(2.0, 2.4), [_video(3.0, 1.0), _video(1.0, 3.0)]],
    ),
    "mixed-batch-right": dict(
        prompt=["Hi", "<|VIDEO|> <|AUDIO|>"],
        video=[None, _video(2.0, 2.0)],
        audio=[None, _sound(0.5)],
        padding_side="right",
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def prepared(request):
    return request.param, prepare_inputs(omni_tokenizer(), SMALL, OMNI, audio_padding="longest", **CASES[request.param])


def test_masks_cover_every_position_once(prepared):
    _, inputs = prepared
    layout = inputs.layout
    stacked = torch.stack(list(layout.masks().values())).long()
    assert torch.equal(stacked.sum(0), torch.ones(layout.shape, dtype=torch.long))
    assert torch.equal(layout.padding, inputs.attention_mask == 0)
    ids = inputs.input_ids
    assert torch.equal(layout.audio, ids == 151646) and torch.equal(layout.image, ids == 151655)
    assert torch.equal(layout.video, ids == 151656)


def test_placeholder_counts_match_tower_outputs(prepared):
    _, inputs = prepared
    layout = inputs.layout
    if inputs.input_features is not None:
        n_samples = [math.ceil(n) for n in inputs.feature_attention_mask.sum(-1).tolist()]
        expected = [((f - 1) // 2 + 1 - 2) // 2 + 1 for f in n_samples]
        got = [len(s.positions) for s in sorted(layout.spans_of("audio"), key=lambda s: s.index)]
        assert got == expected
    for kind, grid in (("image", inputs.image_grid_thw), ("video", inputs.video_grid_thw)):
        if grid is not None:
            got = [len(s.positions) for s in sorted(layout.spans_of(kind), key=lambda s: s.index)]
            assert got == [int(t * h * w) // 4 for t, h, w in grid.tolist()]


def test_hf_thinker_accepts_inputs_and_positions_agree(prepared, hf_thinker):
    name, inputs = prepared
    with torch.no_grad():
        logits = hf_thinker(**inputs.model_kwargs()).logits  # raises if counts differ from tower outputs
    assert logits.shape[:2] == inputs.input_ids.shape and torch.isfinite(logits).all()
    reference, deltas = hf_thinker.model.get_rope_index(
        inputs.input_ids,
        inputs.image_grid_thw,
        inputs.video_grid_thw,
        inputs.attention_mask,
        inputs.use_audio_in_video,
        inputs.feature_attention_mask.sum(-1) if inputs.feature_attention_mask is not None else None,
        inputs.video_second_per_grid,
    )
    real = inputs.attention_mask.bool()
    assert torch.equal(inputs.layout.position_ids[:, real], reference[:, real])
    if inputs.image_grid_thw is not None or inputs.video_grid_thw is not None:
        assert torch.equal(inputs.layout.rope_deltas, deltas)


def test_padded_and_unpadded_audio_give_the_same_logits(hf_thinker):
    case = CASES["mixed-batch-left"]
    tok = omni_tokenizer()
    padded = prepare_inputs(tok, SMALL, OMNI, audio_padding="max_length", **case)
    longest = prepare_inputs(tok, SMALL, OMNI, audio_padding="longest", **case)
    assert padded.input_features.shape[-1] == 30000 and longest.input_features.shape[-1] < 30000
    with torch.no_grad():
        a = hf_thinker(**padded.model_kwargs()).logits
        b = hf_thinker(**longest.model_kwargs()).logits
    assert torch.equal(a, b)


def test_media_origins_in_an_audio_in_video_block():
    inputs = prepare_inputs(omni_tokenizer(), SMALL, OMNI, audio_padding="longest", **CASES["audio-in-video"])
    layout = inputs.layout
    video, audio = layout.spans_of("video")[0], layout.spans_of("audio")[0]
    assert audio.in_video == 0 and (video.start, video.stop) == (audio.start, audio.stop)
    ids = inputs.input_ids[0]
    assert ids[video.start : video.start + 2].tolist() == [VISION_BOS, AUDIO_BOS]
    assert ids[video.stop - 2 : video.stop].tolist() == [AUDIO_EOS, VISION_EOS]
    n_audio = audio_tokens(int(round(5.3 * 16000)))
    assert torch.allclose(layout.audio_time[0, audio.positions], torch.arange(n_audio) * 0.04)
    t, h, w = inputs.video_grid_thw[0].tolist()
    h, w = h // 2, w // 2
    g, r, c = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    assert torch.equal(layout.frame_group[0, video.positions], g.flatten())
    assert torch.equal(layout.row[0, video.positions], r.flatten())
    assert torch.equal(layout.col[0, video.positions], c.flatten())
    assert torch.equal(layout.video_time[0, video.positions], g.flatten().float() * 1.0)
    # chunk 0 (0-2 s): frame groups 0 and 1, then audio tokens 0..49
    first_audio = int(audio.positions[0])
    assert layout.frame_group[0, video.start + 2 : first_audio].unique().tolist() == [0, 1]
    assert (layout.audio[0, first_audio : first_audio + 50]).all()


def test_extend_marks_generated_positions_and_continues_positions():
    inputs = prepare_inputs(omni_tokenizer(), SMALL, OMNI, audio_padding="longest", **CASES["mixed-batch-left"])
    layout = inputs.layout
    before = layout.position_ids.clone()
    batch, seq = layout.shape
    assert layout.extend(3) is layout
    assert layout.shape == (batch, seq + 3)
    assert layout.generated[:, seq:].all() and not layout.generated[:, :seq].any()
    stacked = torch.stack(list(layout.masks().values())).long().sum(0)
    assert torch.equal(stacked, torch.ones(batch, seq + 3, dtype=torch.long))
    start = before.amax(dim=(0, 2)) + 1
    expected = start[:, None] + torch.arange(3)
    for axis in range(3):
        assert torch.equal(layout.position_ids[axis, :, seq:], expected)
    fresh = layout_from_ids(inputs.input_ids, inputs.attention_mask, ModelInputSpec.from_config(OMNI), inputs.media).extend(3)
    assert torch.equal(fresh.position_ids, layout.position_ids)  # parsed, then extended: the same


def test_layout_rejects_ids_that_disagree_with_media():
    inputs = prepare_inputs(omni_tokenizer(), SMALL, OMNI, audio_padding="longest", **CASES["image"])
    spec = ModelInputSpec.from_config(OMNI)
    ids = inputs.input_ids.clone()
    position = int(inputs.layout.spans[0].positions[0])
    shorter = torch.cat([ids[:, :position], ids[:, position + 1 :]], dim=1)
    grid = {"image_grid_thw": inputs.image_grid_thw}
    with pytest.raises(InputError, match="placeholder tokens but its grid needs"):
        layout_from_ids(shorter, None, spec, grid)
    with pytest.raises(InputError, match="more image items than the 0 given"):
        layout_from_ids(ids, None, spec, {})
    with pytest.raises(InputError, match="2 image item.s. were given but input_ids place 1"):
        layout_from_ids(ids, None, spec, {"image_grid_thw": inputs.image_grid_thw.repeat(2, 1)})
    stray = ids.clone()
    stray[0, 3] = 151646
    with pytest.raises(InputError, match="outside a media bracket"):
        layout_from_ids(stray, None, spec, grid)


def test_model_inputs_to_and_kwargs():
    inputs = prepare_inputs(omni_tokenizer(), SMALL, OMNI, audio_padding="longest", **CASES["mixed-batch-left"])
    half = inputs.to("cpu", torch.bfloat16)
    assert half.input_features.dtype == half.pixel_values.dtype == half.pixel_values_videos.dtype == torch.bfloat16
    assert half.input_ids.dtype == torch.long and half.video_second_per_grid.dtype == torch.float32
    keys = set(inputs.model_kwargs())
    assert keys == {
        "input_ids",
        "attention_mask",
        "input_features",
        "feature_attention_mask",
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "video_second_per_grid",
        "use_audio_in_video",
    }
