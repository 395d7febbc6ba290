"""An independent reference for MiniCPM-o 2.6's offline audio path (ARCHITECTURES.md G §3.2-3.4, §6).

The modules are transformers' own: ``WhisperEncoder(WhisperConfig(...))`` for ``apm`` (its
``conv1``, ``conv2``, ``embed_positions``, ``layers`` and ``layer_norm``), ``nn.Linear`` / ``nn.ReLU``
for ``audio_projection_layer`` and ``nn.AvgPool1d`` for ``audio_avg_pooler``, so the state dict has
the released names (``apm.*``, ``audio_projection_layer.linear{1,2}.*``).

The forward is written here, not taken from ``WhisperEncoder.forward`` (which insists on 3000
frames and hands its layers no mask). It follows the published ``modeling_minicpmo.py``
(jack139/minicpmo-backend@dced0af02409433423de54755506c6418990a244), read, not copied:

* ``MiniCPMO.__init__`` l.118-120: projector ``in_dim = encoder_ffn_dim // 4``, pooler
  ``AvgPool1d(audio_pool_step, stride=audio_pool_step)``;
* ``get_audio_embedding`` l.501-532 (the 4-D mask): ``max_seq_len = (max_mel_seq_len - 1) // 2 + 1``
  from the padded width; ``padding_mask = arange(max_seq_len) >= audio_feature_lens`` (the mel
  lengths), expanded to ``[B, 1, T', T']``; with ``chunk_length > 0`` OR-ed with ``not
  subsequent_chunk_mask(T', int(chunk_length * 50), num_left_chunks=-1)`` (l.246-283: query ``i``
  sees keys ``[0, min((i // chunk + 1) * chunk, T'))``); masked entries set to ``-inf``, others 0,
  in ``conv1.weight``'s dtype;
* ``MiniCPMWhisperEncoder.forward`` l.2101-2194 (offline, no cache): features cast to
  ``conv1.weight``'s dtype, ``gelu(conv1)``, ``gelu(conv2)``, ``+ embed_positions.weight[:T']``,
  every layer given the mask, ``layer_norm``; ``hidden_states[-1]`` is the post-``layer_norm`` state;
* ``get_audio_embedding`` l.533-552: ``audio_projection_layer`` on every frame, ``avg_pooler`` over
  time, then piece ``idx`` keeps ``audio_embeds[idx, :num_audio_tokens[idx]]`` with
  ``_get_feat_extract_output_lengths`` (l.285-295): ``((n - 1) // 2 + 1 - pool) // pool + 1``.

transformers 5.x's ``WhisperEncoderLayer.forward(hidden_states, attention_mask, **kwargs)`` returns
the hidden states as a tensor (4.x: ``(hidden_states, attention_mask, layer_head_mask, ...)``
returning a tuple); both are handled. The attention runs ``eager`` (an explicit softmax over
``q * scaling @ k^T + mask``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiModalProjectorReference(nn.Module):
    """``linear2(relu(linear1(x)))``, both with bias (MiniCPM-o's ``audio_projection_layer``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(x)))


def subsequent_chunk_mask(size: int, chunk_size: int) -> torch.Tensor:
    """[size, size] True where query ``i`` may see key ``j``: every key of its own chunk and of all
    earlier chunks (``num_left_chunks=-1``, no look-ahead), built row by row as the published code does."""
    allowed = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        allowed[i, : min((i // chunk_size + 1) * chunk_size, size)] = True
    return allowed


def attention_mask_4d(feature_lens: torch.Tensor, max_mel_len: int, chunk_length: float, dtype) -> torch.Tensor:
    """The additive ``[piece, 1, T', T']`` mask of ``get_audio_embedding``."""
    batch = feature_lens.shape[0]
    max_seq_len = (max_mel_len - 1) // 2 + 1
    seq_range = torch.arange(max_seq_len, dtype=feature_lens.dtype, device=feature_lens.device)[None, :].expand(batch, max_seq_len)
    padding = seq_range >= feature_lens[:, None].expand(batch, max_seq_len)  # mel lengths vs post-conv indices
    hidden = padding.view(batch, 1, 1, max_seq_len).expand(batch, 1, max_seq_len, max_seq_len)
    mask = hidden.to(dtype)
    if chunk_length > 0:
        hidden = hidden | ~subsequent_chunk_mask(max_seq_len, int(chunk_length * 50)).to(hidden.device)
    mask[hidden] = float("-inf")  # the padded entries were 1.0: all of them are overwritten here
    return mask


class MiniCPMAudioReference(nn.Module):
    """``apm`` (transformers' ``WhisperEncoder``), ``audio_projection_layer`` and ``audio_avg_pooler``,
    under the released names."""

    def __init__(self, audio_config: dict, out_dim: int, pool_step: int = 2):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        config = WhisperConfig(**audio_config)
        config._attn_implementation = "eager"
        self.apm = WhisperEncoder(config)
        self.audio_projection_layer = MultiModalProjectorReference(config.encoder_ffn_dim // 4, out_dim)
        self.audio_avg_pooler = nn.AvgPool1d(pool_step, stride=pool_step)
        self.pool_step = pool_step

    def token_counts(self, feature_lens: torch.Tensor) -> torch.Tensor:
        after_cnn = (feature_lens - 1) // 2 + 1
        return ((after_cnn - self.pool_step) // self.pool_step + 1).to(torch.int32)

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        out = self.apm.layers[index](hidden, mask)
        return out[0] if isinstance(out, tuple) else out

    @torch.no_grad()
    def forward(self, features: torch.Tensor, feature_lens: torch.Tensor, chunk_length: float = 1.0) -> dict:
        """Every stage of the offline audio path for a padded batch of pieces ``features``
        [piece, n_mels, max_mel_len]. Returns a dict: ``conv1`` / ``conv2`` ([piece, frame, d_model]
        after GELU), ``embed``, ``layers`` (list of each layer's output), ``out`` (after ``layer_norm``),
        ``projected`` ([piece, frame, out_dim]), ``pooled`` ([piece, frame // pool, out_dim]),
        ``pieces`` (list of each piece's kept rows) and ``mask`` (the 4-D additive mask)."""
        apm = self.apm
        dtype = apm.conv1.weight.dtype
        x = features.to(dtype)
        conv1 = F.gelu(apm.conv1(x))
        conv2 = F.gelu(apm.conv2(conv1))
        inputs_embeds = conv2.permute(0, 2, 1)
        hidden = inputs_embeds + apm.embed_positions.weight[: inputs_embeds.shape[1], :]
        mask = attention_mask_4d(feature_lens, features.shape[2], chunk_length, dtype)
        stages = {"conv1": conv1.transpose(1, 2), "conv2": inputs_embeds, "embed": hidden, "mask": mask, "layers": []}
        for index in range(len(apm.layers)):
            hidden = self.layer(index, hidden, mask)
            stages["layers"].append(hidden)
        out = apm.layer_norm(hidden)
        projected = self.audio_projection_layer(out)
        pooled = self.audio_avg_pooler(projected.transpose(1, 2)).transpose(1, 2)
        counts = self.token_counts(feature_lens)
        stages.update(
            out=out, projected=projected, pooled=pooled,
            pieces=[pooled[idx, : counts[idx], :] for idx in range(features.shape[0])],
        )
        return stages
