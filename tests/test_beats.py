"""The BEATs tower against an independent implementation: ESPnet's vendored BEATs
(``espnet2.asr.encoder.beats_encoder.BeatsEncoder``, adapted from microsoft/unilm), imported with
torchaudio stood in during the import only (``tests/reference_shims.py``). The reference is fed
fbank features directly (its ``preprocess`` is replaced by the bare normalisation, so torchaudio is
never called, and its repeat-short-inputs workaround is off), so both sides see the same features.

Tiny random reference models (every parameter random: norms, biases, ``grep_a``, ``weight_g``)
are saved in the official ``{"cfg", "model", "label_dict"}`` format, loaded through
``load_official_beats``, and compared stage by stage in float32: the patch embedding, the
projection, the convolutional positions, the blocks' input, every block's output and the final
output, on odd frame counts and on a padded batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens.hook_points import HookPoint

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule

from hooked_avllm.components import relative_position_buckets
from hooked_avllm.towers.beats import BEATsConfig, BEATsTower, token_padding_mask
from weights_conversion.beats import (
    beats_targets,
    load_official_beats,
    read_official_beats,
)
from weights_conversion.targets import Target

TOLERANCE = 1e-4  # float32, absolute

pytestmark = [  # the reference's own deprecation warnings
    pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*torch.cuda.amp.autocast.*:FutureWarning"),
]

# official cfg names, as a checkpoint stores them (plus keys that do not shape the forward pass)
ITER3_LIKE = dict(
    encoder_layers=3, encoder_embed_dim=64, encoder_ffn_embed_dim=96, encoder_attention_heads=4, embed_dim=32,
    input_patch_size=16, conv_bias=False, activation_fn="gelu", layer_norm_first=False, deep_norm=True,
    conv_pos=16, conv_pos_groups=4, relative_position_embedding=True, num_buckets=32, max_distance=64,
    gru_rel_pos=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
    dropout_input=0.0, layer_wise_gradient_decay_ratio=1.0, finetuned_model=True, predictor_class=7,
)
# pre-LN, no gate, no projection (embed_dim == d_model), a patch-conv bias and an odd position kernel
PRE_LN = dict(ITER3_LIKE, layer_norm_first=True, deep_norm=False, gru_rel_pos=False, embed_dim=64, conv_bias=True, conv_pos=15)
# no relative positions at all
NO_REL_POS = dict(ITER3_LIKE, relative_position_embedding=False, gru_rel_pos=False, encoder_layers=2)


class Root(HookedRootModule):
    """The tower under ``audio.``, as the model holds it, so hook names are the model's."""

    def __init__(self, tower: BEATsTower):
        super().__init__()
        self.audio = tower
        self.setup()

    def forward(self, fbank, padding_mask=None):
        return self.audio(fbank, padding_mask)


@pytest.fixture(scope="module")
def espnet_beats():
    try:
        from reference_shims import import_espnet_beats

        return import_espnet_beats()
    except ImportError as err:  # pragma: no cover - CI installs espnet with --no-deps
        pytest.fail(f"ESPnet's BEATs is the reference here and is not importable ({err}); pip install --no-deps espnet")


