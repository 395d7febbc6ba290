"""Feed-forward blocks: gated (SwiGLU, Qwen LLM and ViT) and plain (Whisper-style encoders)."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_avllm.components.fused import aligned_width, gated_product, padded_linear

def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh approximation of GELU (the reference's ``gelu_pytorch_tanh``)."""
    return F.gelu(x, approximate="tanh")


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)`` (CLIP's quick GELU)."""
    return x * (1.702 * x).sigmoid()


ACTIVATIONS = {  # module-level functions (not lambdas), so a whole model pickles
    "silu": F.silu,
    "gelu": F.gelu,  # exact (erf) GELU, as the reference's "gelu"
    "gelu_pytorch_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` with gate and up fused into one projection.

    Example:
        >>> import torch
        >>> GatedMLP(8, 16)(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, d_model: int, d_mlp: int, act: str = "silu", bias: bool = False):
        super().__init__()
        self.d_mlp = d_mlp
        self.act_name = act
        self.act = activation(act)
        self.gate_up = nn.Linear(d_model, 2 * d_mlp, bias=bias)  # rows: gate, then up
        self.down = nn.Linear(d_mlp, d_model, bias=bias)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]: gate pre-activation
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]: up projection
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]: act(gate) * up

    # TransformerLens's gated-MLP views: hook_pre = x @ W_gate, hook_pre_linear = x @ W_in,
    # out = (act(pre) * pre_linear) @ W_out
    @property
    def W_gate(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.gate_up.weight[: self.d_mlp].T

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.gate_up.weight[self.d_mlp :].T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.down.weight.T

    @property
    def b_gate(self) -> Float[Tensor, "d_mlp"]:
        return self.gate_up.bias[: self.d_mlp] if self.gate_up.bias is not None else self.W_in.new_zeros(self.d_mlp)

    @property
    def b_in(self) -> Float[Tensor, "d_mlp"]:
        return self.gate_up.bias[self.d_mlp :] if self.gate_up.bias is not None else self.W_in.new_zeros(self.d_mlp)

    @property
    def b_out(self) -> Float[Tensor, "d_model"]:
        return self.down.bias if self.down.bias is not None else self.W_out.new_zeros(self.W_out.shape[1])

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        gate, up = self.hook_pre(gate), self.hook_pre_linear(up)
        # act(gate) * up: one fused kernel on a GPU for silu, reading the two strided halves in place;
        # for an unaligned width (3,420) the kernel writes it zero-padded, so the down projection runs
        # on cuBLAS's aligned kernels, and the hook sees the unpadded view
        product = gated_product(self.act_name, self.act, gate, up, width=aligned_width(gate))
        if product.shape[-1] == self.d_mlp:
            return self.down(self.hook_post(product))
        post = product[..., : self.d_mlp]
        hooked = self.hook_post(post)  # [batch, pos, d_mlp]
        if hooked is not post:  # a hook returned a new tensor: that is what the projection reads
            return self.down(hooked)
        return padded_linear(product, self.down)  # in-place edits of the view are in the padded tensor


class PlainMLP(nn.Module):
    """``fc2(act(fc1(x)))``.

    Example:
        >>> import torch
        >>> PlainMLP(8, 16, act="gelu")(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, d_model: int, d_mlp: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        self.act = activation(act)
        self.fc1 = nn.Linear(d_model, d_mlp, bias=bias)
        self.fc2 = nn.Linear(d_mlp, d_model, bias=bias)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    # TransformerLens's MLP views: hook_pre = x @ W_in + b_in, out = hook_post @ W_out + b_out
    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.fc1.weight.T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.fc2.weight.T

    @property
    def b_in(self) -> Float[Tensor, "d_mlp"]:
        return self.fc1.bias if self.fc1.bias is not None else self.W_in.new_zeros(self.W_in.shape[1])

    @property
    def b_out(self) -> Float[Tensor, "d_model"]:
        return self.fc2.bias if self.fc2.bias is not None else self.W_out.new_zeros(self.W_out.shape[1])

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.fc2(self.hook_post(self.act(self.hook_pre(self.fc1(x)))))
