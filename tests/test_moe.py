"""Qwen3-MoE's LLM pieces against transformers' Qwen3-Omni thinker: the sparse MoE block (every
expert path, routing exactly), the interleaved M-RoPE angles (fractional positions too), and the
whole decoder layer (per-head q/k RMSNorm, rotary, MoE), plus routing hooks, patching and gradients."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from hooked_avllm.components import Attention, RMSNorm, SparseMoE, TransformerBlock
from hooked_avllm.components.attention import LayerKVCache
from hooked_avllm.components.moe import grouped_mm_supported
from hooked_avllm.components.rotary import (
    rotary_1d,
    rotary_mrope,
    rotary_mrope_interleaved,
)

D_MODEL, D_EXPERT, N_EXPERTS = 32, 16, 8
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _cpu_grouped_mm_runs() -> bool:
    w = torch.zeros(N_EXPERTS, 2 * D_EXPERT, D_MODEL)
    return grouped_mm_supported(torch.zeros(4, D_MODEL), w, torch.zeros(N_EXPERTS, D_MODEL, D_EXPERT))


PATHS = ["sorted", "gather"] + (["grouped_mm"] if _cpu_grouped_mm_runs() else [])


def text_config(top_k: int = 2, norm_topk_prob: bool = True, **overrides):
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeTextConfig,
    )

    settings = dict(
        hidden_size=D_MODEL, moe_intermediate_size=D_EXPERT, num_experts=N_EXPERTS, num_experts_per_tok=top_k,
        norm_topk_prob=norm_topk_prob, num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1], "mrope_interleaved": True},
    )
    config = Qwen3OmniMoeTextConfig(**{**settings, **overrides})
    config._experts_implementation, config._attn_implementation = "eager", "eager"
    return config


def randomize_(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.3 * noise)


def moe_pair(top_k: int = 2, norm_topk_prob: bool = True, seed: int = 0, dtype=torch.float32):
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeThinkerTextSparseMoeBlock,
    )

    reference = Qwen3OmniMoeThinkerTextSparseMoeBlock(text_config(top_k, norm_topk_prob))
    randomize_(reference, seed)
    ours = SparseMoE(D_MODEL, D_EXPERT, N_EXPERTS, top_k, norm_topk_prob)
    copy_moe_(ours, reference)
    return reference.to(dtype), ours.to(dtype)


def copy_moe_(ours: SparseMoE, reference) -> None:
    with torch.no_grad():
        ours.gate.weight.copy_(reference.gate.weight)
        ours.gate_up.copy_(reference.experts.gate_up_proj)
        ours.down.copy_(reference.experts.down_proj)


@contextmanager
def hooks(module, **fns):
    """Attach ``fn(tensor, hook)`` to ``module.<name>`` for the block's duration."""
    points = [getattr(module, name) for name in fns]
    for point, fn in zip(points, fns.values()):
        point.add_hook(fn)
    try:
        yield
    finally:
        for point in points:
            point.remove_hooks()


def capture(module, x, *names, **forward_kwargs):
    seen = {}
    with hooks(module, **{n: (lambda t, hook, n=n: seen.__setitem__(n, t.detach().clone())) for n in names}):
        out = module(x, **forward_kwargs)
    return out, seen


def dense_expert(moe: SparseMoE, expert: int, x: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, moe.gate_up[expert]).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, moe.down[expert])


# ---------------------------------------------------------------- the MoE block against the reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("top_k,norm_topk_prob", [(2, True), (3, True), (2, False), (3, False)])
def test_moe_matches_reference_on_every_path(top_k, norm_topk_prob, dtype):
    reference, ours = moe_pair(top_k, norm_topk_prob, seed=top_k, dtype=dtype)
    for shape in ((2, 7), (1, 1)):  # a prefill batch and a single-token decode step
        x = torch.randn(*shape, D_MODEL, generator=torch.Generator().manual_seed(1), dtype=dtype)
        with torch.no_grad():
            want = reference(x)
            _, ref_weights, ref_indices = reference.gate(x.reshape(-1, D_MODEL))
        for path in PATHS + ["auto"]:
            if path == "grouped_mm" and dtype == torch.float64:
                continue  # the CPU kernel takes float32 / bf16 / fp16 only
            ours.moe_path = path
            with torch.no_grad():
                got, seen = capture(ours, x, "hook_expert_indices", "hook_routing_weights")
            error = (got - want).abs().max().item()
            assert error <= TOL[dtype], (path, shape, error)
            assert torch.equal(seen["hook_expert_indices"].reshape(-1, top_k), ref_indices), path
            assert torch.equal(seen["hook_routing_weights"].reshape(-1, top_k), ref_weights), path