def random_reference(espnet_beats, cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    enc = espnet_beats.BeatsEncoder(input_size=1, beats_config=cfg).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():  # the shared relative bias appears once
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(("weight_g", "grep_a")):
                p.copy_(0.5 + torch.rand_like(p))
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
            elif p.ndim >= 2:
                p.normal_(0.0, 1 / math.sqrt(p[0].numel()))
            else:
                p.normal_(0.0, 0.2)
    enc.min_input_length_at_16khz = 0  # never repeat a short input
    enc.preprocess = lambda fbank: (fbank - 15.41663) / (2 * 6.55582)  # features in, no torchaudio
    return enc


def save_official(enc, cfg: dict, path, predictor_classes: int = 7):
    """The official checkpoint layout, with a fine-tuned model's classifier head and labels."""
    state = dict(enc.state_dict())
    state["predictor.weight"] = torch.randn(predictor_classes, cfg["encoder_embed_dim"])
    state["predictor.bias"] = torch.randn(predictor_classes)
    torch.save({"cfg": cfg, "model": state, "label_dict": {str(i): f"/m/{i:04d}" for i in range(predictor_classes)}}, path)
    return path


def reference_stages(enc, fbank, padding_mask=None) -> dict[str, torch.Tensor]:
    """The reference's intermediates, under our hook names (captured by forward hooks, cloned
    before the reference edits them in place)."""
    stages: dict[str, torch.Tensor] = {}
    handles = []

    def keep(module, name, view, pre=False):
        if pre:
            handles.append(module.register_forward_pre_hook(lambda m, args: stages.__setitem__(name, view(args[0]).clone())))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out: stages.__setitem__(name, view(out).clone())))

    keep(enc.patch_embedding, "audio.hook_patch_embed", lambda o: o.flatten(2).transpose(1, 2))
    keep(enc.post_extract_proj if enc.post_extract_proj is not None else enc.layer_norm, "audio.hook_patch_proj", lambda o: o)
    keep(enc.encoder.pos_conv, "audio.hook_conv_pos", lambda o: o.transpose(1, 2))
    keep(enc.encoder.layers[0], "audio.hook_embed", lambda x: x.transpose(0, 1), pre=True)
    for i, layer in enumerate(enc.encoder.layers):
        keep(layer, f"audio.blocks.{i}.hook_resid_post", lambda o: o[0].transpose(0, 1))
    try:
        with torch.no_grad():
            out, _ = enc.extract_features(fbank.clone(), None if padding_mask is None else padding_mask.clone())
    finally:
        for handle in handles:
            handle.remove()
    stages["audio.hook_out"] = out
    return stages


def fbank_like(batch: int, frames: int, seed: int) -> torch.Tensor:
    """Values in the range real fbank takes (about -16 to 25)."""
    g = torch.Generator().manual_seed(seed)
    return 10 + 5 * torch.randn(batch, frames, 128, generator=g)


@pytest.fixture(scope="module")
def iter3_pair(espnet_beats, tmp_path_factory):
    enc = random_reference(espnet_beats, ITER3_LIKE)
    path = save_official(enc, ITER3_LIKE, tmp_path_factory.mktemp("beats") / "BEATs_tiny.pt")
    return enc, load_official_beats(path).eval(), path


def compare_stages(enc, tower, fbank, padding_mask=None):
    ref = reference_stages(enc, fbank, padding_mask)
    with torch.no_grad():
        _, cache = Root(tower).run_with_cache(fbank, padding_mask)
        plain = tower(fbank, padding_mask)
    errors = {name: (cache[name] - value).abs().max().item() for name, value in ref.items()}
    errors["plain forward"] = (plain - ref["audio.hook_out"]).abs().max().item()
    assert len(errors) == 6 + tower.cfg.n_layers
    bad = {name: err for name, err in errors.items() if not err < TOLERANCE}
    assert not bad, bad


@pytest.mark.parametrize("frames", [37, 100, 163])
def test_every_stage_matches_espnet_beats(iter3_pair, frames):
    enc, tower, _ = iter3_pair
    compare_stages(enc, tower, fbank_like(2, frames, seed=frames), None)


