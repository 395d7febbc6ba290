"""Qwen3-Omni's AuT audio encoder against transformers' ``Qwen3OmniMoeAudioEncoder``.

A tiny random reference (every parameter random, ``n_window_infer=200`` so that clips span several
attention windows of 26 tokens and end in a partial one) is loaded into our tower and head only
through ``aut_targets``; both sides see the same clips, the reference packed as transformers'
thinker packs them (``input_features.permute(0, 2, 1)[mask].permute(1, 0)`` with ``feature_lens``).
Compared in float32 and float64: the stem's three convolutions, ``conv_out`` (real tokens),
the blocks' input (``conv_out`` + positions), a middle layer's output, ``ln_post`` and the output.
The real checkpoint's index checks every ``thinker.audio_tower.*`` name against our parameters.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule

from hooked_avllm.towers.aut_audio import (
    AuTAudioTower,
    AuTConfig,
    AuTOutputHead,
    aut_token_counts,
)
from weights_conversion.aut_audio import aut_targets

QWEN3_OMNI = Path(__file__).resolve().parent / "fixtures" / "hub" / "Qwen__Qwen3-Omni-30B-A3B-Instruct"
TINY = dict(d_model=32, encoder_layers=3, encoder_attention_heads=4, encoder_ffn_dim=64, output_dim=48,
            downsample_hidden_size=8, num_mel_bins=128, n_window=50, n_window_infer=200)
FP32_TOL = 1e-5  # relative to the largest |value| of the stage
FP64_TOL = 1e-10  # absolute
MIDDLE = 1  # the layer whose output is compared (of 3)

CASES = {
    "one_chunk_100": [100],
    "odd_37": [37],
    "long_913": [913],
    "long_1650": [1650],
    "batch_padded": [37, 913, 100, 1650, 250, 1],
    "batch_short": [37, 61, 90],  # every chunk shorter than 100 frames: padded to 90
}
ERRORS: dict[tuple[str, str], float] = {}  # (case, dtype) -> worst relative error over the stages


class Parts(HookedRootModule):
    """Tower and head under the model's slot names, so hook names read ``audio.*`` / ``audio_proj.*``."""

    def __init__(self, tower: AuTAudioTower, head: AuTOutputHead):
        super().__init__()
        self.audio, self.audio_proj = tower, head
        self.setup()

    def forward(self, features, lengths):
        return self.audio_proj(self.audio(features, lengths))


def randomize_(module: nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1): norm weights near 1, biases
    small but nonzero, matrices ~ 1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            is_norm = p.ndim == 1 and ("norm" in name or name.startswith("ln_post"))
            if is_norm:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def load_(parts: Parts, state: dict[str, torch.Tensor], cfg: AuTConfig) -> None:
    """Copy a reference state dict into ``parts`` through ``aut_targets`` only; every name must be
    known and every row of every parameter written exactly once."""
    params = dict(parts.named_parameters())
    written = {k: torch.zeros(p.shape[:1] if p.ndim else (), dtype=torch.int) for k, p in params.items()}
    with torch.no_grad():
        for name, tensor in state.items():
            targets = aut_targets(name, cfg)
            assert targets, f"aut_targets does not place {name}"
            for t in targets:
                assert t.index is None and t.shape is None, t  # no stacked or reshaped tensors in AuT
                p = params[t.param]
                start, stop = t.rows or (0, p.shape[0])
                p[start:stop].copy_(tensor)
                written[t.param][start:stop] += 1
    for k, count in written.items():
        assert bool((count == 1).all()), f"{k} written {count.tolist()} times"