@pytest.mark.parametrize("path", PATHS)
def test_expert_receiving_no_tokens_and_all_tokens_to_one_expert(path):
    dtype = torch.float32 if path == "grouped_mm" else torch.float64  # the CPU kernel has no float64
    x = torch.rand(2, 7, D_MODEL, generator=torch.Generator().manual_seed(2), dtype=dtype) + 0.5  # all positive
    for top_k, expert, sign in ((2, 3, -1.0), (1, 0, 1.0)):
        reference, ours = moe_pair(top_k, seed=4, dtype=dtype)
        with torch.no_grad():  # a row of +-10: that expert's logit dominates (or never wins) for positive inputs
            for module in (reference.gate.weight, ours.gate.weight):
                module[expert] = sign * 10.0
        ours.moe_path = path
        with torch.no_grad():
            got, seen = capture(ours, x, "hook_expert_indices")
            want = reference(x)
        chosen = seen["hook_expert_indices"]
        if sign < 0:
            assert not (chosen == expert).any()  # expert 3 receives nothing
        else:
            assert (chosen == expert).all()  # every token to expert 0, the other seven receive nothing
        assert (got - want).abs().max() <= TOL[dtype]


def test_grouped_mm_on_this_cpu():
    """Whether torch._grouped_mm runs here is a fact of the installed torch: record it. CPU torch
    2.8+ has float32/bf16 kernels (16-byte aligned rows), never float64."""
    x64 = torch.zeros(4, D_MODEL, dtype=torch.float64)
    assert not grouped_mm_supported(x64, torch.zeros(2, 8, D_MODEL, dtype=torch.float64))
    _, ours = moe_pair()
    ours.moe_path = "grouped_mm"
    if "grouped_mm" not in PATHS:  # an older torch: forcing the kernel says so instead of falling back silently
        with pytest.raises(ValueError, match="moe_path='grouped_mm'"):
            ours(torch.zeros(1, 2, D_MODEL))
        return
    assert not grouped_mm_supported(torch.zeros(4, 6), torch.zeros(2, 8, 6))  # 24-byte rows
    with pytest.raises(ValueError, match="moe_path='grouped_mm'"):
        ours.double()(torch.zeros(1, 2, D_MODEL, dtype=torch.float64))


# ---------------------------------------------------------------- hooks, patching, gradients


def test_hooks_fire_with_documented_shapes():
    _, ours = moe_pair(top_k=3)
    ours.use_expert_outputs = True
    x = torch.randn(2, 5, D_MODEL)
    names = ["hook_router_logits", "hook_expert_weights", "hook_expert_indices", "hook_routing_weights", "hook_expert_out"]
    for path in PATHS:
        ours.moe_path = path
        with torch.no_grad():
            out, seen = capture(ours, x, *names)
        assert {n: tuple(t.shape) for n, t in seen.items()} == {
            "hook_router_logits": (2, 5, N_EXPERTS), "hook_expert_weights": (2, 5, N_EXPERTS),
            "hook_expert_indices": (2, 5, 3), "hook_routing_weights": (2, 5, 3), "hook_expert_out": (2, 5, 3, D_MODEL),
        }
        assert seen["hook_expert_weights"].dtype == torch.float32
        assert torch.allclose(seen["hook_expert_weights"].sum(-1), torch.ones(2, 5))  # softmax over all experts
        # the weighted sum of the per-expert outputs is the block's output; each is its expert run densely
        mixed = (seen["hook_expert_out"] * seen["hook_routing_weights"][..., None]).sum(-2)
        assert torch.allclose(mixed, out, atol=1e-6)
        one = seen["hook_expert_indices"][1, 4, 2].item()
        assert torch.allclose(seen["hook_expert_out"][1, 4, 2], dense_expert(ours, one, x[1, 4]), atol=1e-5)
    ours.use_expert_outputs = False
    with torch.no_grad():
        _, seen = capture(ours, x, "hook_expert_out")
    assert seen == {}  # off by default