def test_padded_batch_matches_espnet_beats(iter3_pair):
    enc, tower, _ = iter3_pair
    fbank = fbank_like(3, 100, seed=1)
    lengths = torch.tensor([100, 61, 40])
    padding = torch.arange(100)[None, :] >= lengths[:, None]  # True on padding frames
    compare_stages(enc, tower, fbank, padding)
    # the mask reaches the blocks: padded keys get no attention
    tokens = token_padding_mask(padding, 48)
    assert tokens.sum(1).tolist() == [0, 48 - 31, 48 - 20]
    with torch.no_grad():
        _, cache = Root(tower).run_with_cache(fbank, padding, names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = cache["audio.blocks.2.attn.hook_pattern"]
    assert pattern[1][..., tokens[1]].abs().max().item() == 0.0
    assert pattern[0].sum(-1).sub(1).abs().max().item() < 1e-5


@pytest.mark.parametrize("cfg", [PRE_LN, NO_REL_POS], ids=["pre_ln_ungated_no_proj", "no_relative_positions"])
def test_other_variants_match_espnet_beats(espnet_beats, tmp_path, cfg):
    enc = random_reference(espnet_beats, cfg, seed=3)
    tower = load_official_beats(save_official(enc, cfg, tmp_path / "variant.pt")).eval()
    compare_stages(enc, tower, fbank_like(2, 51, seed=5), None)
    padding = torch.arange(51)[None, :] >= torch.tensor([51, 33])[:, None]
    compare_stages(enc, tower, fbank_like(2, 51, seed=6), padding)


def test_an_all_false_mask_equals_no_mask(iter3_pair):
    """What VideoLLaMA2 passes: a [batch, frame, mel] mask of False."""
    _, tower, _ = iter3_pair
    fbank = fbank_like(2, 40, seed=2)
    with torch.no_grad():
        assert torch.equal(tower(fbank), tower(fbank, torch.zeros(2, 40, 128, dtype=torch.bool)))


def test_bucket_function_matches_the_reference(espnet_beats):
    for buckets, distance, n in ((320, 800, 1500), (32, 64, 200)):
        attn = espnet_beats.MultiheadAttention(16, 4, self_attention=True, has_relative_attention_bias=True,
                                               num_buckets=buckets, max_distance=distance)
        relative = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        expected = attn._relative_positions_bucket(relative, bidirectional=True)
        assert torch.equal(relative_position_buckets(n, n, buckets, distance), expected)


def test_hooks_fire_with_documented_shapes(iter3_pair):
    _, tower, _ = iter3_pair
    cfg = tower.cfg
    batch, frames, tokens, heads = 2, 37, 16, cfg.n_heads
    d, d_head = cfg.d_model, cfg.d_model // cfg.n_heads
    with torch.no_grad():
        _, cache = Root(tower).run_with_cache(fbank_like(batch, frames, seed=9))
    expected = {
        "audio.hook_fbank": (batch, frames, 128),
        "audio.hook_patch_embed": (batch, tokens, cfg.embed_dim),
        "audio.ln_patch.hook_normalized": (batch, tokens, cfg.embed_dim),
        "audio.hook_patch_proj": (batch, tokens, d),
        "audio.hook_conv_pos": (batch, tokens, d),
        "audio.ln_encoder.hook_normalized": (batch, tokens, d),
        "audio.hook_embed": (batch, tokens, d),
        "audio.hook_out": (batch, tokens, d),
    }
    for l in range(cfg.n_layers):
        for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post",
                     "ln1.hook_normalized", "ln2.hook_normalized"):
            expected[f"audio.blocks.{l}.{name}"] = (batch, tokens, d)
        expected[f"audio.blocks.{l}.ln1.hook_scale"] = (batch, tokens, 1)
        for name in ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_z"):
            expected[f"audio.blocks.{l}.attn.{name}"] = (batch, tokens, heads, d_head)
        for name in ("hook_attn_scores", "hook_pattern"):
            expected[f"audio.blocks.{l}.attn.{name}"] = (batch, heads, tokens, tokens)
        expected[f"audio.blocks.{l}.attn.hook_rel_pos_bias"] = (1, heads, tokens, tokens)
        expected[f"audio.blocks.{l}.attn.hook_rel_pos_gate"] = (batch, heads, tokens, 1)
        expected[f"audio.blocks.{l}.mlp.hook_pre"] = (batch, tokens, cfg.d_mlp)
        expected[f"audio.blocks.{l}.mlp.hook_post"] = (batch, tokens, cfg.d_mlp)
    shapes = {name: tuple(cache[name].shape) for name in expected}
    assert shapes == expected
    unused = {name for name, m in tower.named_modules() if isinstance(m, HookPoint)} - {n[len("audio."):] for n in cache.keys()}
    assert unused == {f"blocks.{l}.attn.hook_result" for l in range(cfg.n_layers)}  # only with use_attn_result
    # the stream: each block's output is the next block's input, the last one the tower's output
    for l in range(cfg.n_layers - 1):
        assert torch.equal(cache[f"audio.blocks.{l}.hook_resid_post"], cache[f"audio.blocks.{l + 1}.hook_resid_pre"])
    assert torch.equal(cache[f"audio.blocks.{cfg.n_layers - 1}.hook_resid_post"], cache["audio.hook_out"])
    assert torch.equal(cache["audio.blocks.0.hook_resid_mid"], cache["audio.blocks.0.ln1.hook_normalized"])
    # the shared bias is one tensor for every layer
    assert torch.equal(cache["audio.blocks.0.attn.hook_rel_pos_bias"], cache["audio.blocks.2.attn.hook_rel_pos_bias"])


