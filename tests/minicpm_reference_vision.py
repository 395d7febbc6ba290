"""Independent references for MiniCPM-o 2.6's vision path (ARCHITECTURES.md G §2.2-2.3, §6), and the
small helpers its tests share.

* ``vpm``: transformers' own ``Idefics2VisionTransformer`` (the navit SigLIP that MiniCPM's
  ``modeling_navit_siglip.py`` was copied from), built by :func:`idefics2_vision_reference` with the
  released names (``embeddings.*``, ``encoder.layers.N.*``, ``post_layernorm.*`` after ``vpm.``) and
  run one slice at a time as ``[1, 3, H, W]`` with an all-True ``[1, h, w]`` patch mask
  (:func:`run_idefics2_slices`). It derives a slice's position ids itself, with transformers 5.x's
  formula ``idx * (1 / n)`` (float32) clamped below 1, which differs from MiniCPM's for some sides;
  ``position_rule="minicpm"`` swaps in :func:`minicpm_bucket_ids` through a forward pre-hook on its
  ``embeddings.position_embedding`` (everything else stays transformers').
* :func:`minicpm_bucket_ids`: MiniCPM's position-id rule, written from reading the published code.
* :class:`ReferenceResampler`: MiniCPM's resampler, written from reading the published
  ``resampler.py`` and built from ``torch.nn.MultiheadAttention`` and ``nn.LayerNorm``.
* :func:`reshape_by_patch`: the released image processor's patch layout.

Sources read (not copied): 404805854/minicpmv2.6-onnx@8490e5923eeebae2ef7163fc7bb39f5b66967272
("fork from hugging face original code"), files ``modeling_navit_siglip.py``, ``resampler.py``,
``image_processing_minicpmv.py`` and ``modeling_minicpmv.py``; line numbers below are at that commit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

try:  # transformer-lens >= 3.9 (and 4.x) export it at the top; 3.0-3.8 from hook_points
    from transformer_lens import HookedRootModule
except ImportError:  # pragma: no cover
    from transformer_lens.hook_points import HookedRootModule


# ----------------------------------------------------------------------------- vpm


def idefics2_vision_reference(vision_config: dict, attn_implementation: str = "eager") -> nn.Module:
    """transformers' ``Idefics2VisionTransformer`` for a SigLIP ``vision_config`` dict (the released
    keys: ``hidden_size``, ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``image_size``, ``patch_size``), ``gelu_pytorch_tanh`` and eps 1e-6 as MiniCPM's SigLIP defaults.
    ``eager`` is the released vision attention (explicit float32 softmax); use ``sdpa`` in float64
    (eager casts its softmax through float32)."""
    from transformers import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    config = Idefics2VisionConfig(
        **{k: vision_config[k] for k in keys}, num_channels=3, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6
    )
    config._attn_implementation = attn_implementation
    return Idefics2VisionTransformer(config).eval()


def minicpm_bucket_ids(h: int, w: int, n_per_side: int) -> torch.Tensor:
    """MiniCPM's position ids of an ``h x w`` slice (row-major, int64), from reading
    ``modeling_navit_siglip.py`` ``SiglipVisionEmbeddings.forward``:

    * l.325: ``boundaries = arange(1 / num_patches_per_side, 1.0, 1 / num_patches_per_side)``
      (Python floats, default dtype float32);
    * l.336-337: ``nb_patches_h / _w`` are entries of ``tgt_sizes``, an int32 tensor
      (``modeling_minicpmv.py`` l.93: ``torch.vstack(tgt_sizes).type(torch.int32)``), so ``1 / nb``
      is a float32 0-d tensor;
    * l.342-343: ``fractional_coords = arange(0, 1 - 1e-6, 1 / nb)``, on the CPU (no device given);
    * l.345-346: ``bucketize(fractional_coords, boundaries, right=True)``;
    * l.348: ``ids = (bucket_h[:, None] * num_patches_per_side + bucket_w).flatten()``.
    """
    boundaries = torch.arange(1 / n_per_side, 1.0, 1 / n_per_side)
    size = torch.tensor([h, w], dtype=torch.int32)
    coords_h = torch.arange(0, 1 - 1e-6, 1 / size[0])
    coords_w = torch.arange(0, 1 - 1e-6, 1 / size[1])
    bucket_h = torch.bucketize(coords_h, boundaries, right=True)
    bucket_w = torch.bucketize(coords_w, boundaries, right=True)
    return (bucket_h[:, None] * n_per_side + bucket_w).flatten()


def idefics2_bucket_ids(reference: nn.Module, h: int, w: int) -> torch.Tensor:
    """The position ids transformers' Idefics2 gives an ``h x w`` slice (captured from its own
    forward, on a CPU run of a zero slice)."""
    seen = []
    table = reference.embeddings.position_embedding
    handle = table.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    p = reference.config.patch_size
    try:
        with torch.no_grad():
            reference.embeddings(
                torch.zeros(1, 3, h * p, w * p, dtype=reference.embeddings.patch_embedding.weight.dtype),
                torch.ones(1, h, w, dtype=torch.bool),
            )
    finally:
        handle.remove()
    return seen[0].flatten()


def run_idefics2_slices(reference: nn.Module, slices: list[torch.Tensor], position_rule: str = "idefics2",
                        hidden_states: bool = False):
    """Each slice ``[3, H, W]`` alone through the reference; outputs packed as ``[1, patch, d]``.

    ``position_rule="minicpm"`` replaces the ids the reference computed by :func:`minicpm_bucket_ids`
    (a forward pre-hook on ``embeddings.position_embedding`` swaps its input). With
    ``hidden_states=True`` also returns the packed hidden states (embeddings, then every layer).
    """
    if position_rule not in ("idefics2", "minicpm"):
        raise ValueError(f"position_rule must be 'idefics2' or 'minicpm'; got {position_rule!r}")
    p = reference.config.patch_size
    grid = reference.config.image_size // p
    outs, states = [], []
    for pixels in slices:
        h, w = pixels.shape[-2] // p, pixels.shape[-1] // p
        handle = None
        if position_rule == "minicpm":
            ids = minicpm_bucket_ids(h, w, grid)[None]
            handle = reference.embeddings.position_embedding.register_forward_pre_hook(
                lambda module, args, ids=ids: (ids.to(args[0].device),)
            )
        try:
            with torch.no_grad():
                out = reference(
                    pixels[None].to(reference.embeddings.patch_embedding.weight.dtype),
                    patch_attention_mask=torch.ones(1, h, w, dtype=torch.bool, device=pixels.device),
                    output_hidden_states=hidden_states,
                )
        finally:
            if handle is not None:
                handle.remove()
        outs.append(out.last_hidden_state)
        states.append(out.hidden_states)
    packed = torch.cat(outs, dim=1)
    if not hidden_states:
        return packed
    return packed, [torch.cat(layer, dim=1) for layer in zip(*states)]


def reshape_by_patch(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The released processor's layout of one slice ``[3, H, W]`` -> ``[3, p, L * p]``, from reading
    ``image_processing_minicpmv.py`` ``reshape_by_patch`` (l.338-345): ``unfold`` with kernel and
    stride ``p`` -> ``[3 * p * p, L]``, reshape ``[3, p, p, L]``, permute ``(0, 1, 3, 2)``, reshape
    ``[3, p, L * p]``."""
    patches = torch.nn.functional.unfold(image, (patch_size, patch_size), stride=(patch_size, patch_size))
    patches = patches.reshape(image.size(0), patch_size, patch_size, -1)
    return patches.permute(0, 1, 3, 2).reshape(image.size(0), patch_size, -1)


