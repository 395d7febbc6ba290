"""Our Qwen3-Omni thinker against transformers' ``Qwen3OmniMoeThinkerForConditionalGeneration``
(tiny random configs, float32): logits, every decoder layer's input, the AuT and vision outputs,
each DeepStack injection, the chosen experts, greedy generation; loaded through our
``from_pretrained`` from what transformers saves (per-expert tensors on disk)."""

from __future__ import annotations

import pytest
import torch
from qwen3_reference import CASES, build_case, build_thinker

from hooked_avllm import HookedAVLLM

TOL = 1e-4


@pytest.fixture(scope="module", params=["a", "b"])
def pair(request, tmp_path_factory):
    reference = build_thinker(request.param, seed=3)
    folder = tmp_path_factory.mktemp(f"qwen3_thinker_{request.param}")
    reference.save_pretrained(folder, max_shard_size="200KB")  # several shards, experts split per expert
    return reference, HookedAVLLM.from_pretrained(folder)


def valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[mask.bool()]


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
        assert (valid(logits, mask) - valid(ref.logits, mask)).abs().max() < TOL
        # the embeddings, then every decoder layer's output (the reference records it before the
        # DeepStack rows are added, so ours is hook_resid_post, not the next layer's resid_pre)
        assert (valid(cache["resid_pre", 0], mask) - valid(ref.hidden_states[0], mask)).abs().max() < TOL
        for layer in range(ours.cfg.n_layers - 1):
            diff = valid(cache["resid_post", layer], mask) - valid(ref.hidden_states[layer + 1], mask)
            assert diff.abs().max() < TOL, f"layer {layer}"

        # the chosen experts, token for token
        picked = reference_router_indices(reference, inputs)
        assert picked, "the reference has routed layers"
        for layer, indices in picked.items():
            ours_idx = cache[f"blocks.{layer}.mlp.hook_expert_indices"].reshape(indices.shape)
            flat_mask = mask.reshape(-1).bool()
            assert torch.equal(ours_idx[flat_mask], indices[flat_mask]), f"layer {layer}"

        if "input_features" in inputs:
            with torch.no_grad():
                ref_audio = reference.model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
            assert (cache["audio_proj.hook_out"][0] - ref_audio).abs().max() < TOL
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
            assert (valid(cache["hook_embed"], where) - merged).abs().max() < TOL
            for i, feats in enumerate(out.deepstack_features):
                injected.setdefault(i, []).append((where, torch.cat(feats)))
        for i, parts in injected.items():  # each DeepStack injection: the rows added after decoder layer i
            added = cache[f"blocks.{i}.hook_injection"]
            for where, rows in parts:
                assert (added[where] - rows).abs().max() < TOL
            others = ~torch.stack([w for w, _ in parts]).any(0)
            assert (added[others] == 0).all()
        if kinds == ["image"] or kinds == ["video"]:
            kind = kinds[0]
            pix = inputs["pixel_values" if kind == "image" else "pixel_values_videos"]
            with torch.no_grad():
                out = reference.model.visual(pix, grid_thw=inputs[f"{kind}_grid_thw"])
            assert (cache["vision_proj.hook_out"][0] - out.pooler_output).abs().max() < TOL
            for i, feats in enumerate(out.deepstack_features):
                assert (cache[f"vision_proj.deepstack.{i}.hook_out"][0] - feats).abs().max() < TOL


@pytest.mark.parametrize("case", ["text", "image", "audio_in_video", "padded_batch"])
def test_greedy_generation_matches(pair, case):
    reference, ours = pair
    inputs = build_case(case, seed=7)
    with torch.no_grad():
        ref = reference.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    tokens = ours.generate(**inputs, max_new_tokens=8, eos_token_id=[])
    assert torch.equal(tokens, ref)


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
