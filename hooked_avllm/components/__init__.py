"""Small single-purpose modules shared by every tower: attention, MLPs, norms, rotary, blocks."""

from hooked_avllm.components.attention import Attention, AttentionSegments
from hooked_avllm.components.blocks import TransformerBlock
from hooked_avllm.components.mlp import GatedMLP, PlainMLP
from hooked_avllm.components.norms import LayerNorm, RMSNorm
from hooked_avllm.components.rotary import Rotary

__all__ = [
    "Attention",
    "AttentionSegments",
    "GatedMLP",
    "LayerNorm",
    "PlainMLP",
    "RMSNorm",
    "Rotary",
    "TransformerBlock",
]