@pytest.fixture(scope="module")
def pairs():
    """{dtype: (reference, ours)}, the same random weights in float32 and float64."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
    )
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
    )

    torch.manual_seed(0)
    hf_cfg = Qwen3OmniMoeAudioEncoderConfig(**TINY)
    reference = Qwen3OmniMoeAudioEncoder(hf_cfg).eval()
    randomize_(reference, seed=1)
    cfg = AuTConfig.from_hf(hf_cfg.to_dict())
    parts = Parts(AuTAudioTower(cfg), AuTOutputHead(cfg)).eval()
    load_(parts, reference.state_dict(), cfg)
    return {
        torch.float32: (reference, parts),
        torch.float64: (copy.deepcopy(reference).double(), copy.deepcopy(parts).double()),
    }


def clips(lengths: list[int], dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random log-mel-like features [clip, 128, longest], with junk (large values) in the padding."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    features = torch.randn(len(lengths), 128, longest, generator=generator, dtype=torch.float64)
    lens = torch.tensor(lengths)
    padding = torch.arange(longest)[None, :] >= lens[:, None]
    features = features.masked_fill(padding[:, None, :], 1e3)
    return features.to(dtype), lens


def reference_run(reference, features: torch.Tensor, lens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference's stages, packed as transformers' thinker packs the features."""
    mask = torch.arange(features.shape[2])[None, :] < lens[:, None]
    packed = features.permute(0, 2, 1)[mask].permute(1, 0)
    seen: dict[str, torch.Tensor] = {}

    def keep(key, transform=lambda x: x):
        def hook(module, args, out):  # returns None: the reference's outputs are left alone
            seen[key] = transform(out)
        return hook

    def keep_input(module, args, kwargs):
        seen["embed"] = args[0] if args else kwargs["hidden_states"]

    handles = [
        reference.conv2d1.register_forward_hook(keep("conv1", F.gelu)),
        reference.conv2d2.register_forward_hook(keep("conv2", F.gelu)),
        reference.conv2d3.register_forward_hook(keep("conv3", F.gelu)),
        reference.conv_out.register_forward_hook(keep("conv_out")),
        reference.layers[0].register_forward_pre_hook(keep_input, with_kwargs=True),
        reference.layers[MIDDLE].register_forward_hook(keep("middle", lambda out: out[0])),
        reference.ln_post.register_forward_hook(keep("ln_post")),
    ]
    try:
        with torch.no_grad():
            seen["out"] = reference(input_features=packed, feature_lens=lens).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    return seen


STAGES = {  # reference stage -> our hook
    "conv1": "audio.hook_conv1",
    "conv2": "audio.hook_conv2",
    "conv3": "audio.hook_conv3",
    "conv_out": "audio.hook_conv_out",
    "embed": "audio.hook_embed",
    "middle": f"audio.blocks.{MIDDLE}.hook_resid_post",
    "ln_post": "audio.hook_out",
}


