"""Attribution patching against real activation patching: exact where the metric is linear in the
activation, the derivative of an interpolated real patch everywhere (float32 / float64, CPU).

The toy tests run on the shipped toy model, a trained Qwen2.5-Omni-style checkpoint (there is no
VideoLLaMA2 toy): the estimate tracking the real sweep needs a trained model. The known answers
that need no training also run on every family's tiny random model (its test kit in ``tests/kits/``),
Qwen3-Omni's MoE LLM included (the estimate differentiates through the routing weights of the chosen
experts; the choice itself is piecewise constant).
"""

from __future__ import annotations

import pytest
import torch

from hooked_avllm.analysis import attribution_patching, logit_diff, patching_sweep
from hooked_avllm.analysis.alignment import align_positions
from hooked_avllm.toy import ToyScenes, load_toy
from hooked_avllm.toy.data import Clip
from hooked_avllm.toy.evaluate import prepare_clips

COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@pytest.fixture(scope="module")
def toy():
    return load_toy("omni")


@pytest.fixture(scope="module")
def toy_pairs(toy):
    """The demo's setting: the true sound alone (source) and with a conflicting picture (target)."""
    clips = [ToyScenes(seed=1000).clip("counterfactual", i) for i in range(4)]
    sources = [prepare_clips(toy, [Clip("audio_only", None, c.audio, None, c.sound)], "hear") for c in clips]
    targets = [prepare_clips(toy, [c], "hear") for c in clips]
    metrics = [logit_diff(c.sound_word, c.implied_sound_word, toy) for c in clips]
    return sources, targets, metrics


def assert_exact_where_linear(model, sources, targets, metrics, moves: float) -> None:
    """Under a logit difference the logits are linear in ``ln_final.hook_normalized`` at the answer
    position, so the estimate there equals the real patch (which moves the metric by more than
    ``moves``); the last layer's output at the audio positions cannot reach the answer position,
    so both are exactly 0 there."""
    real = patching_sweep(model, sources, targets, metrics, components=("ln_final.hook_normalized",), modality="last",
                          progress=False)
    ap = attribution_patching(model, sources, targets, metrics, components=("ln_final.hook_normalized",),
                              modality="last", heads=False, progress=False)
    assert (real.per_pair - real.target_value[:, None, None]).abs().min() > moves  # the patch really moves the metric
    assert (ap.components.per_pair - real.per_pair).abs().max() < 1e-4
    assert torch.allclose(ap.components.source_value, real.source_value, atol=1e-5)
    assert torch.allclose(ap.components.target_value, real.target_value, atol=1e-5)
    last = model.cfg.n_layers - 1
    real = patching_sweep(model, sources, targets, metrics, layers=[last], components=("resid_post",), progress=False)
    ap = attribution_patching(model, sources, targets, metrics, layers=[last], components=("resid_post",), heads=False,
                              progress=False)
    assert float((real.per_pair - real.target_value[:, None, None]).abs().max()) < 1e-5
    assert float(ap.components.effect.abs().max()) < 1e-7


def test_exact_where_the_metric_is_linear(toy, toy_pairs):
    """Under a logit difference the logits are linear in the final-norm output at the answer
    position, so the estimate must equal the real patch there."""
    sources, targets, metrics = toy_pairs
    assert_exact_where_linear(toy, sources, targets, metrics, moves=0.1)


def test_tracks_the_real_sweep(toy, toy_pairs):
    """Components and heads: the estimate follows the real sweep (the figures in docs/benchmarks.md
    come from bench/attribution_vs_patching.py over more pairs)."""
    sources, targets, metrics = (x[:2] for x in toy_pairs)
    for modality, floor in (("last", 0.99), ("audio", 0.6)):
        real = patching_sweep(toy, sources, targets, metrics, components=COMPONENTS, modality=modality, progress=False)
        heads = patching_sweep(toy, sources, targets, metrics, components=("z",), modality=modality, progress=False)
        ap = attribution_patching(toy, sources, targets, metrics, components=COMPONENTS, modality=modality, progress=False)
        assert ap.components.values.shape == real.values.shape and ap.heads.values.shape == heads.values.shape
        for estimate, truth in ((ap.components, real), (ap.heads, heads)):
            r = torch.corrcoef(torch.stack([estimate.values.flatten(), truth.values.flatten()]))[0, 1]
            assert r > floor, (modality, float(r))
        assert ap.components.n_forwards == 0 and ap.components.n_backwards == len(sources)


@pytest.fixture(scope="module")
def tiny_pairs(family):
    """A tiny random model, and two pairs: audio alone (source) and the same audio with a video (target)."""
    model = family.model(seed=5)
    sources = [family.clip(model, video=False, seed=1, audio_seed=7), family.clip(model, video=False, seed=3, audio_seed=8)]
    targets = [family.clip(model, video=True, seed=2, audio_seed=7), family.clip(model, video=True, seed=4, audio_seed=8)]
    return model, sources, targets, [logit_diff(3, 7), logit_diff(11, 12)]


