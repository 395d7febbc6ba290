"""Our Qwen2.5-Omni thinker against the Hugging Face reference, stage by stage, in float32."""

from __future__ import annotations

import pytest
import torch

from cases import OMNI_CASES, build_case
from parity import TOL, assert_close, assert_stages, load_ours, reference_pair
from reference_models import build_omni_full, build_omni_thinker


@pytest.fixture(scope="module", params=["a", "b"])
def omni_pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"omni_thinker_{request.param}")
    return reference_pair(build_omni_thinker(request.param, seed=1), folder, max_shard_size="100KB")  # several shards


def hf_vision_before_merger(visual, pixels, grid) -> torch.Tensor:
    """The reference ViT's last block output, put back into the processor's patch order."""
    from transformers.vision_utils import get_vision_window_index

    captured = {}
    handle = visual.merger.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        visual(pixels, grid_thw=grid)
    handle.remove()
    cfg = visual.config
    window_index, _ = get_vision_window_index(grid, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
    unit = cfg.spatial_merge_size**2
    blocks = captured["x"].view(-1, unit, captured["x"].shape[-1])
    return blocks[torch.argsort(window_index)].reshape(-1, blocks.shape[-1])


@pytest.mark.parametrize("case", OMNI_CASES)
def test_logits_and_stages_match(omni_pair, case):
    reference, ours = omni_pair
    for side in (["left", "right"] if case == "padded_batch" else ["left"]):
        inputs = build_case(case, seed=len(case), padding_side=side)
        mask = inputs["attention_mask"]
        with torch.no_grad():
            ref = reference(**inputs, output_hidden_states=True)
            logits, cache = ours.run_with_cache(**inputs)
        # the logits and every decoder layer's input residual, at the real positions
        stages = {"logits": (logits, ref.logits)}
        stages.update({f"blocks.{layer}.hook_resid_pre": (cache["resid_pre", layer], ref.hidden_states[layer])
                       for layer in range(ours.cfg.n_layers)})
        assert_stages(stages, TOL, mask=mask)

        if "input_features" in inputs:
            with torch.no_grad():
                ref_audio = reference.model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
            assert_close(cache["audio_proj.hook_out"][0], ref_audio, "audio_proj.hook_out", TOL)
        for pix_key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if pix_key in inputs and not ("pixel_values" in inputs and "pixel_values_videos" in inputs):
                visual = reference.model.visual
                with torch.no_grad():
                    ref_merged = visual(inputs[pix_key], grid_thw=inputs[grid_key]).pooler_output
                ref_tower = hf_vision_before_merger(visual, inputs[pix_key], inputs[grid_key])
                assert_stages({"vision.hook_out": (cache["vision.hook_out"][0], ref_tower),
                               "vision_proj.hook_out": (cache["vision_proj.hook_out"][0], ref_merged)}, TOL)


def test_full_model_checkpoint_with_talker(tmp_path):
    """A released-style checkpoint (thinker + talker + token2wav, ``thinker.`` prefixes) loads and matches."""
    full, ours = reference_pair(build_omni_full(seed=2), tmp_path, max_shard_size="200KB")
    assert ours.cfg.source_model_type == "qwen2_5_omni"
    for case in ("audio_in_video", "padded_batch"):
        inputs = build_case(case, seed=3)
        with torch.no_grad():
            ref = full.thinker(**inputs).logits
            logits = ours(**inputs)
        assert_close(logits, ref, f"logits ({case})", TOL, mask=inputs["attention_mask"])


def test_bfloat16_load_tracks_float32(omni_pair, tmp_path):
    """Loading in bf16 converts every tensor; the logits stay close to the float32 reference."""
    reference, ours = omni_pair
    folder = ours.checkpoint_folder
    ours16 = load_ours(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in ours16.parameters()} == {torch.bfloat16}
    inputs = build_case("image_audio_text", seed=11)
    with torch.no_grad():
        ref = reference(**inputs).logits
        logits = ours16(**inputs).float()
    assert_close(logits, ref, "bf16 logits", float(0.1 * ref.abs().max()))
    assert (logits.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
