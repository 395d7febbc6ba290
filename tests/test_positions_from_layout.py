"""Position ids from a parsed layout's spans equal the ids walk over the token ids (the one that
tests compare with the reference's ``get_rope_index``): the layout's ids are read once."""

from __future__ import annotations

import pytest
import torch

from kits.qwen2_5_omni import batch_inputs, clip_inputs, tiny_model
from hooked_avllm.architectures.qwen.positions import positions_from_layout, rope_position_ids


def ids_walk(model, inputs):
    layout = inputs.layout
    return rope_position_ids(
        inputs.input_ids, inputs.attention_mask, tokens=model.cfg.tokens, image_grid_thw=inputs.image_grid_thw,
        video_grid_thw=inputs.video_grid_thw, video_second_per_grid=inputs.video_second_per_grid,
        audio_token_counts=layout.audio_token_counts, use_audio_in_video=layout.use_audio_in_video,
        spatial_merge_size=model.cfg.vision.spatial_merge_size, position_id_per_second=model.cfg.position_id_per_second,
        seconds_per_chunk=model.cfg.seconds_per_chunk,
    )


@pytest.mark.parametrize("video, audio, seconds", [(True, True, 3), (True, True, 5), (True, False, 2), (False, True, 3)])
def test_one_row(video, audio, seconds):
    model = tiny_model()
    inputs = clip_inputs(model, video=video, audio=audio, seconds=seconds)
    ours, our_deltas = positions_from_layout(inputs.layout, model.architecture.input_spec(model.cfg), inputs.media)
    walked, deltas = ids_walk(model, inputs)
    assert torch.equal(ours, walked) and torch.equal(our_deltas, deltas)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_of_every_kind(side):
    model = tiny_model()
    rows = [clip_inputs(model, video=True, audio=True, seconds=4, prefix=2),
            clip_inputs(model, video=False, audio=True, seconds=2, prefix=7),
            clip_inputs(model, video=True, audio=False, seconds=3, suffix=9)]
    inputs = batch_inputs(model, rows, padding_side=side)
    ours, our_deltas = positions_from_layout(inputs.layout, model.architecture.input_spec(model.cfg), inputs.media)
    walked, deltas = ids_walk(model, inputs)
    assert torch.equal(ours, walked) and torch.equal(our_deltas, deltas)
