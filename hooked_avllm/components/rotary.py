"""Rotary position schemes: 1D, sectioned and interleaved M-RoPE/TMRoPE over three position rows,
2D axial.

Every scheme produces a :class:`Rotary` (cos and sin over the full head dimension, in the
``rotate_half`` convention) that :class:`~hooked_avllm.components.attention.Attention` applies to
queries and keys. The schemes differ only in how positions become angles. Positions may be
integers or floats (Qwen3-Omni's video positions are fractional): both are cast to float32, as the
reference does, and never rounded to integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.components.fused import rotate


@dataclass
class Rotary:
    """Angles of one forward pass, ready to rotate ``[batch, pos, head, d_head]`` queries and keys.

    ``upcast=True`` rotates in float32 and casts back (the Qwen vision tower's convention);
    otherwise cos/sin are cast to the activations' dtype first (the Qwen LLM's convention).
    """

    cos: Float[Tensor, "batch pos d_head"]
    sin: Float[Tensor, "batch pos d_head"]
    upcast: bool = False
    # (cos, signed sin) as [batch, pos, 1, d_head] per dtype: cast once per forward, not once per layer
    _cast: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def apply(self, x: Float[Tensor, "batch pos head d_head"]) -> Float[Tensor, "batch pos head d_head"]:
        """``x * cos + rotate_half(x) * sin``, rounded as the reference rounds it.

        ``rotate_half(x) * sin`` is computed as ``swap_halves(x) * signed_sin`` (the sign moved onto
        the sine: exact). With ``upcast`` the products are float32 and the result is cast back, as
        the reference's vision towers do; float64 inputs are rotated in float32 as the reference
        does. On a GPU this is one fused kernel with the same rounding (:func:`fused.rotate`).
        """
        cos, signed_sin = self._angles(torch.float32 if self.upcast else x.dtype)
        return rotate(x, cos, signed_sin, self.upcast)  # one fused kernel on a GPU (components/fused.py)

    def _angles(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if dtype not in self._cast:
            sin = self.sin[:, :, None, :].to(dtype)
            half = sin.shape[-1] // 2
            self._cast[dtype] = (self.cos[:, :, None, :].to(dtype), torch.cat((-sin[..., :half], sin[..., half:]), dim=-1))
        return self._cast[dtype]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Rotary":
        """The same angles on ``device`` (accelerate's device hooks move a block's inputs with this)."""
        return Rotary(self.cos.to(device, non_blocking=non_blocking), self.sin.to(device, non_blocking=non_blocking), self.upcast)

    def select(self, index: Tensor) -> "Rotary":
        """Keep only the positions ``index`` of the position axis (used by KV-cached decoding)."""
        return Rotary(self.cos[:, index], self.sin[:, index], self.upcast)


def inverse_frequencies(rotary_dim: int, theta: float, device=None) -> Float[Tensor, "half"]:
    """``1 / theta ** (2i / rotary_dim)`` for i in ``[0, rotary_dim / 2)``, float32."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device) / rotary_dim
    return 1.0 / (theta**exponents)


