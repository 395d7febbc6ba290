"""Sparse mixture-of-experts feed-forward (Qwen3-MoE): a top-k router over gated (SwiGLU) experts.

Routing follows the reference exactly (same ops in the same order, so ties break the same way):
``logits = x @ gate.T``; ``probs = softmax(logits)`` in float32; the top-k of ``probs``;
renormalised to sum to 1 when ``norm_topk_prob``; cast to ``x``'s dtype.

Hook names are TransformerLens's MoE ones plus ours. ``hook_expert_weights`` has
TransformerLens's meaning, the softmax over *all* experts *before* the top-k, so an edit there
re-routes (TransformerLens fires it on the flattened ``[batch * pos, n_experts]``; ours keeps
``[batch, pos, n_experts]``). Editing ``hook_expert_indices`` or ``hook_routing_weights`` changes
which experts run and how their outputs are mixed.

The experts run batched; three paths compute the same thing (``moe_path`` picks one, ``"auto"``
by default). Measured on an H200 (torch 2.11) at Qwen3-Omni's size (d_model 2048, d_expert 768,
128 experts, top-8, bf16, eager, one layer's forward): gather 0.27-0.53 ms for 1-8 tokens;
grouped_mm 0.42-0.65 ms for 1-256 tokens, 0.76 ms for 1024, 1.56 ms for 4096; sorted 1.7-13 ms
(Python-bound: up to 128 experts' launches). In float32 grouped_mm takes 1.8-12.7 ms (9-4096
tokens), gather 0.24-0.92 ms (1-8 tokens).

* ``"gather"`` (decode): each (token, slot) pair gathers its expert's weights
  (``pairs * 3 * d_expert * d_model`` elements, so small batches only) and runs one ``bmm``; no
  host sync. Auto-chosen off the CPU when ``tokens * top_k <= gather_max_pairs`` (64).
* ``"grouped_mm"``: pairs sorted by expert, group ends from ``searchsorted`` (no host sync), two
  ``torch._grouped_mm`` calls. Auto-chosen otherwise wherever :func:`grouped_mm_supported` holds.
* ``"sorted"`` (portable; float64): pairs sorted by expert, one host sync for the counts, one
  matmul pair per expert that received tokens (the reference's loop, minus its masking).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.hook_state import watched
from hooked_avllm.components.fused import gated_product
from hooked_avllm.components.mlp import activation

MOE_PATHS = ("auto", "grouped_mm", "sorted", "gather")
_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_supported(x: Tensor, *weights: Tensor) -> bool:
    """Whether ``torch._grouped_mm`` can multiply rows of ``x`` by the stacked ``weights``.

    It needs the op (torch >= 2.8), one dtype and device for all operands, row byte strides that
    are multiples of 16 and 16-byte aligned weights. On CUDA: bf16 on compute capability 8.0+
    (9.x only before torch 2.9); fp16 and float32 too from torch 2.11 (a slower kernel there:
    about 4 ms against bf16's 0.5 ms on an H200, still twice as fast as the ``"sorted"`` loop).
    On CPU: float32, bf16 and fp16. Never float64.

    Example:
        >>> grouped_mm_supported(torch.zeros(4, 8, dtype=torch.float64), torch.zeros(2, 8, 8, dtype=torch.float64))
        False
    """
    if _GROUPED_MM is None or any(w.dtype != x.dtype or w.device != x.device for w in weights):
        return False
    if x.device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(x.device)
        version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
        if version < (2, 9):
            dtypes, fits = (torch.bfloat16,), major == 9
        else:
            dtypes = (torch.bfloat16,) if version < (2, 11) else (torch.bfloat16, torch.float16, torch.float32)
            fits = major >= 8
        if not fits or x.dtype not in dtypes:
            return False
    elif x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    size = x.element_size()
    widths = [x.shape[-1]] + [d for w in weights for d in w.shape[-2:]]  # every row stride the kernel sees
    return all((d * size) % 16 == 0 for d in widths) and all(w.data_ptr() % 16 == 0 for w in weights)


class SparseMoE(nn.Module):
    """Top-k routed mixture of gated experts (Qwen3-MoE's ``SparseMoeBlock``), fully hooked.

    Args:
        d_model: residual width.
        d_expert: hidden width of one expert (``moe_intermediate_size``).
        n_experts: number of experts.
        top_k: experts per token (``num_experts_per_tok``).
        norm_topk_prob: renormalise the chosen experts' probabilities to sum to 1.
        act: the experts' gate activation.

    Parameters (checkpoint names in brackets): ``gate`` the router, ``nn.Linear(d_model,
    n_experts, bias=False)`` [``mlp.gate.weight``]; ``gate_up`` ``[n_experts, 2 * d_expert,
    d_model]``, each expert's gate rows then up rows [``mlp.experts.gate_up_proj``]; ``down``
    ``[n_experts, d_model, d_expert]`` [``mlp.experts.down_proj``].

    Attributes:
        use_expert_outputs: fire ``hook_expert_out`` (default False). It adds no compute: the
            per-pair outputs exist anyway before they are mixed. The cost is memory when the hook
            is cached or kept for backward: ``top_k`` times the block's output per token
            (``[batch, pos, top_k, d_model]``).
        moe_path: ``"auto"`` | ``"grouped_mm"`` | ``"sorted"`` | ``"gather"`` (see the module doc).
        gather_max_pairs: ``"auto"`` takes the gather path up to this many (token, slot) pairs.

    Example:
        >>> moe = SparseMoE(d_model=16, d_expert=8, n_experts=4, top_k=2)
        >>> moe(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
        >>> x, outputs = torch.randn(1, 3, 16), []
        >>> for path in ("sorted", "gather"):
        ...     moe.moe_path = path
        ...     outputs.append(moe(x))
        >>> torch.allclose(*outputs, atol=1e-6)
        True
    """

    def __init__(
        self,
        d_model: int,
        d_expert: int,
        n_experts: int,
        top_k: int,
        norm_topk_prob: bool = True,
        act: str = "silu",
    ):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_expert", d_expert), ("n_experts", n_experts), ("top_k", top_k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if top_k > n_experts:
            raise ValueError(f"top_k={top_k} must not exceed n_experts={n_experts}; lower top_k")
        self.d_model, self.d_expert, self.n_experts, self.top_k = d_model, d_expert, n_experts, top_k
        self.norm_topk_prob = norm_topk_prob
        self.act_name = act
        self.act = activation(act)
        self.use_expert_outputs = False
        self.moe_path = "auto"
        self.gather_max_pairs = 64

        self.gate = nn.Linear(d_model, n_experts, bias=False)  # the router
        self.gate_up = nn.Parameter(torch.empty(n_experts, 2 * d_expert, d_model))  # rows: gate, then up
        self.down = nn.Parameter(torch.empty(n_experts, d_model, d_expert))
        nn.init.uniform_(self.gate_up, -(d_model**-0.5), d_model**-0.5)  # nn.Linear's default range
        nn.init.uniform_(self.down, -(d_expert**-0.5), d_expert**-0.5)

        self.hook_router_logits = HookPoint()  # [batch, pos, n_experts], x's dtype
        self.hook_expert_weights = HookPoint()  # [batch, pos, n_experts], float32 softmax over all experts, before top-k
        self.hook_expert_indices = HookPoint()  # [batch, pos, top_k], int64, chosen experts (descending probability)
        self.hook_routing_weights = HookPoint()  # [batch, pos, top_k], x's dtype, renormalised weights actually used
        self.hook_expert_out = HookPoint()  # [batch, pos, top_k, d_model], each chosen expert's output before weighting; only with use_expert_outputs

    # TransformerLens views. TL's MoE holds the router as ``W_gate`` (an nn.Linear, weight
    # [n_experts, d_model]) and each expert as experts[e].W_gate / W_in / W_out (nn.Linear: gate,
    # up, down). Here they are stacked over experts and oriented as TL's parameters are
    # ([d_in, d_out]): W_gate_expert[e] == experts[e].W_gate.weight.T, W_in[e] ==
    # experts[e].W_in.weight.T, W_out[e] == experts[e].W_out.weight.T.
    @property
    def W_gate(self) -> Float[Tensor, "d_model n_experts"]:
        """The router: ``logits = x @ W_gate``."""
        return self.gate.weight.T

    @property
    def W_gate_expert(self) -> Float[Tensor, "n_experts d_model d_expert"]:
        """Each expert's gate projection (pre-activation ``x @ W_gate_expert[e]``)."""
        return self.gate_up[:, : self.d_expert].transpose(1, 2)

    @property
    def W_in(self) -> Float[Tensor, "n_experts d_model d_expert"]:
        """Each expert's up (linear) projection."""
        return self.gate_up[:, self.d_expert :].transpose(1, 2)

    @property
    def W_out(self) -> Float[Tensor, "n_experts d_expert d_model"]:
        """Each expert's down projection."""
        return self.down.transpose(1, 2)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x has shape {tuple(x.shape)}; SparseMoE expects [batch, pos, {self.d_model}]")
        batch, n_pos, _ = x.shape
        flat = x.reshape(-1, self.d_model)
        logits = self.gate(flat)  # 2D, exactly as the reference router (through the module, so offloading hooks load its weight)
        logits = self.hook_router_logits(logits.view(batch, n_pos, self.n_experts))
        probs = self.hook_expert_weights(F.softmax(logits, dim=-1, dtype=torch.float32))
        top, indices = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            top = top / top.sum(dim=-1, keepdim=True)
        indices = self.hook_expert_indices(indices)
        weights = self.hook_routing_weights(top.to(x.dtype))
        if watched(self.hook_expert_indices) or watched(self.hook_routing_weights):
            self._check_routing(indices, weights, batch, n_pos)

        ids = indices.reshape(-1)  # [pairs]: the (token, slot) pairs, token-major
        path = self._path(flat, ids.numel())
        if path == "gather":
            expert_out = self._experts_gather(flat, ids)
        else:
            expert_out = self._experts_sorted(flat, ids, grouped=path == "grouped_mm")
        expert_out = expert_out.view(batch, n_pos, self.top_k, self.d_model)
        if self.use_expert_outputs:
            expert_out = self.hook_expert_out(expert_out)
        return (expert_out * weights[..., None]).sum(dim=-2)

    def _path(self, flat: Tensor, n_pairs: int) -> str:
        if self.moe_path not in MOE_PATHS:
            raise ValueError(f"moe_path={self.moe_path!r} is not one of {MOE_PATHS}")
        if self.moe_path == "grouped_mm" and not grouped_mm_supported(flat, self.gate_up, self.down):
            raise ValueError(
                f"moe_path='grouped_mm' is not supported for {flat.dtype} on {flat.device} with d_model={self.d_model}, "
                f"d_expert={self.d_expert} (see grouped_mm_supported); use moe_path='sorted' or 'auto'"
            )
        if self.moe_path != "auto":
            return self.moe_path
        if flat.device.type != "cpu" and n_pairs <= self.gather_max_pairs:
            return "gather"  # on CPU a host sync is free and copying weights per pair is the cost
        grouped = grouped_mm_supported(flat, self.gate_up, self.down)
        return "grouped_mm" if grouped else "sorted"

    def _check_routing(self, indices: Tensor, weights: Tensor, batch: int, n_pos: int) -> None:
        """Validate hook-edited routing (only when a routing hook is attached: costs a host sync)."""
        if indices.shape != (batch, n_pos, self.top_k) or indices.dtype.is_floating_point:
            raise ValueError(
                f"hook_expert_indices returned {indices.dtype} {tuple(indices.shape)}; return integer "
                f"expert ids of shape {(batch, n_pos, self.top_k)}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.n_experts):
            raise ValueError(
                f"hook_expert_indices returned ids in [{int(indices.min())}, {int(indices.max())}]; "
                f"expert ids must lie in [0, {self.n_experts - 1}]"
            )
        if weights.shape != (batch, n_pos, self.top_k):
            raise ValueError(
                f"hook_routing_weights returned shape {tuple(weights.shape)}; return {(batch, n_pos, self.top_k)}"
            )

    def _gated(self, h: Tensor) -> Tensor:
        gate, up = h.chunk(2, dim=-1)
        return gated_product(self.act_name, self.act, gate, up)  # one fused kernel on a GPU for silu

    def _experts_gather(self, flat: Tensor, ids: Int[Tensor, "pairs"]) -> Float[Tensor, "pairs d_model"]:
        """Each pair gathers its expert's weights: two bmm, no host sync (decode-sized inputs)."""
        x_pairs = flat.repeat_interleave(self.top_k, dim=0)[:, None, :]  # [pairs, 1, d_model]
        h = torch.bmm(x_pairs, self.gate_up[ids].transpose(1, 2))  # [pairs, 1, 2 * d_expert]
        return torch.bmm(self._gated(h), self.down[ids].transpose(1, 2))[:, 0]  # [pairs, d_model]

    def _experts_sorted(self, flat: Tensor, ids: Int[Tensor, "pairs"], grouped: bool) -> Float[Tensor, "pairs d_model"]:
        """Pairs sorted by expert, then grouped matmuls (one kernel, or one matmul per used expert)."""
        sorted_ids, order = torch.sort(ids, stable=True)
        x_sorted = flat[order // self.top_k]  # [pairs, d_model], grouped by expert
        experts = torch.arange(self.n_experts, device=ids.device, dtype=sorted_ids.dtype)
        ends = torch.searchsorted(sorted_ids, experts, right=True, out_int32=True)  # [n_experts] group ends
        if grouped:
            h = _GROUPED_MM(x_sorted, self.gate_up.transpose(1, 2), offs=ends)  # [pairs, 2 * d_expert]
            y_sorted = _GROUPED_MM(self._gated(h), self.down.transpose(1, 2), offs=ends)  # [pairs, d_model]
        else:
            counts = torch.diff(ends, prepend=ends.new_zeros(1)).tolist()  # the one host sync
            used = [e for e, n in enumerate(counts) if n]  # only the matmuls loop; the rest runs once on all pairs
            if not used:
                return flat.new_zeros(0, self.d_model)
            rows = [r for r in x_sorted.split(counts) if len(r)]
            h = torch.cat([F.linear(r, self.gate_up[e]) for e, r in zip(used, rows)])  # [pairs, 2 * d_expert]
            hidden = self._gated(h).split([counts[e] for e in used])
            y_sorted = torch.cat([F.linear(a, self.down[e]) for e, a in zip(used, hidden)])  # [pairs, d_model]
        return y_sorted.new_empty(y_sorted.shape).index_copy(0, order, y_sorted)  # back to (token, slot) order
