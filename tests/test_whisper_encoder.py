"""MiniCPM-o 2.6's audio path (Whisper encoder with 1-s block-causal attention, pooled projector)
against the independent reference in ``minicpm_reference_audio`` (transformers' ``WhisperEncoder``
modules, a forward that follows the published ``get_audio_embedding``).

A tiny random reference (every parameter random, ``embed_positions`` included) is loaded into our
tower and projector only through the weight maps; both sides see the same padded pieces (0.0 in the
padding, as MiniCPM-o's processor pads them). Compared in float32 and float64, with the 1-s block
mask and with full attention: the conv stem, the blocks' input, every layer's output, the final
``layer_norm``, the projector per frame (padded frames included) and the packed pooled tokens.
The released config checks every ``apm.*`` / ``audio_projection_layer.*`` tensor against our
parameters on the meta device.
"""

from __future__ import annotations

import copy
import doctest
import json
from pathlib import Path

import pytest
import torch
from torch import nn

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule

import hooked_avllm.towers.whisper_encoder as whisper_encoder_module
import weights_conversion.whisper_encoder as whisper_encoder_conversion
from hooked_avllm.towers.whisper_encoder import (
    PooledAudioProjector,
    WhisperEncoderConfig,
    WhisperEncoderTower,
    whisper_token_counts,
)
from minicpm_reference_audio import MiniCPMAudioReference, attention_mask_4d
from weights_conversion.whisper_encoder import (
    pooled_projector_targets,
    whisper_encoder_implicit_zeros,
    whisper_encoder_targets,
)

MINICPM_O = Path(__file__).resolve().parent / "fixtures" / "hub" / "openbmb__MiniCPM-o-2_6"
TINY = dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=80)
OUT_DIM = 48
FP32_TOL = 1e-5  # absolute (every stage is O(1))
FP64_TOL = 1e-10  # absolute

CASES = {
    "one_second_100": [100],
    "odd_37": [37],
    "odd_151": [151],
    "odd_399": [399],
    "two_and_half_s_250": [250],
    "thirty_s_3000": [3000],
    "batch_padded": [37, 399, 100, 250, 151, 2, 1],
    "batch_with_30s": [3000, 151],  # a clip over 30 s: the 30-s piece and its remainder
}
FULL_ATTENTION_CASES = ["odd_399", "thirty_s_3000", "batch_padded"]  # full attention: a subset keeps the suite fast
ERRORS: dict[tuple[str, str, str], float] = {}  # (case, attention, dtype) -> worst absolute error over the stages
CHUNK = {"block": 1.0, "full": -1}  # the reference's chunk_length per attention kind


class Parts(HookedRootModule):
    """Tower and projector under the model's slot names, so hook names read ``audio.*`` / ``audio_proj.*``."""

    def __init__(self, tower: WhisperEncoderTower, projector: PooledAudioProjector):
        super().__init__()
        self.audio, self.audio_proj = tower, projector
        self.setup()

    def forward(self, features, lens):
        return self.audio_proj(self.audio(features, lens), lens)


def randomize_(module: nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1): norm weights near 1, biases
    small but nonzero, matrices (and the position table) ~ 1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and "norm" in name:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            elif "embed_positions" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def targets_of(name: str, cfg: WhisperEncoderConfig):
    """The family's dispatch, in miniature: released names -> our parameters."""
    if name.startswith("apm."):
        return whisper_encoder_targets(name.removeprefix("apm."), cfg)
    if name.startswith("audio_projection_layer."):
        return pooled_projector_targets(name.removeprefix("audio_projection_layer."))
    return None