# ----------------------------------------------------------------------------- resampler


def sincos_table_numpy(embed_dim: int, height: int, width: int) -> np.ndarray:
    """``[height, width, embed_dim]`` float32, from reading ``resampler.py`` l.16-64:

    * ``get_2d_sincos_pos_embed``: ``grid_h = arange(H, float32)``, ``grid_w = arange(W, float32)``,
      ``grid = meshgrid(grid_w, grid_h)`` (w first; numpy's default 'xy' indexing gives two
      ``[H, W]`` arrays: ``grid[0]`` the column index, ``grid[1]`` the row index);
    * ``get_2d_sincos_pos_embed_from_grid``: first half of the channels from ``grid[0]`` (the
      column, although the variable is called ``emb_h``), second half from ``grid[1]``;
    * ``get_1d_sincos_pos_embed_from_grid_new`` (width ``D = embed_dim / 2``): ``omega = arange(D/2,
      float32) / (D/2)``, ``omega = 1 / 10000 ** omega``; ``out = einsum('hw,d->hwd', pos, omega)``;
      ``concatenate([sin(out), cos(out)])``. All numpy float32.
    """
    grid_h = np.arange(height, dtype=np.float32)
    grid_w = np.arange(width, dtype=np.float32)
    columns, rows = np.meshgrid(grid_w, grid_h)

    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        angles = np.einsum("hw,d->hwd", pos, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)

    return np.concatenate([one_axis(embed_dim // 2, columns), one_axis(embed_dim // 2, rows)], axis=-1)


class ReferenceResampler(nn.Module):
    """MiniCPM-V 2.6 / MiniCPM-o 2.6's ``Resampler(num_queries, embed_dim, num_heads, kv_dim,
    adaptive=True, max_size=(70, 70))``, from reading ``resampler.py`` l.67-171; state dict in the
    released names (``query``, ``kv_proj.weight``, ``attn.in_proj_weight``, ``attn.in_proj_bias``,
    ``attn.out_proj.{weight,bias}``, ``ln_q/ln_kv/ln_post.{weight,bias}``, ``proj``).

    What the reading gave, and what is assumed:

    * ``query`` ``[Q, D]``; ``kv_proj = Linear(kv_dim, D, bias=False)`` or ``Identity`` when
      ``kv_dim == D`` (l.93-96); LayerNorms eps 1e-6 (l.80 ``norm_layer``); ``proj`` a raw ``[D, D]``
      parameter used as ``x @ proj`` (l.104, l.167);
    * ``pos_embed``: a non-persistent float32 buffer ``[70, 70, D]`` from :func:`sincos_table_numpy`
      (l.108-112), rebuilt at ``max(max_h, 70) x max(max_w, 70)`` when a slice exceeds it
      (``_adjust_pos_cache`` l.114-119; the larger size is kept afterwards);
    * forward (l.130-168): ``key_padding_mask[b, j] = j >= h_b * w_b``; per slice
      ``pos_embed[:h, :w].reshape(h * w, D).to(x.dtype)``, padded with 0 (``pad_sequence``) and
      made ``[L, B, D]``; ``x = ln_kv(kv_proj(x)).permute(1, 0, 2)``; ``q = ln_q(query)`` repeated
      over the batch as ``[Q, B, D]``; ``out = attn(q, x + pos, x, key_padding_mask=kpm)[0]``
      (positions on the key only); ``ln_post(out.permute(1, 0, 2)) @ proj``;
    * the attention is a subclass of ``nn.MultiheadAttention`` (l.174-335, ``batch_first=False``)
      that re-creates ``out_proj`` as a plain ``nn.Linear`` (same names) and always takes the
      ``need_weights=True`` path of ``multi_head_attention_forward`` (l.537-549: ``q / sqrt(E)``,
      ``baddbmm`` with the float ``-inf`` padding mask, ``softmax`` in the activation dtype). Here:
      stock ``nn.MultiheadAttention`` with ``need_weights=True``, whose same path scales by
      ``q * sqrt(1 / E)`` -- assumed equivalent (ARCHITECTURES.md: bit-identical in bf16 on 1e6
      values); its fast path does not apply (query, key and value are different tensors);
    * ``forward`` takes ``x`` padded ``[B, L_max, kv_dim]`` (as the vision tower's padded batch);
      rows past a slice's ``h * w`` patches may hold anything (they are masked);
    * ``tgt_sizes`` ``[B, 2]`` are ``(h, w)`` patch counts (int32 in the released code).
    """

    def __init__(self, num_queries: int, embed_dim: int, num_heads: int, kv_dim: int, max_size=(70, 70)):
        super().__init__()
        self.embed_dim = embed_dim
        self.max_size = tuple(max_size)
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)  # batch_first=False
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter((embed_dim**-0.5) * torch.randn(embed_dim, embed_dim))
        self._set_table(self.max_size)

    def _set_table(self, size) -> None:
        table = torch.from_numpy(sincos_table_numpy(self.embed_dim, int(size[0]), int(size[1]))).float()
        self.register_buffer("pos_embed", table, persistent=False)

    def forward(self, x: torch.Tensor, tgt_sizes: torch.Tensor, return_weights: bool = False):
        """``x`` [B, L_max, kv_dim], ``tgt_sizes`` [B, 2] -> [B, Q, D] (and with ``return_weights``
        the per-head attention weights [B, heads, Q, L_max])."""
        batch = x.shape[0]
        sizes = [(int(h), int(w)) for h, w in tgt_sizes.tolist()]
        max_h, max_w = max(h for h, _ in sizes), max(w for _, w in sizes)
        if max_h > self.max_size[0] or max_w > self.max_size[1]:
            self.max_size = (max(max_h, self.max_size[0]), max(max_w, self.max_size[1]))
            self._set_table(self.max_size)
        lengths = [h * w for h, w in sizes]
        key_padding_mask = torch.zeros(batch, max(lengths), dtype=torch.bool, device=x.device)
        pos = []
        for i, (h, w) in enumerate(sizes):
            pos.append(self.pos_embed[:h, :w, :].reshape(h * w, -1).to(x.device, x.dtype))
            key_padding_mask[i, lengths[i]:] = True
        pos = nn.utils.rnn.pad_sequence(pos, batch_first=True, padding_value=0.0).permute(1, 0, 2)  # [L, B, D]
        kv = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)  # [L, B, D]
        q = self.ln_q(self.query)[:, None, :].repeat(1, batch, 1)  # [Q, B, D]
        out, weights = self.attn(q, kv + pos, kv, key_padding_mask=key_padding_mask, need_weights=True,
                                 average_attn_weights=False)
        result = self.ln_post(out.permute(1, 0, 2)) @ self.proj
        return (result, weights) if return_weights else result


# ----------------------------------------------------------------------------- test support


class Parts(HookedRootModule):
    """Our modules under the slot names the full model gives them, so hook names read ``vision.*`` /
    ``vision_proj.*``; ``forward(part, *args)`` runs one of them."""

    def __init__(self, **parts: nn.Module):
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)
        self.setup()

    def forward(self, part: str, *args):
        return getattr(self, part)(*args)


