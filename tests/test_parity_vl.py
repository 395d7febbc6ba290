"""Our Qwen2.5-VL against the Hugging Face reference (tied and untied LM heads), float32."""

from __future__ import annotations

import pytest
import torch

from cases import build_case
from parity import TOL, assert_equal, assert_stages, reference_pair
from reference_models import IMAGE, VIDEO, build_vl


def token_types(input_ids: torch.Tensor) -> torch.Tensor:
    return (input_ids == IMAGE).long() + 2 * (input_ids == VIDEO).long()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def vl_pair(request, tmp_path_factory):
    return reference_pair(build_vl(tie=request.param, seed=4), tmp_path_factory.mktemp("vl"), max_shard_size="100KB")


def hf_vl_inputs(inputs: dict) -> dict:
    hf = {k: v for k, v in inputs.items() if k != "video_second_per_grid"}
    if "video_second_per_grid" in inputs:
        hf["second_per_grid_ts"] = inputs["video_second_per_grid"]
    hf["mm_token_type_ids"] = token_types(inputs["input_ids"])
    return hf


@pytest.mark.parametrize("case", ["text", "image", "video", "vl_padded_batch"])
def test_vl_logits_match(vl_pair, case):
    reference, ours = vl_pair
    assert ours.audio is None and ours.cfg.architecture == "qwen2_5_vl"
    assert (ours.unembed.weight is ours.embed.weight) == reference.config.tie_word_embeddings
    inputs = build_case(case, seed=7)
    mask = inputs["attention_mask"]
    hf_inputs = hf_vl_inputs(inputs)
    with torch.no_grad():
        ref_pos, _ = reference.model.get_rope_index(
            hf_inputs["input_ids"], hf_inputs["mm_token_type_ids"], inputs.get("image_grid_thw"),
            inputs.get("video_grid_thw"), hf_inputs.get("second_per_grid_ts"), inputs["attention_mask"],
        ) if case != "text" else (None, None)
        ref = reference(**hf_inputs, position_ids=ref_pos, output_hidden_states=True)
        # The reference's position ids are fed to both, so this checks the towers and the LLM;
        # position ids are compared on their own in test_vl_position_ids.
        logits, cache = ours.run_with_cache(**inputs, position_ids=ref_pos)
    stages = {"logits": (logits, ref.logits)}
    stages.update({f"blocks.{layer}.hook_resid_pre": (cache["resid_pre", layer], ref.hidden_states[layer])
                   for layer in range(ours.cfg.n_layers)})
    assert_stages(stages, TOL, mask=mask)


@pytest.mark.parametrize("case", ["image", "video", "vl_padded_batch"])
def test_vl_position_ids(vl_pair, case):
    """Ours follow the released Qwen2.5-VL rule. transformers 5.x agrees on text and images but,
    after a video of several frame groups, resumes text at ``start + max(h, w)/2`` instead of the
    released code's ``max id + 1`` (transformers issue #45381 family); we keep the released rule."""
    reference, ours = vl_pair
    inputs = build_case(case, seed=7)
    hf_inputs = hf_vl_inputs(inputs)
    ref_pos, _ = reference.model.get_rope_index(
        hf_inputs["input_ids"], hf_inputs["mm_token_type_ids"], inputs.get("image_grid_thw"),
        inputs.get("video_grid_thw"), hf_inputs.get("second_per_grid_ts"), inputs["attention_mask"],
    )
    pos, _ = ours.compute_position_ids(
        inputs["input_ids"], inputs["attention_mask"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
        inputs.get("video_second_per_grid"),
    )
    mask = inputs["attention_mask"].bool()
    video_rows = (inputs["input_ids"] == VIDEO).any(-1)
    for row in range(mask.shape[0]):
        ours_row, ref_row = pos[:, row, mask[row]], ref_pos[:, row, mask[row]]
        if not video_rows[row]:
            assert_equal(ours_row, ref_row, f"position ids of row {row}")
            continue
        is_video = inputs["input_ids"][row, mask[row]] == VIDEO
        last_video = int(is_video.nonzero().max())
        # identical up to and including the video tokens
        assert_equal(ours_row[:, : last_video + 1], ref_row[:, : last_video + 1], f"position ids of row {row} up to its video's end")
        # then text resumes one past the largest id so far (released rule)
        assert torch.equal(ours_row[:, last_video + 1], ours_row[:, : last_video + 1].max().expand(3) + 1)