def test_knockout_on_attn_scores_zeroes_those_keys(iter3_pair):
    _, tower, _ = iter3_pair
    root = Root(tower)
    fbank = fbank_like(2, 50, seed=4)  # 3 x 8 = 24 tokens
    knocked = [2, 5, 17]
    seen = {}

    def knock(scores, hook):
        scores = scores.clone()
        scores[..., knocked] = float("-inf")
        return scores

    def keep(pattern, hook):
        seen["pattern"] = pattern.detach().clone()

    with torch.no_grad():
        plain = root(fbank)
        out = root.run_with_hooks(fbank, fwd_hooks=[("audio.blocks.1.attn.hook_attn_scores", knock),
                                                    ("audio.blocks.1.attn.hook_pattern", keep)])
    pattern = seen["pattern"]
    assert pattern[..., knocked].abs().max().item() == 0.0
    assert pattern.sum(-1).sub(1).abs().max().item() < 1e-5
    assert (out - plain).abs().max().item() > 1e-3  # the knockout changed the output


def test_explicit_pattern_path_equals_fused_path(iter3_pair):
    _, tower, _ = iter3_pair
    root = Root(tower)
    fbank = fbank_like(2, 77, seed=8)
    padding = torch.arange(77)[None, :] >= torch.tensor([77, 50])[:, None]
    watch = [(f"audio.blocks.{l}.attn.hook_pattern", lambda pattern, hook: None) for l in range(tower.cfg.n_layers)]
    with torch.no_grad():
        for mask in (None, padding):
            fused = root(fbank, mask)
            explicit = root.run_with_hooks(fbank, mask, fwd_hooks=watch)
            assert (fused - explicit).abs().max().item() < 1e-5


def test_per_head_results_sum_to_the_attention_output(iter3_pair):
    _, tower, _ = iter3_pair
    fbank = fbank_like(2, 40, seed=13)
    with torch.no_grad():
        plain = tower(fbank)
        for block in tower.blocks:
            block.attn.use_attn_result = True
        try:
            _, cache = Root(tower).run_with_cache(fbank, names_filter=lambda n: n.endswith(("hook_result", "hook_out")))
        finally:
            for block in tower.blocks:
                block.attn.use_attn_result = False
    assert cache["audio.blocks.0.attn.hook_result"].shape == (2, 16, tower.cfg.n_heads, tower.cfg.d_model)
    assert (cache["audio.hook_out"] - plain).abs().max().item() < 1e-5


def test_the_fused_kernel_gets_a_dense_mask(iter3_pair, monkeypatch):
    """A gate-times-bias product in another memory layout sends SDPA to its slow math path on GPU
    (on an H200, ~5 ms per layer instead of ~0.3 ms for 8 clips of 1,496 tokens): the mask must
    arrive row-major, with or without padding."""
    _, tower, _ = iter3_pair
    seen = []
    original = torch.nn.functional.scaled_dot_product_attention

    def record(q, k, v, attn_mask=None, **kwargs):
        seen.append((tuple(attn_mask.shape), attn_mask.is_contiguous()))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", record)
    padding = torch.arange(50)[None, :] >= torch.tensor([50, 30])[:, None]
    with torch.no_grad():
        tower(fbank_like(2, 50, seed=14))
        tower(fbank_like(2, 50, seed=14), padding)
    assert seen == [((2, tower.cfg.n_heads, 24, 24), True)] * (2 * tower.cfg.n_layers)