@pytest.mark.parametrize("path", PATHS)
def test_routing_edits_through_hooks_change_the_computation(path):
    dtype = torch.float32 if path == "grouped_mm" else torch.float64
    tol = TOL[dtype]
    _, ours = moe_pair(top_k=2, dtype=dtype)
    ours.moe_path = path
    x = torch.randn(2, 6, D_MODEL, dtype=dtype)
    with torch.no_grad():
        plain = ours(x)
        # every slot of every token to expert 0: expert 0 run densely, times the weights' sum (1 in float32)
        with hooks(ours, hook_expert_indices=lambda t, hook: torch.zeros_like(t)):
            forced, seen = capture(ours, x, "hook_routing_weights")
        assert (forced - dense_expert(ours, 0, x) * seen["hook_routing_weights"].sum(-1, keepdim=True)).abs().max() <= tol
        assert (forced - dense_expert(ours, 0, x)).abs().max() <= 1e-5
        assert (forced - plain).abs().max() > 1e-3
        # ablate the second slot: only the first choice, with its weight
        ours.use_expert_outputs = True
        _, seen = capture(ours, x, "hook_expert_out", "hook_routing_weights")
        with hooks(ours, hook_routing_weights=lambda t, hook: t * torch.tensor([1.0, 0.0], dtype=t.dtype)):
            first_only = ours(x)
        ours.use_expert_outputs = False
        assert (first_only - seen["hook_expert_out"][..., 0, :] * seen["hook_routing_weights"][..., :1]).abs().max() <= tol
        # TransformerLens's hook_expert_weights is before the top-k: boosting expert 5 re-routes to it
        boost = lambda t, hook: t + 10.0 * F.one_hot(torch.tensor(5), N_EXPERTS).to(t.dtype)
        with hooks(ours, hook_expert_weights=boost):
            _, seen = capture(ours, x, "hook_expert_indices")
        assert (seen["hook_expert_indices"][..., 0] == 5).all()
        # a bad edit names the hook
        with hooks(ours, hook_expert_indices=lambda t, hook: t + N_EXPERTS):
            with pytest.raises(ValueError, match="hook_expert_indices"):
                ours(x)


@pytest.mark.parametrize("path", PATHS)
def test_gradients_reach_router_and_experts_as_in_reference(path):
    reference, ours = moe_pair(top_k=2, dtype=torch.float32)
    ours.moe_path = path
    x = torch.randn(2, 7, D_MODEL, generator=torch.Generator().manual_seed(3))
    probe = torch.randn(2, 7, D_MODEL, generator=torch.Generator().manual_seed(4))
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    (reference(x_ref) * probe).sum().backward()
    (ours(x_ours) * probe).sum().backward()
    pairs = [
        (ours.gate.weight.grad, reference.gate.weight.grad),
        (ours.gate_up.grad, reference.experts.gate_up_proj.grad),
        (ours.down.grad, reference.experts.down_proj.grad),
        (x_ours.grad, x_ref.grad),
    ]
    for got, want in pairs:
        assert got is not None and got.abs().max() > 0
        assert (got - want).abs().max() <= 1e-5 * (1 + want.abs().max())