def compare(reference, parts: Parts, lengths: list[int], dtype) -> float:
    """Worst error over the stages (relative to each stage's scale in float32, absolute in float64)."""
    features, lens = clips(lengths, dtype, seed=len(lengths) + lengths[0])
    seen = reference_run(reference, features, lens)
    with torch.no_grad():
        out, cache = parts.run_with_cache(features, lens, names_filter=list(STAGES.values()))
    assert out.shape == (1, int(aut_token_counts(lens).sum()), parts.audio.cfg.out_dim)
    # the reference's conv_out covers every padded time step: keep the real tokens, in chunk order
    conv_out = seen["conv_out"]
    chunk_tokens = torch.cat([
        aut_token_counts(torch.tensor([100] * (n // 100) + ([n % 100] if n % 100 else []))) for n in lengths
    ])
    keep = torch.arange(conv_out.shape[1])[None, :] < chunk_tokens[:, None]
    seen["conv_out"] = conv_out[keep]
    worst = 0.0
    for stage, hook in [*STAGES.items(), ("out", None)]:
        ours, theirs = (out if hook is None else cache[hook]), seen[stage]
        if theirs.ndim == 2:  # the reference's packed tokens: [token, d]
            ours = ours.squeeze(0)
        assert ours.shape == theirs.shape, stage
        error = (ours - theirs).abs().max().item()
        if dtype == torch.float32:
            error /= theirs.abs().max().item()
        worst = max(worst, error)
        assert error < (FP32_TOL if dtype == torch.float32 else FP64_TOL), f"{stage}: {error:.3g}"
    return worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers(pairs, case, dtype):
    reference, parts = pairs[dtype]
    ERRORS[case, str(dtype)] = compare(reference, parts, CASES[case], dtype)
    print(f"{case} {dtype}: max error {ERRORS[case, str(dtype)]:.3g}")


def test_window_size_floors_to_whole_chunks():
    """n_window_infer=350 gives windows of 3 chunks (39 tokens), as the reference floors it."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
    )
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
    )

    torch.manual_seed(0)
    reference = Qwen3OmniMoeAudioEncoder(Qwen3OmniMoeAudioEncoderConfig(**dict(TINY, n_window_infer=350))).eval().double()
    randomize_(reference, seed=3)
    cfg = AuTConfig.from_hf(reference.config.to_dict())
    assert cfg.window_tokens == 39
    parts = Parts(AuTAudioTower(cfg), AuTOutputHead(cfg)).double().eval()
    load_(parts, reference.state_dict(), cfg)
    assert compare(reference, parts, [913, 450], torch.float64) < FP64_TOL


def test_short_clip_depends_on_the_longest_chunk(pairs):
    """The reference's quirk, kept: unmasked padding between the convolutions reaches the last
    token of a chunk shorter than the call's longest chunk."""
    _, parts = pairs[torch.float64]
    features, lens = clips([37, 90], torch.float64)
    with torch.no_grad():
        together = parts.audio(features, lens)[0, :5]
        alone = parts.audio(features[:1, :, :37], lens[:1])[0]
    assert (together[:4] - alone[:4]).abs().max() > 0  # attention spreads the last token's change
    assert (together - alone).abs().max() > 1e-3


def test_token_counts_match_the_reference_formula():
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        _get_feat_extract_output_lengths,
    )

    lengths = torch.arange(1, 3001)
    assert torch.equal(aut_token_counts(lengths), _get_feat_extract_output_lengths(lengths))
    assert [aut_token_counts(n) for n in (1, 37, 99, 100, 101, 913, 1650)] == [
        int(_get_feat_extract_output_lengths(torch.tensor(n))) for n in (1, 37, 99, 100, 101, 913, 1650)
    ]


def test_hooks_fire_with_documented_shapes(pairs):
    _, parts = pairs[torch.float32]
    features, lens = clips([37, 250])  # chunks 37 | 100 100 50 -> padded to 100; tokens 5 + 33
    with torch.no_grad():
        out, cache = parts.run_with_cache(features, lens)
    expected = {
        "audio.hook_conv1": (4, 8, 64, 50),
        "audio.hook_conv2": (4, 8, 32, 25),
        "audio.hook_conv3": (4, 8, 16, 13),
        "audio.hook_conv_out": (1, 38, 32),
        "audio.hook_pos_embed": (1, 38, 32),
        "audio.hook_embed": (1, 38, 32),
        "audio.blocks.0.hook_resid_pre": (1, 38, 32),
        "audio.blocks.0.ln1.hook_normalized": (1, 38, 32),
        "audio.blocks.0.attn.hook_q": (1, 38, 4, 8),
        "audio.blocks.0.attn.hook_attn_scores": (3, 4, 26, 26),  # windows: 5 | 26 7
        "audio.blocks.0.attn.hook_pattern": (3, 4, 26, 26),
        "audio.blocks.0.attn.hook_z": (1, 38, 4, 8),
        "audio.blocks.1.mlp.hook_pre": (1, 38, 64),
        "audio.blocks.2.hook_resid_post": (1, 38, 32),
        "audio.hook_out": (1, 38, 32),
        "audio_proj.hook_pre": (1, 38, 32),
        "audio_proj.hook_post": (1, 38, 32),
        "audio_proj.hook_out": (1, 38, 48),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert {k for k in parts.hook_dict if not k.endswith("hook_result")} == set(cache.keys())
    assert torch.equal(cache["audio_proj.hook_out"], out)
    assert torch.equal(cache["audio.hook_embed"], cache["audio.hook_conv_out"] + cache["audio.hook_pos_embed"])
    # positions restart in every chunk: clip 2's second chunk starts at token 5 + 13
    assert torch.equal(cache["audio.hook_pos_embed"][0, 18], cache["audio.hook_pos_embed"][0, 0])
    pattern = cache["audio.blocks.1.attn.hook_pattern"]
    for window, n in enumerate([5, 26, 7]):
        assert (pattern[window, :, :, :n].sum(-1) - 1).abs().max() < 1e-5
        assert bool((pattern[window, :, :, n:] == 0).all())


def test_explicit_attention_matches_fused(pairs):
    _, parts = pairs[torch.float32]
    features, lens = clips([913, 250, 37])
    with torch.no_grad():
        fused = parts(features, lens)
        explicit, _ = parts.run_with_cache(features, lens, names_filter=lambda name: name.endswith("hook_pattern"))
    assert (explicit - fused).abs().max() < 1e-6 * fused.abs().max()


def test_gradients_reach_the_features(pairs):
    """Gradients w.r.t. the padded features equal the reference's w.r.t. its packed input (float64);
    padding frames get exactly zero."""
    reference, parts = pairs[torch.float64]
    features, lens = clips([250, 37], torch.float64)
    features.requires_grad_(True)
    weights = torch.randn(1, int(aut_token_counts(lens).sum()), 48, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (parts(features, lens) * weights).sum().backward()
    mask = torch.arange(features.shape[2])[None, :] < lens[:, None]
    packed = features.detach().permute(0, 2, 1)[mask].permute(1, 0).clone().requires_grad_(True)
    (reference(input_features=packed, feature_lens=lens).last_hidden_state * weights[0]).sum().backward()
    ours = features.grad.permute(0, 2, 1)[mask].permute(1, 0)
    assert ours.abs().max() > 0
    assert (ours - packed.grad).abs().max() < FP64_TOL
    assert bool((features.grad.permute(0, 2, 1)[~mask] == 0).all())


def test_bad_inputs_raise(pairs):
    _, parts = pairs[torch.float32]
    tower = parts.audio
    with pytest.raises(ValueError, match=r"lengths must be between 1 and the 100 frames.*\[101\]"):
        tower(torch.randn(1, 128, 100), torch.tensor([101]))
    with pytest.raises(ValueError, match=r"n_mels=128.*\(1, 80, 100\)"):
        tower(torch.randn(1, 80, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match=r"lengths must be \[n_clip\] = \[2\].*\(1,\)"):
        tower(torch.randn(2, 128, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match=r"between 1 and.*\[0, 100\]"):
        tower(torch.randn(2, 128, 100), torch.tensor([0, 100]))
    with pytest.raises(ValueError, match=r"no clip"):
        tower(torch.randn(0, 128, 100), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer frame counts.*float"):
        tower(torch.randn(1, 128, 100), torch.tensor([100.0]))
    with pytest.raises(ValueError, match=r"d_model=32"):
        parts.audio_proj(torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match=r"n_window_infer=50 must be at least 2 \* n_window=100"):
        AuTConfig(n_window_infer=50)
    with pytest.raises(ValueError, match=r"d_model=30 must be a multiple of n_heads=4"):
        AuTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match=r"unknown keys \['layers'\]"):
        AuTConfig.from_dict({"layers": 2})


def test_config_round_trip_and_real_config():
    audio_config = json.loads((QWEN3_OMNI / "config.json").read_text())["thinker_config"]["audio_config"]
    cfg = AuTConfig.from_hf(audio_config)
    assert cfg == AuTConfig()  # our defaults are the released model's
    assert (cfg.tokens_per_chunk, cfg.window_tokens, cfg.stem_mels, cfg.d_head) == (13, 104, 16, 64)
    tiny = AuTConfig.from_hf(TINY)
    assert AuTConfig.from_dict(tiny.to_dict()) == tiny
    assert AuTConfig.from_hf({}).out_dim == 3584  # transformers' default


def test_every_checkpoint_name_lands_on_a_parameter_of_its_shape():
    """Every ``thinker.audio_tower.*`` tensor of the released index maps to our parameters with the
    shape transformers gives it under the released config, and together they fill every parameter."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
    )
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
    )

    prefix = "thinker.audio_tower."
    index = json.loads((QWEN3_OMNI / "model.safetensors.index.json").read_text())["weight_map"]
    names = sorted(k.removeprefix(prefix) for k in index if k.startswith(prefix))
    audio_config = json.loads((QWEN3_OMNI / "config.json").read_text())["thinker_config"]["audio_config"]
    cfg = AuTConfig.from_hf(audio_config)
    with torch.device("meta"):
        parts = Parts(AuTAudioTower(cfg), AuTOutputHead(cfg))
        reference = Qwen3OmniMoeAudioEncoder(Qwen3OmniMoeAudioEncoderConfig(**{k: audio_config[k] for k in TINY}))
    shapes = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert set(names) == set(shapes)  # the index holds exactly the reference's tensors
    params = dict(parts.named_parameters())
    rows = {k: 0 for k in params}
    for name in names:
        targets = aut_targets(name, cfg)
        assert targets, name
        for t in targets:
            param = params[t.param]
            expected = param.shape if t.rows is None else (t.rows[1] - t.rows[0], *param.shape[1:])
            assert shapes[name] == tuple(expected), name
            rows[t.param] += expected[0]
    assert {k: n for k, n in rows.items() if n != params[k].shape[0]} == {}
    assert aut_targets("layers.32.fc1.weight", cfg) is None
    assert aut_targets("audio_tower.conv_out.weight", cfg) is None
