"""Small single-purpose modules shared by every tower: attention, MLPs, norms, rotary,
relative position bias, blocks."""

from hooked_avllm.components.attention import Attention, AttentionSegments
from hooked_avllm.components.blocks import InjectionBlock, PostNormBlock, TransformerBlock
from hooked_avllm.components.mlp import GatedMLP, PlainMLP
from hooked_avllm.components.moe import SparseMoE
from hooked_avllm.components.norms import LayerNorm, RMSNorm
from hooked_avllm.components.relative_position import (
    GatedRelativePositionAttention,
    RelativePositionBias,
    relative_position_buckets,
)
from hooked_avllm.components.rotary import Rotary

__all__ = [
    "Attention",
    "AttentionSegments",
    "GatedMLP",
    "GatedRelativePositionAttention",
    "InjectionBlock",
    "LayerNorm",
    "PlainMLP",
    "PostNormBlock",
    "RMSNorm",
    "RelativePositionBias",
    "Rotary",
    "SparseMoE",
    "TransformerBlock",
    "relative_position_buckets",
]