def test_transformer_lens_views_and_bad_arguments():
    _, ours = moe_pair(top_k=2)
    x = torch.randn(3, D_MODEL)
    assert torch.allclose(x @ ours.W_gate, ours.gate(x))
    e = 5
    pre, pre_linear = F.linear(x, ours.gate_up[e]).chunk(2, dim=-1)
    assert torch.allclose(x @ ours.W_gate_expert[e], pre) and torch.allclose(x @ ours.W_in[e], pre_linear)
    assert torch.allclose((F.silu(pre) * pre_linear) @ ours.W_out[e], dense_expert(ours, e, x), atol=1e-6)
    assert ours.W_in.shape == (N_EXPERTS, D_MODEL, D_EXPERT) and ours.W_out.shape == (N_EXPERTS, D_EXPERT, D_MODEL)
    with pytest.raises(ValueError, match="top_k=9"):
        SparseMoE(D_MODEL, D_EXPERT, N_EXPERTS, top_k=9)
    with pytest.raises(ValueError, match="d_expert=0"):
        SparseMoE(D_MODEL, 0, N_EXPERTS, top_k=2)
    with pytest.raises(ValueError, match="x has shape"):
        ours(torch.zeros(2, 3, D_MODEL + 1))
    ours.moe_path = "fast"
    with pytest.raises(ValueError, match="moe_path='fast'"):
        ours(torch.zeros(1, 2, D_MODEL))


# ---------------------------------------------------------------- rotary and the decoder layer


