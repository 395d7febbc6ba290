"""Our Qwen2.5-Omni thinker against the Hugging Face reference, stage by stage, in float32."""

from __future__ import annotations

import pytest
import torch

from cases import OMNI_CASES, build_case
from hooked_avllm import HookedAVLLM
from reference_models import build_omni_full, build_omni_thinker

TOL = 1e-4


@pytest.fixture(scope="module", params=["a", "b"])
def omni_pair(request, tmp_path_factory):
    reference = build_omni_thinker(request.param, seed=1)
    folder = tmp_path_factory.mktemp(f"omni_thinker_{request.param}")
    reference.save_pretrained(folder, max_shard_size="100KB")  # several shards
    return reference, HookedAVLLM.from_pretrained(folder)


def valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[mask.bool()]


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
        assert (valid(logits, mask) - valid(ref.logits, mask)).abs().max() < TOL
        # every decoder layer's input residual
        for layer in range(ours.cfg.n_layers):
            diff = valid(cache["resid_pre", layer], mask) - valid(ref.hidden_states[layer], mask)
            assert diff.abs().max() < TOL, f"layer {layer}"

        if "input_features" in inputs:
            with torch.no_grad():
                ref_audio = reference.model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
            assert (cache["audio_proj.hook_out"][0] - ref_audio).abs().max() < TOL
        for pix_key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if pix_key in inputs and not ("pixel_values" in inputs and "pixel_values_videos" in inputs):
                visual = reference.model.visual
                with torch.no_grad():
                    ref_merged = visual(inputs[pix_key], grid_thw=inputs[grid_key]).pooler_output
                ref_tower = hf_vision_before_merger(visual, inputs[pix_key], inputs[grid_key])
                assert (cache["vision.hook_out"][0] - ref_tower).abs().max() < TOL
                assert (cache["vision_proj.hook_out"][0] - ref_merged).abs().max() < TOL


def test_full_model_checkpoint_with_talker(tmp_path):
    """A released-style checkpoint (thinker + talker + token2wav, ``thinker.`` prefixes) loads and matches."""
    full = build_omni_full(seed=2)
    full.save_pretrained(tmp_path, max_shard_size="200KB")
    ours = HookedAVLLM.from_pretrained(tmp_path)
    assert ours.cfg.source_model_type == "qwen2_5_omni"
    for case in ("audio_in_video", "padded_batch"):
        inputs = build_case(case, seed=3)
        with torch.no_grad():
            ref = full.thinker(**inputs).logits
            logits = ours(**inputs)
        mask = inputs["attention_mask"]
        assert (valid(logits, mask) - valid(ref, mask)).abs().max() < TOL


def test_bfloat16_load_tracks_float32(omni_pair, tmp_path):
    """Loading in bf16 converts every tensor; the logits stay close to the float32 reference."""
    reference, ours = omni_pair
    folder = ours.checkpoint_folder
    ours16 = HookedAVLLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert {p.dtype for p in ours16.parameters()} == {torch.bfloat16}
    inputs = build_case("image_audio_text", seed=11)
    with torch.no_grad():
        ref = reference(**inputs).logits
        logits = ours16(**inputs).float()
    assert (logits - ref).abs().max() < 0.1 * ref.abs().max()
    assert (logits.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
