"""TransformerLens's token helpers on our models: text to ids and back, single tokens, and the
residual direction of a token.

These are plain-text helpers (no chat template, no media): use ``model.prepare`` for prompts with
audio, video or images. The Qwen tokenizers add no BOS token, so ``prepend_bos`` is off by default.

Example:
    >>> from hooked_avllm.toy import load_toy
    >>> model = load_toy("omni")
    >>> model.to_str_tokens("What do you hear?")
    ['What', 'do', 'you', 'hear', '?']
    >>> model.tokens_to_residual_directions(" dog").shape
    torch.Size([96])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor


class TokenMethods:
    """Mixin for :class:`~hooked_avllm.HookedAVLLM`: ``to_tokens``, ``to_str_tokens`` ..."""

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(
                "this model has no tokenizer: load it with from_pretrained from a folder that has one, or set model.tokenizer"
            )
        return self.tokenizer

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Plain text (one string or a list) to token ids ``[batch, pos]``, padded with the pad token.

        ``padding_side`` is ``"right"`` (default, as TransformerLens) or ``"left"`` (what
        ``generate`` needs). ``prepend_bos=True`` raises when the tokenizer has no BOS token (Qwen's
        has none). ``truncate`` cuts at ``cfg.n_ctx``.
        """
        tok = self._require_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"to_tokens takes a string or a non-empty list of strings; got {type(input).__name__}")
        side = padding_side or "right"
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
        rows = [tok.encode(t, add_special_tokens=False) for t in texts]
        if prepend_bos:
            bos = getattr(tok, "bos_token_id", None)
            if bos is None:
                raise ValueError("prepend_bos=True but this tokenizer has no BOS token (Qwen tokenizers have none)")
            rows = [[bos] + r for r in rows]
        if truncate:
            rows = [r[: self.cfg.n_ctx] for r in rows]
        pad = getattr(tok, "pad_token_id", None)
        pad = self.cfg.tokens.pad if pad is None else pad
        longest = max(len(r) for r in rows)
        if longest == 0:
            raise ValueError(f"{input!r} tokenizes to nothing")
        if pad is None and any(len(r) != longest for r in rows):
            raise ValueError("these texts have different lengths and the tokenizer has no pad token; pass one text at a time")
        filled = [([pad] * (longest - len(r)) + r) if side == "left" else (r + [pad] * (longest - len(r))) for r in rows]
        tokens = torch.tensor(filled, dtype=torch.long)
        return tokens.to(self.cfg.device) if move_to_device else tokens

    def to_string(self, tokens: Int[Tensor, "... pos"] | Sequence[int]) -> str | list[str]:
        """Token ids back to text: one string for ``[pos]``, a list for ``[batch, pos]``."""
        tok = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [tok.decode(row.tolist()) for row in tokens]
        if tokens.ndim > 2:
            raise ValueError(f"to_string takes [pos] or [batch, pos] ids; got shape {tuple(tokens.shape)}")
        return tok.decode(tokens.reshape(-1).tolist())

    def to_str_tokens(self, input: str | Tensor | Sequence[int] | Sequence[str]) -> list[str] | list[list[str]]:
        """Each token as its own string: from text, ``[pos]`` or ``[1, pos]`` ids (one list), or
        ``[batch, pos]`` ids / a list of texts (a list per row)."""
        tok = self._require_tokenizer()
        if isinstance(input, str):
            ids = tok.encode(input, add_special_tokens=False)
        elif isinstance(input, (list, tuple)) and input and all(isinstance(x, str) for x in input):
            return [self.to_str_tokens(text) for text in input]
        else:
            ids = torch.as_tensor(input)
            if ids.ndim == 2 and ids.shape[0] > 1:
                return [self.to_str_tokens(row) for row in ids]
            if ids.ndim > 2:
                raise ValueError(f"to_str_tokens takes text or [pos] / [batch, pos] ids; got shape {tuple(ids.shape)}")
            ids = ids.reshape(-1).tolist()
        return [tok.decode([i]) for i in ids]

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (``" dog"``); raises otherwise."""
        tok = self._require_tokenizer()
        if not isinstance(string, str):
            raise ValueError(f"to_single_token takes a string; got {type(string).__name__}")
        ids = tok.encode(string, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tok.decode([i]) for i in ids]
            raise ValueError(f"{string!r} is {len(ids)} tokens {pieces}, not one; pick a single-token string or pass ids")
        return int(ids[0])

    def tokens_to_residual_directions(
        self, tokens: str | int | Int[Tensor, "..."]
    ) -> Float[Tensor, "... d_model"]:
        """The residual-stream direction whose dot product with the final-norm-scaled residual
        (``resid / ln_final scale``) is that token's logit: its unembedding column with the final
        RMSNorm's weight folded in (``ln_final.w * W_U[:, token]``). With it, the direct logit
        attributions of ``cache.logit_attrs`` sum exactly to the logits.

        ``tokens``: a single-token string, an id, or a tensor of ids of any shape.
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        ids = torch.as_tensor(tokens, device=self.unembed.weight.device).long()
        if bool((ids < 0).any()) or bool((ids >= self.cfg.d_vocab).any()):
            raise ValueError(f"token ids must lie in [0, {self.cfg.d_vocab}); got {ids.tolist()}")
        return self.unembed.weight[ids] * self.ln_final.w