def randomize_(module: nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1): norm weights near 1, biases
    small but nonzero, tables and queries ~0.5, matrices ~ 1/sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
            is_norm = p.ndim == 1 and any(k in name for k in ("norm", "ln_"))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.2 * noise)
            elif "position_embedding" in name or name == "query":
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)


def load_through_map(ours: nn.Module, state: dict[str, torch.Tensor], targets_of) -> list[str]:
    """Copy a released-layout ``state`` into ``ours`` only through ``targets_of(name)`` (a weight map
    with its config bound), the way ``WeightFiller.fill`` applies a ``Target``: reshape to ``shape``
    when given, copy into ``param[rows]``. Every name must be known, every row of every parameter
    written exactly once; parameters start as NaN so nothing unwritten hides. Returns the names the
    map skipped (``[]`` targets)."""
    params = dict(ours.named_parameters())
    written = {k: torch.zeros(p.shape[:1] if p.ndim else (1,), dtype=torch.int) for k, p in params.items()}
    skipped = []
    with torch.no_grad():
        for p in params.values():
            p.fill_(float("nan"))
        for name, tensor in state.items():
            targets = targets_of(name)
            assert targets is not None, f"the weight map does not know {name}"
            if not targets:
                skipped.append(name)
            for t in targets:
                assert t.index is None, t
                p = params[t.param]
                start, stop = t.rows or (0, p.shape[0])
                source = tensor.reshape(t.shape) if t.shape is not None else tensor
                p[start:stop].copy_(source)
                written[t.param][start:stop] += 1
    for k, count in written.items():
        assert bool((count == 1).all()), f"{k} written {count.tolist()} times"
    assert not any(bool(p.isnan().any()) for p in params.values())
    return skipped