@pytest.mark.parametrize("d_head,sections", [(8, (2, 1, 1)), (128, (24, 20, 20))])
def test_interleaved_mrope_equals_reference_with_fractional_positions(d_head, sections):
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeThinkerTextRotaryEmbedding,
    )

    config = text_config(head_dim=d_head)
    config.rope_parameters["mrope_section"] = list(sections)
    rope = Qwen3OmniMoeThinkerTextRotaryEmbedding(config)
    g = torch.Generator().manual_seed(0)
    positions = torch.stack([
        torch.arange(9.0).expand(2, 9) * 2.08,  # fractional temporal positions (t * second_per_grid * 13 style)
        torch.randint(0, 30, (2, 9), generator=g).double(),
        torch.rand(2, 9, generator=g).double() * 40,
    ])
    for pos in (positions, positions.round().long()):
        cos, sin = rope(torch.zeros(1, dtype=torch.float32), pos)
        ours = rotary_mrope_interleaved(pos, d_head, 1e6, sections)
        assert torch.equal(ours.cos, cos) and torch.equal(ours.sin, sin)
    # the rule itself: frequency f follows H when f % 3 == 1 and f < 3 * H, W when f % 3 == 2 and f < 3 * W, else T
    f = torch.arange(d_head // 2)
    rule = torch.where((f % 3 == 1) & (f < 3 * sections[1]), 1, torch.where((f % 3 == 2) & (f < 3 * sections[2]), 2, 0))
    for row in range(3):
        unit = torch.zeros(3, 1, 1)
        unit[row] = 1.0  # position 1 on this row only: the angle is nonzero exactly where the row drives it
        assert torch.equal(rotary_mrope_interleaved(unit, d_head, 1e6, sections).sin[0, 0, : d_head // 2] != 0, rule == row)
    with pytest.raises(ValueError, match="sections="):
        rotary_mrope_interleaved(positions, d_head, 1e6, (1, 1, 1))


def test_float_positions_are_not_truncated():
    half = torch.tensor([[0.5, 1.5]], dtype=torch.float64)
    inv_freq = 1.0 / (1e4 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    assert torch.allclose(rotary_1d(half, 8, 1e4).sin[0, :, :4], (half[0, :, None].float() * inv_freq).sin())
    assert not torch.allclose(rotary_1d(half, 8, 1e4).cos, rotary_1d(half.floor(), 8, 1e4).cos)
    assert torch.equal(rotary_mrope(half.expand(3, 1, 2), 8, 1e4, (2, 1, 1)).cos, rotary_1d(half, 8, 1e4).cos)


def layer_pair(seed: int = 0):
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeThinkerTextDecoderLayer,
    )

    config = text_config(top_k=2)
    reference = Qwen3OmniMoeThinkerTextDecoderLayer(config, layer_idx=0).eval()
    randomize_(reference, seed)
    eps = config.rms_norm_eps
    ours = TransformerBlock(
        RMSNorm(D_MODEL, eps),
        Attention(D_MODEL, 4, 2, 8, qkv_bias=False, qk_norm_eps=eps),
        RMSNorm(D_MODEL, eps),
        SparseMoE(D_MODEL, D_EXPERT, N_EXPERTS, top_k=2),
    )
    attn = reference.self_attn
    with torch.no_grad():
        ours.ln1.w.copy_(reference.input_layernorm.weight)
        ours.ln2.w.copy_(reference.post_attention_layernorm.weight)
        ours.attn.qkv.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        ours.attn.out.weight.copy_(attn.o_proj.weight)
        ours.attn.q_norm.w.copy_(attn.q_norm.weight)
        ours.attn.k_norm.w.copy_(attn.k_norm.weight)
    copy_moe_(ours.mlp, reference.mlp)
    return config, reference, ours


def test_decoder_layer_matches_reference_sdpa_explicit_and_kv_cache():
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeThinkerTextRotaryEmbedding,
    )

    config, reference, ours = layer_pair()
    g = torch.Generator().manual_seed(5)
    batch, n_pos = 2, 7
    x = torch.randn(batch, n_pos, D_MODEL, generator=g)
    positions = torch.stack([torch.arange(n_pos) * 1.3, torch.arange(n_pos) % 3, torch.arange(n_pos) // 2]).double()
    positions = positions[:, None].expand(3, batch, n_pos)
    cos, sin = Qwen3OmniMoeThinkerTextRotaryEmbedding(config)(x, positions)
    causal = torch.full((n_pos, n_pos), torch.finfo(x.dtype).min).triu(1)[None, None]
    rotary = rotary_mrope_interleaved(positions, 8, 1e6, (2, 1, 1))
    with torch.no_grad():
        want = reference(x, attention_mask=causal, position_embeddings=(cos, sin))
        fused = ours(x, rotary=rotary, causal=True)
        ours.attn.force_explicit = True
        explicit = ours(x, rotary=rotary, causal=True)
        ours.attn.force_explicit = False
        # prefill 4 positions, then decode 3 one at a time: keys are cached after k_norm and rotary
        cache = LayerKVCache()
        steps = [ours(x[:, :4], rotary=rotary.select(torch.arange(4)), causal=True, kv_cache=cache)]
        for p in range(4, n_pos):
            steps.append(ours(x[:, p : p + 1], rotary=rotary.select(torch.tensor([p])), causal=True, kv_cache=cache))
        decoded = torch.cat(steps, dim=1)
    for name, got in (("sdpa", fused), ("explicit", explicit), ("kv_cache", decoded)):
        error = (got - want).abs().max().item()
        assert error <= 1e-5, (name, error)


def test_qk_norm_hooks_sit_as_in_transformer_lens():
    """hook_q/hook_k: the raw projection (before q_norm/k_norm, as TransformerLens's Qwen3);
    hook_rot_q: after norm and rotary."""
    _, _, ours = layer_pair()
    attn = ours.attn
    x = torch.randn(1, 5, D_MODEL)
    rotary = rotary_mrope_interleaved(torch.arange(5.0).expand(3, 1, 5), 8, 1e6, (2, 1, 1))
    with torch.no_grad():
        _, seen = capture(attn, x, "hook_q", "hook_k", "hook_rot_q", "hook_rot_k", rotary=rotary)
        _, normed = capture(attn.q_norm, seen["hook_q"], "hook_normalized")
        q, k, _ = attn.qkv(x).split(attn.split_sizes, dim=-1)
    assert torch.equal(seen["hook_q"], q.view(1, 5, 4, 8)) and torch.equal(seen["hook_k"], k.view(1, 5, 2, 8))
    assert torch.allclose(seen["hook_rot_q"], rotary.apply(normed["hook_normalized"]))
    assert torch.allclose(seen["hook_rot_k"], rotary.apply(attn.k_norm(seen["hook_k"])))
    plain = Attention(D_MODEL, 4, 2, 8, qkv_bias=False)
    assert not hasattr(plain, "q_norm") and set(plain.state_dict()) == {"qkv.weight", "out.weight"}
    assert {"q_norm.w", "k_norm.w"} <= set(attn.state_dict())