def rotary_1d(positions: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos"], d_head: int, theta: float) -> Rotary:
    """Plain RoPE over one position row.

    Example:
        >>> r = rotary_1d(torch.arange(5)[None], d_head=8, theta=1e4)
        >>> r.cos.shape
        torch.Size([1, 5, 8])
    """
    angles = positions[..., None].float() * inverse_frequencies(d_head, theta, positions.device)
    angles = torch.cat((angles, angles), dim=-1)
    return Rotary(angles.cos(), angles.sin())


def rotary_mrope(
    positions: Int[Tensor, "3 batch pos"] | Float[Tensor, "3 batch pos"],
    d_head: int,
    theta: float,
    sections: tuple[int, ...],
) -> Rotary:
    """Sectioned multimodal RoPE (Qwen2-VL M-RoPE, Qwen2.5-Omni TMRoPE).

    The ``d_head / 2`` frequencies are split into consecutive sections; section ``i`` takes its
    angle from position row ``i % 3`` (temporal, height, width). With all three rows equal this is
    plain 1D RoPE.

    Example:
        >>> pos = torch.arange(4).expand(3, 1, 4)
        >>> torch.allclose(rotary_mrope(pos, 8, 1e4, (2, 1, 1)).cos, rotary_1d(pos[0], 8, 1e4).cos)
        True
    """
    if sum(sections) != d_head // 2:
        raise ValueError(f"mrope_section {sections} must sum to d_head/2 = {d_head // 2}")
    inv_freq = inverse_frequencies(d_head, theta, positions.device)
    row_of_frequency = torch.cat(
        [torch.full((n,), i % 3, dtype=torch.long, device=positions.device) for i, n in enumerate(sections)]
    )  # [d_head/2]: which position row drives each frequency
    # angles[b, p, f] = positions[row_of_frequency[f], b, p] * inv_freq[f]
    chosen = positions.float().permute(1, 2, 0)[..., row_of_frequency]  # [batch, pos, d_head/2]
    angles = chosen * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return Rotary(angles.cos(), angles.sin())


def rotary_mrope_interleaved(
    positions: Int[Tensor, "3 batch pos"] | Float[Tensor, "3 batch pos"],
    d_head: int,
    theta: float,
    sections: tuple[int, int, int] | list[int],
) -> Rotary:
    """Interleaved multimodal RoPE (Qwen3-VL / Qwen3-Omni).

    Instead of consecutive sections, the rows alternate across the ``d_head / 2`` frequencies:
    frequency ``f`` takes its angle from row H (1) when ``f % 3 == 1`` and ``f < 3 * sections[1]``,
    from row W (2) when ``f % 3 == 2`` and ``f < 3 * sections[2]``, and from row T (0) otherwise.
    Float positions are used unrounded. With all three rows equal this is plain 1D RoPE.

    Example:
        >>> pos = (torch.arange(4) * 0.5).expand(3, 1, 4)
        >>> torch.equal(rotary_mrope_interleaved(pos, 8, 1e4, (2, 1, 1)).cos, rotary_1d(pos[0], 8, 1e4).cos)
        True
    """
    sections = tuple(sections)
    if len(sections) != 3 or sum(sections) != d_head // 2:
        raise ValueError(f"sections={sections} must be three counts (T, H, W) summing to d_head/2 = {d_head // 2}")
    if positions.ndim != 3 or positions.shape[0] != 3:
        raise ValueError(f"positions has shape {tuple(positions.shape)}; expected [3, batch, pos] (T, H, W rows)")
    frequency = torch.arange(d_head // 2, device=positions.device)
    row_of_frequency = torch.zeros_like(frequency)  # [d_head/2]: which position row drives each frequency
    row_of_frequency[(frequency % 3 == 1) & (frequency < 3 * sections[1])] = 1
    row_of_frequency[(frequency % 3 == 2) & (frequency < 3 * sections[2])] = 2
    chosen = positions.float().permute(1, 2, 0)[..., row_of_frequency]  # [batch, pos, d_head/2]
    angles = chosen * inverse_frequencies(d_head, theta, positions.device)
    angles = torch.cat((angles, angles), dim=-1)
    return Rotary(angles.cos(), angles.sin())


def rotary_axial_2d(positions: Int[Tensor, "pos 2"], d_head: int, theta: float) -> Rotary:
    """2D axial RoPE of the Qwen vision tower: half the frequencies follow the row, half the column.

    Frequencies are those of a ``d_head / 2``-dimensional RoPE; the angle vector is
    ``cat(row * inv_freq, col * inv_freq)``, duplicated for ``rotate_half``. Returned with a batch
    axis of 1 and ``upcast=True``.

    Example:
        >>> rotary_axial_2d(torch.zeros(6, 2, dtype=torch.long), d_head=16, theta=1e4).cos.shape
        torch.Size([1, 6, 16])
    """
    inv_freq = inverse_frequencies(d_head // 2, theta, positions.device)
    angles = (positions[..., None].float() * inv_freq).flatten(-2)  # [pos, 2 * d_head/4]
    angles = torch.cat((angles, angles), dim=-1)[None]
    return Rotary(angles.cos(), angles.sin(), upcast=True)