def load_(parts: Parts, state: dict[str, torch.Tensor], cfg: WhisperEncoderConfig) -> None:
    """Copy a released-layout state dict into ``parts`` through the weight maps only (as
    ``WeightFiller`` does: ``rows`` slices, implicit zeros); every name must be known and every row of
    every parameter written exactly once. Parameters start as NaN so that nothing unwritten hides."""
    params = dict(parts.named_parameters())
    written = {k: torch.zeros(p.shape[:1], dtype=torch.int) for k, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.fill_(float("nan"))
        for name, tensor in state.items():
            targets = targets_of(name, cfg)
            assert targets, f"the weight maps do not place {name}"
            for t in targets:
                assert t.index is None and t.shape is None, t
                p = params[t.param]
                start, stop = t.rows or (0, p.shape[0])
                p[start:stop].copy_(tensor)
                written[t.param][start:stop] += 1
        for t in whisper_encoder_implicit_zeros(cfg):
            params[t.param][t.rows[0] : t.rows[1]].zero_()
            written[t.param][t.rows[0] : t.rows[1]] += 1
    for k, count in written.items():
        assert bool((count == 1).all()), f"{k} written {count.tolist()} times"
    assert not any(bool(p.isnan().any()) for p in params.values())


@pytest.fixture(scope="module")
def pairs():
    """{(attention, dtype): (reference, ours)}: the same random weights, block-causal and full
    attention, in float32 and float64."""
    torch.manual_seed(0)
    reference = MiniCPMAudioReference(TINY, out_dim=OUT_DIM).eval()
    randomize_(reference, seed=1)
    result = {}
    for attention, chunk in (("block", 1.0), ("full", None)):
        cfg = WhisperEncoderConfig.from_hf(reference.apm.config.to_dict(), chunk_length_s=chunk, out_dim=OUT_DIM)
        parts = Parts(WhisperEncoderTower(cfg), PooledAudioProjector(cfg)).eval()
        load_(parts, reference.state_dict(), cfg)
        result[attention, torch.float32] = (reference, parts)
        result[attention, torch.float64] = (copy.deepcopy(reference).double(), copy.deepcopy(parts).double())
    return result


def pieces(lengths: list[int], dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random log-mel-like features [piece, 80, longest], 0.0 in the padding (MiniCPM-o's processor)."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    features = torch.randn(len(lengths), 80, longest, generator=generator, dtype=torch.float64)
    lens = torch.tensor(lengths)
    padding = torch.arange(longest)[None, :] >= lens[:, None]
    return features.masked_fill(padding[:, None, :], 0.0).to(dtype), lens


STAGES = {  # reference stage -> our hook
    "conv1": "audio.hook_conv1",
    "conv2": "audio.hook_conv2",
    "embed": "audio.hook_embed",
    **{f"layer{i}": f"audio.blocks.{i}.hook_resid_post" for i in range(TINY["encoder_layers"])},
    "out": "audio.hook_out",
    "projected": "audio_proj.hook_pre_pool",
}


def compare(reference, parts: Parts, lengths: list[int], dtype, attention: str) -> float:
    """Worst absolute error over the stages; asserts each is within tolerance."""
    features, lens = pieces(lengths, dtype, seed=len(lengths) + lengths[0])
    seen = reference(features, lens, chunk_length=CHUNK[attention])
    seen.update({f"layer{i}": h for i, h in enumerate(seen["layers"])})
    with torch.no_grad():
        out, cache = parts.run_with_cache(features, lens, names_filter=list(STAGES.values()))
    theirs_out = torch.cat(seen["pieces"])[None]
    assert out.shape == theirs_out.shape == (1, int(whisper_token_counts(lens).sum()), OUT_DIM)
    worst = 0.0
    for stage, hook in [*STAGES.items(), ("tokens", None)]:
        ours, theirs = (out, theirs_out) if hook is None else (cache[hook], seen[stage])
        assert ours.shape == theirs.shape, (stage, ours.shape, theirs.shape)
        error = (ours - theirs).abs().max().item()
        worst = max(worst, error)
        assert error < (FP32_TOL if dtype == torch.float32 else FP64_TOL), f"{stage}: {error:.3g}"
    return worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize(
    "case, attention",
    [(case, "block") for case in CASES] + [(case, "full") for case in FULL_ATTENTION_CASES],
)
def test_matches_reference(pairs, case, attention, dtype):
    reference, parts = pairs[attention, dtype]
    error = compare(reference, parts, CASES[case], dtype, attention)
    ERRORS[case, attention, str(dtype)] = error
    print(f"{case} {attention} {dtype}: max abs error {error:.3g}")


def encode_alone_and_batched(model, lengths: list[int], reference: bool, attention: str = "block"):
    """Per piece: (its real post-conv frames encoded in the batch, encoded alone)."""
    features, lens = pieces(lengths, torch.float64)
    result = []
    with torch.no_grad():
        def encode(x, n):
            return model(x, n, CHUNK[attention])["out"] if reference else model.audio(x, n)

        batched = encode(features, lens)
        for b, n in enumerate(lengths):
            alone = encode(features[b : b + 1, :, :n], lens[b : b + 1])
            real = (n - 1) // 2 + 1
            result.append((batched[b, :real], alone[0, :real]))
    return result


@pytest.mark.parametrize("side", ["ours", "reference"])
def test_a_piece_depends_on_its_batch_as_in_the_reference(pairs, side):
    """The padding quirk, on both sides alike. With 1-s blocks: the longest piece and a piece of
    whole seconds (100 frames: its real queries' blocks end at its last real frame, and an even
    length leaves the conv stem untouched) encode as they do alone; a piece ending inside a block
    (37 frames) attends to padded frames [19, 37) and differs."""
    reference, parts = pairs["block", torch.float64]
    model = reference if side == "reference" else parts
    (short, short_alone), (whole, whole_alone), (longest, longest_alone) = encode_alone_and_batched(
        model, [37, 100, 399], reference=side == "reference"
    )
    assert (short - short_alone).abs().max() > 1e-3
    assert (whole - whole_alone).abs().max() < FP64_TOL
    assert (longest - longest_alone).abs().max() < FP64_TOL


def test_only_the_last_block_of_a_shorter_piece_changes(pairs):
    """Block-causal attention confines the quirk to the block holding a piece's last frame: padded
    keys (151 frames: keys [76, 100)) or the conv stem's first padded frame (199 frames, odd, 100
    real frames: no padded key is visible)."""
    _, parts = pairs["block", torch.float64]
    for n in (151, 199):
        (piece, alone), _ = encode_alone_and_batched(parts, [n, 399], reference=False)
        last_block = (piece.shape[0] - 1) // 50 * 50  # 50 for both (76 and 100 real frames)
        assert (piece[:last_block] - alone[:last_block]).abs().max() < FP64_TOL, n
        assert (piece[last_block:] - alone[last_block:]).abs().max() > 1e-3, n


def test_full_attention_pieces_depend_on_their_batch(pairs):
    """With full attention every shorter piece sees padded frames, whole seconds too."""
    reference, parts = pairs["full", torch.float64]
    for model, is_reference in ((parts, False), (reference, True)):
        (whole, whole_alone), (longest, longest_alone) = encode_alone_and_batched(
            model, [100, 399], reference=is_reference, attention="full"
        )
        assert (whole - whole_alone).abs().max() > 1e-3
        assert (longest - longest_alone).abs().max() < FP64_TOL


def test_block_mask_matters(pairs):
    """Past one second, the block-causal mask changes the output (guards the parity tests against a
    mask that does nothing): the first block no longer sees the later ones."""
    features, lens = pieces([399], torch.float64)
    with torch.no_grad():
        block = pairs["block", torch.float64][1].audio(features, lens)
        full = pairs["full", torch.float64][1].audio(features, lens)
    assert (block[0, :50] - full[0, :50]).abs().max() > 1e-3


def test_padding_content_and_width_do_not_matter(pairs):
    """Frames past a piece's length read as 0.0 and the call is as wide as its longest piece, so junk
    in the padding or extra padded columns change nothing."""
    _, parts = pairs["block", torch.float64]
    features, lens = pieces([37, 151], torch.float64)
    wide = torch.full((2, 80, 400), 1e3, dtype=torch.float64)
    for b, n in enumerate(lens.tolist()):
        wide[b, :, :n] = features[b, :, :n]
    with torch.no_grad():
        assert torch.equal(parts(wide, lens), parts(features, lens))


def test_token_counts_match_the_formula_and_the_reference(pairs):
    lengths = torch.arange(1, 3001)
    formula = ((lengths - 1) // 2 + 1 - 2) // 2 + 1  # ARCHITECTURES.md G §3.4
    assert torch.equal(whisper_token_counts(lengths), formula)
    reference, _ = pairs["block", torch.float32]
    assert torch.equal(whisper_token_counts(lengths), reference.token_counts(lengths).long())
    counts = [whisper_token_counts(n) for n in (1, 2, 3, 37, 100, 151, 250, 399, 3000)]
    assert counts == [0, 0, 1, 9, 25, 38, 62, 100, 750]
    assert whisper_token_counts(torch.tensor([7]), pool_step=3).tolist() == [(4 - 3) // 3 + 1]
    features, lens = pieces(CASES["batch_padded"])
    seen = reference(features, lens)
    assert [len(p) for p in seen["pieces"]] == whisper_token_counts(lens).tolist()
    assert seen["pooled"].shape[1] == ((max(CASES["batch_padded"]) - 1) // 2 + 1) // 2  # floor pooling


def test_explicit_pattern_matches_fused(pairs):
    reference, parts = pairs["block", torch.float32]
    features, lens = pieces([399, 151, 37, 100])
    with torch.no_grad():
        fused = parts(features, lens)
        explicit, cache = parts.run_with_cache(features, lens, names_filter=lambda name: name.endswith("hook_pattern"))
    assert (explicit - fused).abs().max() < 1e-6
    hidden = attention_mask_4d(lens, features.shape[2], 1.0, torch.float32) == float("-inf")  # [piece, 1, q, k]
    for layer in range(TINY["encoder_layers"]):
        pattern = cache[f"audio.blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (4, 4, 200, 200)
        assert (pattern.sum(-1) - 1).abs().max() < 1e-5
        assert bool((pattern.masked_select(hidden) == 0).all())
        assert bool((pattern.masked_select(~hidden.expand_as(pattern)) > 0).all())


def test_hooks_fire_with_documented_shapes(pairs):
    _, parts = pairs["block", torch.float32]
    features, lens = pieces([250, 37])  # 125 and 19 frames at 50 Hz; 62 + 9 tokens
    with torch.no_grad():
        out, cache = parts.run_with_cache(features, lens)
    expected = {
        "audio.hook_conv1": (2, 250, 32),
        "audio.hook_conv2": (2, 125, 32),
        "audio.hook_embed": (2, 125, 32),
        "audio.blocks.0.hook_resid_pre": (2, 125, 32),
        "audio.blocks.0.ln1.hook_normalized": (2, 125, 32),
        "audio.blocks.0.attn.hook_q": (2, 125, 4, 8),
        "audio.blocks.0.attn.hook_attn_scores": (2, 4, 125, 125),
        "audio.blocks.0.attn.hook_pattern": (2, 4, 125, 125),
        "audio.blocks.0.attn.hook_z": (2, 125, 4, 8),
        "audio.blocks.1.mlp.hook_pre": (2, 125, 128),
        "audio.blocks.1.hook_resid_post": (2, 125, 32),
        "audio.hook_out": (2, 125, 32),
        "audio_proj.hook_pre": (2, 125, 48),
        "audio_proj.hook_post": (2, 125, 48),
        "audio_proj.hook_pre_pool": (2, 125, 48),
        "audio_proj.hook_out": (1, 71, 48),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert {k for k in parts.hook_dict if not k.endswith("hook_result")} == set(cache.keys())
    assert torch.equal(cache["audio_proj.hook_out"], out)
    assert torch.equal(
        cache["audio.hook_embed"], cache["audio.hook_conv2"] + parts.audio.embed_positions[:125]
    )
    assert torch.equal(cache["audio_proj.hook_post"], cache["audio_proj.hook_pre"].relu())
    # the first token of piece 2 is the mean of its first two frames
    pre_pool = cache["audio_proj.hook_pre_pool"]
    assert torch.allclose(out[0, 62], pre_pool[1, :2].mean(0), atol=1e-6)


def test_bfloat16_runs_in_bfloat16(pairs):
    reference, parts = pairs["block", torch.float32]
    features, lens = pieces([151, 37])
    with torch.no_grad():
        out = copy.deepcopy(parts).bfloat16()(features, lens)
        expected = torch.cat(reference(features, lens)["pieces"])[None]
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.1 * expected.abs().max()


def test_bad_inputs_raise(pairs):
    _, parts = pairs["block", torch.float32]
    tower, projector = parts.audio, parts.audio_proj
    with pytest.raises(ValueError, match=r"longer than 3000 mel frames.*Split the audio into pieces of at most 30 s"):
        tower(torch.zeros(1, 80, 3001), torch.tensor([3001]))
    with pytest.raises(ValueError, match=r"n_mels=80.*\(1, 128, 100\)"):
        tower(torch.zeros(1, 128, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match=r"feature_lens must be \[n_piece\] = \[2\].*\(1,\)"):
        tower(torch.zeros(2, 80, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match=r"between 1 and the 100 frames.*\[0, 100\]"):
        tower(torch.zeros(2, 80, 100), torch.tensor([0, 100]))
    with pytest.raises(ValueError, match=r"between 1 and the 100 frames.*\[101\]"):
        tower(torch.zeros(1, 80, 100), torch.tensor([101]))
    with pytest.raises(ValueError, match=r"integer mel-frame counts.*float"):
        tower(torch.zeros(1, 80, 100), torch.tensor([100.0]))
    with pytest.raises(ValueError, match=r"no piece"):
        tower(torch.zeros(0, 80, 100), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match=r"d_model=32.*\(1, 50, 16\)"):
        projector(torch.zeros(1, 50, 16), torch.tensor([100]))
    with pytest.raises(ValueError, match=r"between 1 and the 100 frames.*\[101\]"):
        projector(torch.zeros(1, 50, 32), torch.tensor([101]))
    with pytest.raises(ValueError, match=r"encoder_ffn_dim // 4 = 16.*d_model=32"):
        PooledAudioProjector(WhisperEncoderConfig(d_model=32, n_heads=4, d_mlp=64))
    with pytest.raises(ValueError, match=r"d_model=30 must be a multiple of n_heads=4"):
        WhisperEncoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match=r"block_frames must be a positive int; got 0"):
        WhisperEncoderConfig(block_frames=0)
    with pytest.raises(ValueError, match=r"unknown keys \['layers'\]"):
        WhisperEncoderConfig.from_dict({"layers": 2})
    with pytest.raises(TypeError, match=r"audio_config must be a dict"):
        WhisperEncoderConfig.from_hf(None)


def test_config_from_the_released_config():
    config = json.loads((MINICPM_O / "config.json").read_text())
    cfg = WhisperEncoderConfig.from_hf(
        config["audio_config"], chunk_length_s=config["audio_chunk_length"], out_dim=config["hidden_size"],
        pool_step=config["audio_pool_step"],
    )
    assert cfg == WhisperEncoderConfig()  # our defaults are the released model's
    assert (cfg.block_frames, cfg.max_frames, cfg.d_head, cfg.n_mels) == (50, 3000, 64, 80)
    assert WhisperEncoderConfig.from_hf(config["audio_config"], chunk_length_s=-1).block_frames is None
    from transformers import WhisperConfig

    defaults = WhisperEncoderConfig.from_hf({})  # transformers' defaults for every missing key
    hf = WhisperConfig()
    assert (defaults.d_model, defaults.n_layers, defaults.n_heads, defaults.d_mlp, defaults.n_mels,
            defaults.max_source_positions, defaults.act) == (
        hf.d_model, hf.encoder_layers, hf.encoder_attention_heads, hf.encoder_ffn_dim, hf.num_mel_bins,
        hf.max_source_positions, hf.activation_function)


def test_every_released_tensor_lands_on_a_parameter_of_its_shape():
    """With the released config (meta device): the reference's ``apm.*`` (367 tensors, 307,216,384
    parameters) and ``audio_projection_layer.*`` (4 tensors, 16,522,240) map onto our parameters with
    the right shapes, and together with the implicit zeros they fill every row of every parameter."""
    config = json.loads((MINICPM_O / "config.json").read_text())
    cfg = WhisperEncoderConfig.from_hf(config["audio_config"], out_dim=config["hidden_size"])
    with torch.device("meta"):
        parts = Parts(WhisperEncoderTower(cfg), PooledAudioProjector(cfg))
        reference = MiniCPMAudioReference(config["audio_config"], out_dim=config["hidden_size"])
    shapes = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    for part, (tensors, numel) in {"apm.": (367, 307_216_384), "audio_projection_layer.": (4, 16_522_240)}.items():
        mine = {k: s for k, s in shapes.items() if k.startswith(part)}
        assert len(mine) == tensors, part
        assert sum(torch.Size(s).numel() for s in mine.values()) == numel, part
    assert len(shapes) == 367 + 4
    params = dict(parts.named_parameters())
    assert sum(p.numel() for p in params.values()) == 307_216_384 + 16_522_240 + cfg.n_layers * cfg.d_model
    rows = {k: 0 for k in params}
    for name, shape in shapes.items():
        targets = targets_of(name, cfg)
        assert targets, name
        for t in targets:
            param = params[t.param]
            expected = param.shape if t.rows is None else (t.rows[1] - t.rows[0], *param.shape[1:])
            assert shape == tuple(expected), name
            rows[t.param] += expected[0]
    for t in whisper_encoder_implicit_zeros(cfg):
        rows[t.param] += t.rows[1] - t.rows[0]
    assert {k: n for k, n in rows.items() if n != params[k].shape[0]} == {}
    assert whisper_encoder_targets("layers.24.fc1.weight", cfg) is None
    assert whisper_encoder_targets("layers.0.self_attn.k_proj.bias", cfg) is None
    assert whisper_encoder_targets("apm.conv1.weight", cfg) is None
    assert pooled_projector_targets("relu.weight") is None


@pytest.mark.parametrize("module", [whisper_encoder_module, whisper_encoder_conversion], ids=["tower", "conversion"])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
