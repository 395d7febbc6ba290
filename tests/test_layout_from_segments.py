"""The Qwen prompt builder builds its layout from media blocks (nothing parsed back from the ids);
that layout equals the one parsed from the same ids, field by field, for every input kind, chat
messages, raw text and padded batches on either side."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hooked_avllm.architectures.qwen import PreprocessorConfig, load_video

from hooked_avllm.inputs import InputError, TokenLayout
from hooked_avllm.architectures.qwen.parse import layout_from_ids
from hooked_avllm.architectures.qwen.positions import rope_position_ids
from hooked_avllm.toy import load_toy


@pytest.fixture(scope="module")
def models():
    return {"omni": load_toy("omni"), "vl": load_toy("vl")}


def frames(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 56, 56, 3)) * 255).astype(np.uint8)


def sound(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def with_track(model, video: np.ndarray, track: np.ndarray):
    """Frames with a sound track, loaded with the model's own preprocessing settings."""
    config = PreprocessorConfig.from_pretrained(model.checkpoint_folder)
    return load_video(video, config, audio=(track, 16000))


def parsed(model, inputs) -> TokenLayout:
    """The layout read back from the ids and media alone (the Qwen parser)."""
    return layout_from_ids(inputs.input_ids, inputs.attention_mask, model.architecture.input_spec(model.cfg),
                           inputs.media, padding_side=inputs.layout.padding_side)


def ids_walk(model, inputs):
    """The position ids walked over the token ids (the walk compared with the reference's get_rope_index)."""
    layout, cfg = inputs.layout, model.cfg
    positions, _ = rope_position_ids(
        inputs.input_ids, inputs.attention_mask, tokens=cfg.tokens, image_grid_thw=inputs.image_grid_thw,
        video_grid_thw=inputs.video_grid_thw, video_second_per_grid=inputs.video_second_per_grid,
        audio_token_counts=layout.audio_token_counts, use_audio_in_video=layout.use_audio_in_video,
        spatial_merge_size=cfg.vision.spatial_merge_size, position_id_per_second=cfg.position_id_per_second,
        seconds_per_chunk=cfg.seconds_per_chunk,
    )
    return positions


def assert_same(built: TokenLayout, reference: TokenLayout) -> None:
    for f in dataclasses.fields(TokenLayout):
        if f.name in ("spans", "spec", "source", "_position_ids", "_rope_deltas"):
            continue
        a, b = getattr(built, f.name), getattr(reference, f.name)
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f.name
            assert torch.allclose(a.cpu().double(), b.cpu().double(), equal_nan=True, atol=0, rtol=0), f.name
        else:
            assert a == b, f.name
    assert [(s.batch, s.kind, s.index, s.positions.tolist(), s.start, s.stop, s.in_video) for s in built.spans] == \
        [(s.batch, s.kind, s.index, s.positions.tolist(), s.start, s.stop, s.in_video) for s in reference.spans]
    assert torch.equal(built.position_ids, reference.position_ids) and torch.equal(built.rope_deltas, reference.rope_deltas)


CASES = {
    "text": dict(prompt="What do you see?"),
    "image": dict(prompt="What do you see?", images=frames(1, 0)[0]),
    "video": dict(prompt="Describe what you see.", video=frames(6, 1), use_audio_in_video=False),
    "audio": dict(prompt="What do you hear?", audio=sound(2.3, 2)),
    "audio in video": dict(prompt="Describe what you see and hear.", video=frames(8, 3)),
    "messages": dict(prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"},
                                                           {"type": "audio"}]}], images=frames(1, 4)[0], audio=sound(1.1, 5)),
}


AUDIO_FREE = [kind for kind, case in CASES.items() if "audio" not in case and kind != "audio in video"]


@pytest.mark.parametrize("family, kind", [("omni", kind) for kind in CASES] + [("vl", kind) for kind in AUDIO_FREE])
def test_built_layout_equals_the_parsed_one(models, family, kind):
    model = models[family]
    case = dict(CASES[kind])
    if kind == "audio in video":  # a sound track for the frames
        case["video"] = with_track(model, case["video"], sound(4.0, 6))
    inputs = model.prepare(**case)
    assert_same(inputs.layout, parsed(model, inputs))
    assert torch.equal(inputs.layout.position_ids, ids_walk(model, inputs))


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch(models, side):
    model = models["omni"]
    inputs = model.prepare(
        prompt=["Describe what you see and hear.", "What do you hear?", "What do you see?"],
        video=[with_track(model, frames(8, 7), sound(4.0, 8)), None, None],
        audio=[None, sound(3.1, 9), None],
        images=[None, None, frames(1, 10)[0]],
        padding_side=side,
    )
    assert_same(inputs.layout, parsed(model, inputs))
    assert torch.equal(inputs.layout.position_ids, ids_walk(model, inputs))


def test_a_placeholder_outside_its_brackets_is_refused(models):
    model = models["omni"]
    with pytest.raises(InputError, match="not inside its bracket"):
        model.prepare(prompt="Listen: <|AUDIO|> now.", audio=sound(1.0, 11), chat_template=False)


def test_prepared_inputs_batch_like_a_batched_prepare(models):
    """``concat_inputs`` of one-row prepared inputs (what ``knockout_sweep(batch_size=...)`` does)
    equals preparing the rows together."""
    from hooked_avllm.inputs import concat_inputs

    model = models["omni"]
    prompts = ["Describe what you see and hear.", "What do you hear?", "What do you see?"]
    videos = [with_track(model, frames(8, 12), sound(4.0, 13)), None, None]
    audios = [None, sound(3.1, 14), None]
    images = [None, None, frames(1, 15)[0]]
    together = model.prepare(prompt=prompts, video=videos, audio=audios, images=images, audio_padding="longest")
    rows = [model.prepare(prompt=p, video=v, audio=a, images=i, audio_padding="longest")
            for p, v, a, i in zip(prompts, videos, audios, images)]
    joined = concat_inputs(rows)
    assert_same(joined.layout, together.layout)
    for name in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                 "feature_attention_mask"):
        assert torch.equal(getattr(joined, name), getattr(together, name)), name
    real = joined.feature_attention_mask.bool()[:, None, :].expand_as(joined.input_features)  # padded frames are masked
    assert torch.equal(joined.input_features[real], together.input_features[real])
    with torch.no_grad():
        assert (model(joined) - model(together)).abs().max() < 1e-5
