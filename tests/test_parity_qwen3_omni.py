"""Our Qwen3-Omni thinker against transformers' ``Qwen3OmniMoeThinkerForConditionalGeneration``
(tiny random configs, float32): logits, every decoder layer's input, the AuT and vision outputs,
each DeepStack injection, the chosen experts, greedy generation; loaded through our
``from_pretrained`` from what transformers saves (per-expert tensors on disk)."""

from __future__ import annotations

import pytest
import torch
from parity import TOL, assert_close, assert_equal, assert_same_tokens, assert_stages, real, reference_pair
from qwen3_reference import CASES, build_case, build_thinker


@pytest.fixture(scope="module", params=["a", "b"])
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"qwen3_thinker_{request.param}")
    # several shards, experts split per expert
    return reference_pair(build_thinker(request.param, seed=3), folder, max_shard_size="200KB")


def reference_router_indices(reference, inputs) -> dict[int, torch.Tensor]:
    """The experts the reference's router picks in each routed layer: [batch * pos, top_k]."""
    picked, handles = {}, []
    for layer, block in enumerate(reference.model.language_model.layers):
        gate = getattr(block.mlp, "gate", None)
        if gate is not None and hasattr(gate, "top_k"):
            handles.append(gate.register_forward_hook(lambda m, a, out, layer=layer: picked.__setitem__(layer, out[2])))
    try:
        with torch.no_grad():
            reference(**inputs)
    finally:
        for h in handles:
            h.remove()
    return picked


@pytest.mark.parametrize("case", CASES)
def test_logits_and_stages_match(pair, case):
    reference, ours = pair
    for side in (["left", "right"] if case == "padded_batch" else ["left"]):
        inputs = build_case(case, seed=len(case), padding_side=side)
        mask = inputs["attention_mask"]
        with torch.no_grad():
            ref = reference(**inputs, output_hidden_states=True)
            logits, cache = ours.run_with_cache(**inputs)
        # the logits, the embeddings, then every decoder layer's output (the reference records it before
        # the DeepStack rows are added, so ours is hook_resid_post, not the next layer's resid_pre)
        stages = {"logits": (logits, ref.logits), "blocks.0.hook_resid_pre": (cache["resid_pre", 0], ref.hidden_states[0])}
        stages.update({f"blocks.{layer}.hook_resid_post": (cache["resid_post", layer], ref.hidden_states[layer + 1])
                       for layer in range(ours.cfg.n_layers - 1)})
        assert_stages(stages, TOL, mask=mask)

        # the chosen experts, token for token
        picked = reference_router_indices(reference, inputs)
        assert picked, "the reference has routed layers"
        for layer, indices in picked.items():
            ours_idx = cache[f"blocks.{layer}.mlp.hook_expert_indices"].reshape(indices.shape)
            flat_mask = mask.reshape(-1).bool()
            assert_equal(ours_idx[flat_mask], indices[flat_mask], f"blocks.{layer}.mlp.hook_expert_indices")

        if "input_features" in inputs:
            with torch.no_grad():
                ref_audio = reference.model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
            assert_close(cache["audio_proj.hook_out"][0], ref_audio, "audio_proj.hook_out", TOL)
        kinds = [k for k in ("image", "video") if ("pixel_values" if k == "image" else "pixel_values_videos") in inputs]
        injected = {}
        for kind in kinds:
            getter = reference.model.get_image_features if kind == "image" else reference.model.get_video_features
            pix = inputs["pixel_values" if kind == "image" else "pixel_values_videos"]
            grid = inputs[f"{kind}_grid_thw"]
            with torch.no_grad():
                out = getter(pix, grid)
            merged = torch.cat(out.pooler_output)
            ours_rows = ours.layout_of(**inputs)  # the visual positions of this kind
            where = getattr(ours_rows, kind)
            assert_close(real(cache["hook_embed"], where), merged, f"hook_embed at the {kind} positions", TOL)
            for i, feats in enumerate(out.deepstack_features):
                injected.setdefault(i, []).append((where, torch.cat(feats)))
        for i, parts in injected.items():  # each DeepStack injection: the rows added after decoder layer i
            added = cache[f"blocks.{i}.hook_injection"]
            for where, rows in parts:
                assert_close(added[where], rows, f"blocks.{i}.hook_injection", TOL)
            others = ~torch.stack([w for w, _ in parts]).any(0)
            assert (added[others] == 0).all()
        if kinds == ["image"] or kinds == ["video"]:
            kind = kinds[0]
            pix = inputs["pixel_values" if kind == "image" else "pixel_values_videos"]
            with torch.no_grad():
                out = reference.model.visual(pix, grid_thw=inputs[f"{kind}_grid_thw"])
            stages = {"vision_proj.hook_out": (cache["vision_proj.hook_out"][0], out.pooler_output)}
            stages.update({f"vision_proj.deepstack.{i}.hook_out": (cache[f"vision_proj.deepstack.{i}.hook_out"][0], feats)
                           for i, feats in enumerate(out.deepstack_features)})
            assert_stages(stages, TOL)


@pytest.mark.parametrize("case", ["text", "image", "audio_in_video", "padded_batch"])
def test_greedy_generation_matches(pair, case):
    reference, ours = pair
    inputs = build_case(case, seed=7)
    with torch.no_grad():
        ref = reference.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    tokens = ours.generate(**inputs, max_new_tokens=8, eos_token_id=[])
    assert_same_tokens(tokens, ref)


def test_position_ids_match_the_reference(pair):
    reference, ours = pair
    for case in CASES:
        inputs = build_case(case, seed=1)
        ref, ref_delta = reference.model.get_rope_index(
            inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), inputs["attention_mask"],
            bool(inputs.get("use_audio_in_video")),
            inputs["feature_attention_mask"].sum(-1) if "feature_attention_mask" in inputs else None,
            inputs.get("video_second_per_grid"),
        )
        media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        positions, deltas = ours.compute_position_ids(inputs["input_ids"], inputs["attention_mask"], **media)
        mask = inputs["attention_mask"].bool()
        assert torch.equal(positions[:, mask], ref.float()[:, mask]), case
        assert torch.equal(deltas.float().reshape(-1), ref_delta.float().reshape(-1)), case
        assert torch.equal(ours.layout_of(**inputs).position_ids[:, mask].float(), ref.float()[:, mask]), case