def test_exact_where_the_metric_is_linear_on_random_models(tiny_pairs):
    """As on the toy: under a logit difference the estimate at ``ln_final.hook_normalized`` of the
    answer position is the real patch; the last layer's audio positions cannot reach the answer."""
    model, sources, targets, metrics = tiny_pairs
    assert_exact_where_linear(model, sources, targets, metrics, moves=0.01)


def test_position_table_on_random_models(family, tiny_pairs):
    """Per-position estimates sit on the target's audio tokens, labelled by their clip time; the
    audio tower sees the same audio in both runs, so its estimate is exactly 0."""
    model, sources, targets, metrics = tiny_pairs
    ap = attribution_patching(model, sources[0], targets[0], metrics[0],
                              components=("resid_pre", "audio.blocks.{l}.hook_resid_post", "audio_proj.hook_out"),
                              progress=False)
    positions = ap.components.position_table()
    audio = torch.nonzero(targets[0].layout.audio[0]).flatten()
    first = positions[(positions.pair == 0) & (positions.component == "resid_pre") & (positions.layer == 1)]
    assert first.position.tolist() == audio.tolist() and (first.batch == 0).all()
    times = torch.tensor(first.time.to_numpy(), dtype=torch.float32)
    assert torch.allclose(times, family.audio_token_times(len(audio)), atol=1e-6)  # the tower's token rate
    row = ap.components.row_labels.index("resid_pre")
    per_position = ap.components.per_position[0][row]  # [layer, n_audio]: adds up to each cell's estimate
    assert torch.allclose(per_position.sum(-1).double(), ap.components.effect[row].double(), atol=1e-6)
    enc = ap.components.row_labels.index("audio.blocks.{l}.hook_resid_post")
    assert float(ap.components.effect[enc].nan_to_num().abs().max()) == 0.0
    assert float(ap.components.effect[ap.components.row_labels.index("audio_proj.hook_out")].abs().max()) == 0.0


def _interpolated_metric(model, src, tgt, metric, name, eps, head=None, routing=None):
    """Real patching of tgt + eps * (src - tgt) at the aligned audio positions of ``name``; with a
    ``routing`` list, the experts every MoE layer chose in that run are appended to it."""
    align = align_positions(src, tgt, "audio")
    store = {}
    routed = [n for n in model.hook_dict if n.endswith("mlp.hook_expert_indices")] if routing is not None else []

    def chosen(indices, hook):
        routing.append(indices.clone())

    def keep(act, hook):
        store["src"] = act[align.source_batch, align.source_pos].detach().clone()

    def write(act, hook):
        act = act.clone()
        rows, pos = align.target_batch, align.target_pos
        delta = store["src"] - act[rows, pos]
        if head is not None:
            mask = torch.zeros(act.shape[2], 1, dtype=act.dtype)
            mask[head] = 1
            delta = delta * mask
        act[rows, pos] = act[rows, pos] + eps * delta
        return act

    with torch.no_grad():
        model.run_with_hooks(src, fwd_hooks=[(name, keep)])
        logits = model.run_with_hooks(tgt, fwd_hooks=[(name, write)] + [(n, chosen) for n in routed])
        return float(metric(logits, tgt).mean())


def _step(model) -> float:
    """The central-difference step: 1e-4 for dense LLMs (float64 throughout). An MoE router's softmax
    is float32 (the released one), so a float64 model's metric carries ~1e-7-relative rounding of the
    routing weights: the step is 1e-3, where that rounding costs ~1e-8 / 1e-3 on the slope. It must
    also leave every top-k choice unchanged (checked where it is used): the metric is smooth only on
    pieces of fixed routing, and the estimate is the derivative on the target's piece."""
    return 1e-3 if any(n.endswith("mlp.hook_expert_indices") for n in model.hook_dict) else 1e-4


def _slope(model, src, tgt, metric, name, eps, head=None):
    """Central difference of the interpolated patch, asserting that no expert choice flips within the step."""
    runs = [[], [], []]
    up, down = (_interpolated_metric(model, src, tgt, metric, name, e, head, routing=r)
                for e, r in ((eps, runs[0]), (-eps, runs[1])))
    _interpolated_metric(model, src, tgt, metric, name, 0.0, head, routing=runs[2])
    for plus, minus, plain in zip(*runs):
        assert torch.equal(plus, plain) and torch.equal(minus, plain), f"{name}: a step of {eps} re-routes a token"
    return (up - down) / (2 * eps)