def test_zeroing_the_bias_hook_equals_a_zero_bias_table(iter3_pair):
    """Patching ``hook_rel_pos_bias`` reaches the scores: zeroing it in every layer equals a model
    whose relative-bias table is zero."""
    _, tower, path = iter3_pair
    fbank = fbank_like(1, 64, seed=10)
    zero = [(f"audio.blocks.{l}.attn.hook_rel_pos_bias", lambda bias, hook: torch.zeros_like(bias))
            for l in range(tower.cfg.n_layers)]
    flat = load_official_beats(path).eval()
    with torch.no_grad():
        flat.rel_pos.embedding.weight.zero_()
        patched = Root(tower).run_with_hooks(fbank, fwd_hooks=zero)
        assert (patched - flat(fbank)).abs().max().item() < 1e-5
        assert (patched - tower(fbank)).abs().max().item() > 1e-3


def test_bfloat16_tracks_float32(iter3_pair):
    _, tower, path = iter3_pair
    fbank = fbank_like(2, 100, seed=11)
    low = load_official_beats(path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        high, out = tower(fbank), low(fbank)
    assert out.dtype == torch.bfloat16
    # a few bf16 roundings per layer on unit-scale (layer-normed) outputs
    assert (out.float() - high).abs().mean().item() < 0.05


def test_videollama2_plain_state_dict_loads(iter3_pair, tmp_path):
    """VideoLLaMA2's ``audio_tower.bin``: BEATs keys under ``model.audio_tower.``, no config; other
    keys of the file are ignored."""
    _, tower, path = iter3_pair
    cfg, state = read_official_beats(path)
    plain = {f"model.audio_tower.{k}": v for k, v in state.items()}
    plain["model.mm_projector_a.0.weight"] = torch.zeros(3, 3)  # not BEATs': ignored
    bin_path = tmp_path / "audio_tower.bin"
    torch.save(plain, bin_path)

    read_cfg, read_state = read_official_beats(bin_path)
    assert read_cfg == BEATsConfig()  # no stored config: VideoLLaMA2's code defaults
    assert set(read_state) == set(state)
    loaded = load_official_beats(bin_path, cfg=cfg).eval()
    fbank = fbank_like(1, 48, seed=12)
    with torch.no_grad():
        assert torch.equal(loaded(fbank), tower(fbank))
    # with the defaults the tiny tensors do not fit, and the error names the tensor
    with pytest.raises(ValueError, match=r"tensor post_extract_proj\.weight has shape \(64, 32\) but the config implies \(768, 512\).*pass cfg="):
        load_official_beats(bin_path)
    with pytest.raises(ValueError, match="prefix=''"):
        read_official_beats(bin_path, prefix="audio_tower.")
    assert set(read_official_beats(bin_path, prefix="model.")[1]) >= {"audio_tower.patch_embedding.weight"}


def test_refuses_files_that_are_not_beats_checkpoints(tmp_path, iter3_pair):
    _, _, path = iter3_pair
    not_a_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(ValueError, match="holds a Tensor, not a dict"):
        read_official_beats(not_a_dict)
    pickled = tmp_path / "object.pt"
    torch.save({"cfg": BEATsConfig(), "model": {}}, pickled)  # a class instance needs full unpickling
    with pytest.raises(ValueError, match=r"weights_only=True"):
        read_official_beats(pickled)

    ckpt = torch.load(path, weights_only=True)
    broken = dict(ckpt, model={k: v for k, v in ckpt["model"].items() if k != "encoder.layers.1.fc2.bias"})
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing tensors: .*blocks\.1\.mlp\.fc2\.bias"):
        load_official_beats(tmp_path / "missing.pt")
    extra = dict(ckpt, model=dict(ckpt["model"], **{"encoder.layers.7.fc1.weight": torch.zeros(1)}))
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected tensors encoder\.layers\.7\.fc1\.weight"):
        load_official_beats(tmp_path / "extra.pt")
    model = dict(ckpt["model"])
    model["encoder.layers.2.self_attn.relative_attention_bias.weight"] = torch.randn(32, 4)
    torch.save(dict(ckpt, model=model), tmp_path / "unshared.pt")
    with pytest.raises(ValueError, match="shares one relative position bias"):
        load_official_beats(tmp_path / "unshared.pt")


def test_official_names_map_to_ours():
    cfg = BEATsConfig()
    assert beats_targets("encoder.layers.3.self_attn.v_proj.bias", cfg, "audio.") == [
        Target("audio.blocks.3.attn.qkv.bias", rows=(1536, 2304))
    ]
    assert beats_targets("encoder.layers.0.self_attn.relative_attention_bias.weight", cfg, "audio.") == [
        Target("audio.rel_pos.embedding.weight")
    ]
    assert beats_targets("encoder.layers.5.self_attn.relative_attention_bias.weight", cfg) == []
    assert beats_targets("encoder.layers.5.self_attn.grep_a", cfg) == [Target("blocks.5.attn.gate_scale", shape=(12,))]
    assert beats_targets("encoder.layers.11.final_layer_norm.bias", cfg) == [Target("blocks.11.ln2.b")]
    assert beats_targets("encoder.pos_conv.0.weight_g", cfg) == [Target("pos_conv.weight_g")]
    assert beats_targets("predictor.bias", cfg) == []
    assert beats_targets("encoder.layers.12.fc1.weight", cfg) is None  # past the last layer
    assert beats_targets("model.layers.0.mlp.up_proj.weight", cfg) is None
    assert beats_targets("patch_embedding.bias", cfg) is None  # conv_bias False


def test_config_from_official_names():
    cfg = BEATsConfig.from_official(ITER3_LIKE)
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.embed_dim) == (3, 64, 96, 4, 32)
    assert (cfg.conv_pos, cfg.conv_pos_groups, cfg.num_buckets, cfg.max_distance) == (16, 4, 32, 64)
    assert cfg.deep_norm and cfg.gru_rel_pos and not cfg.layer_norm_first
    assert BEATsConfig.from_official({}) == BEATsConfig()
    assert math.isclose(BEATsConfig().residual_scale, 24**0.25)
    with pytest.raises(NotImplementedError, match="act"):
        BEATsConfig.from_official({"activation_fn": "glu"})
    with pytest.raises(ValueError, match="deep_norm and layer_norm_first"):
        BEATsConfig.from_official({"layer_norm_first": True})  # DeepNorm is on by default
    with pytest.raises(ValueError, match="input_patch_size"):
        BEATsConfig.from_official({"input_patch_size": -1})  # the official class's placeholder


def test_token_grid_counts(iter3_pair):
    cfg = BEATsConfig()
    assert cfg.token_grid(2998) == (187, 8)  # a 30-s clip: 1,496 tokens
    assert cfg.token_grid(16) == (1, 8)
    assert cfg.seconds_per_time_patch == 0.16
    with pytest.raises(ValueError, match="fewer than one patch"):
        cfg.token_grid(15)
    _, tower, _ = iter3_pair
    with torch.no_grad():
        for frames in (16, 31, 32, 95):
            time_patches, freq_patches = tower.cfg.token_grid(frames)
            assert tower(fbank_like(1, frames, seed=frames)).shape == (1, time_patches * freq_patches, tower.cfg.d_model)
    with pytest.raises(ValueError, match=r"fbank must be \[batch, frame, 128\]"):
        tower(torch.zeros(1, 128, 100))
    with pytest.raises(ValueError, match="padding_mask must be"):
        tower(torch.zeros(1, 100, 128), torch.zeros(1, 99, dtype=torch.bool))