def test_equals_the_derivative_of_an_interpolated_patch(family):
    """Every cell's estimate is d/d eps of the metric under the patch tgt + eps (src - tgt), at eps = 0
    (central differences in float64, a padded batch of two targets sharing one source)."""
    model = family.model(seed=5).double()
    src = family.clip(model, video=False, seed=1, audio_seed=7)
    tgt = family.batch(model, [family.clip(model, video=True, seed=2, audio_seed=7),
                               family.clip(model, video=True, seed=3, audio_seed=7, prefix=8)])
    src, tgt = src.to("cpu", torch.float64), tgt.to("cpu", torch.float64)
    metric = logit_diff(3, 7)
    ap = attribution_patching(model, src, tgt, metric, components=COMPONENTS, modality="audio", progress=False)
    eps = _step(model)
    for comp, layer in (("resid_pre", 1), ("attn_out", 0), ("mlp_out", 1), ("resid_mid", 1)):
        name = f"blocks.{layer}.hook_{comp}"
        slope = _slope(model, src, tgt, metric, name, eps)
        estimate = float(ap.components.effect[COMPONENTS.index(comp), layer])
        assert abs(estimate - slope) < 1e-6 * max(1.0, abs(slope)), (name, estimate, slope)
    for layer, head in ((0, 2), (0, 3)):  # (the last layer's heads cannot reach the answer from audio)
        name = f"blocks.{layer}.attn.hook_z"
        slope = _slope(model, src, tgt, metric, name, eps, head)
        assert abs(float(ap.heads.effect[layer, head]) - slope) < 1e-6 * max(1.0, abs(slope))
    # the per-position estimates add up to the cell's estimate
    per_position = ap.components.per_position[0]
    assert torch.allclose(per_position.sum(-1).double(), ap.components.effect.double(), atol=1e-8)
    assert per_position.shape[-1] == int(tgt.layout.audio.sum())


def test_tables_plots_and_errors(toy, toy_pairs, tmp_path):
    sources, targets, metrics = toy_pairs
    ap = attribution_patching(toy, sources[:2], targets[:2], metrics[:2], layers=[0, 3],
                              components=("resid_pre", "audio.blocks.{l}.hook_resid_post", "audio_proj.hook_out"),
                              progress=False)
    table = ap.components.table()
    assert set(table.columns) == {"component", "layer", "value", "restoration"}
    positions = ap.components.position_table()
    assert {"pair", "component", "layer", "position", "time", "attribution"} <= set(positions.columns)
    n_audio = int(targets[0].layout.audio.sum())
    first = positions[(positions.pair == 0) & (positions.component == "resid_pre") & (positions.layer == 3)]
    assert len(first) == n_audio and first.time.min() == 0.0  # audio tokens, labelled by their time
    # the same audio in both runs: the audio tower's activations are equal, so their estimate is 0
    enc = ap.components.row_labels.index("audio.blocks.{l}.hook_resid_post")
    assert float(ap.components.effect[enc].nan_to_num().abs().max()) == 0.0
    assert (tmp_path / "ap.png").exists() is False
    ap.components.plot(tmp_path / "ap.png")
    ap.components.plot_positions("resid_pre", tmp_path / "positions.png")
    ap.heads.plot_positions(3, tmp_path / "heads.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in ("ap.png", "positions.png", "heads.png"))
    with pytest.raises(ValueError, match=r"layers=\[9\]: layer 9 does not exist in this \d+-layer model"):
        attribution_patching(toy, sources[0], targets[0], metrics[0], layers=[9], progress=False)
    with pytest.raises(ValueError, match=r"heads=\[7\]: head 7 does not exist in this \d+-head model"):
        attribution_patching(toy, sources[0], targets[0], metrics[0], heads=[7], progress=False)
    with pytest.raises(ValueError, match="differentiable"):
        attribution_patching(toy, sources[0], targets[0], lambda logits, inputs: torch.tensor([1.0]), progress=False)
    with pytest.raises(ValueError, match="not a row"):
        ap.components.plot_positions("mlp_out")


def test_leaves_the_weights_as_they_were(toy, toy_pairs):
    """The weights are frozen only for the target's backward: no .grad appears, flags come back."""
    sources, targets, metrics = toy_pairs
    toy.blocks[1].mlp.down.weight.requires_grad_(False)  # a user's own choice survives too
    try:
        attribution_patching(toy, sources[0], targets[0], metrics[0], layers=[1, 2], progress=False)
        assert all(p.grad is None for p in toy.parameters())
        flags = {n: p.requires_grad for n, p in toy.named_parameters()}
        assert flags.pop("blocks.1.mlp.down.weight") is False and all(flags.values())
    finally:
        toy.blocks[1].mlp.down.weight.requires_grad_(True)
