"""What ``forward`` returns (``return_type``) and the next-token loss over text targets.

In an audio-visual prompt most positions are media placeholders: predicting the next
``<|AUDIO|>`` placeholder says nothing about the model. The loss therefore averages the
next-token cross-entropy over the positions whose *target* (the next token) is text or a
generated token, and whose own position is real (not padding).

Example:
    >>> import torch
    >>> from hooked_avllm.vocabulary import AUDIO, TEXT
    >>> logits = torch.zeros(1, 4, 10)
    >>> ids = torch.tensor([[1, 2, 3, 4]])
    >>> kinds = torch.tensor([[TEXT, AUDIO, TEXT, TEXT]])
    >>> float(text_target_loss(logits, ids, kinds))  # uniform logits: log(10)
    2.302585...
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.vocabulary import GENERATED, PADDING, TEXT

RETURN_TYPES = ("logits", "loss", "both", "normalized", None)


def check_return_type(return_type: object) -> None:
    """Raise a ``ValueError`` naming the choices when ``return_type`` is not one of them."""
    if return_type not in RETURN_TYPES:
        raise ValueError(
            f"return_type={return_type!r} is not one of {list(RETURN_TYPES)}: 'logits' [batch, pos, vocab], "
            "'loss' (next-token cross-entropy over text targets), 'both' (logits, loss), 'normalized' (the "
            "final-norm residual) or None"
        )


def text_target_mask(kinds: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos_minus_1"]:
    """True at positions p whose next token (p + 1) is text or generated and that are real themselves."""
    target_is_text = (kinds[:, 1:] == TEXT) | (kinds[:, 1:] == GENERATED)
    return target_is_text & (kinds[:, :-1] != PADDING)


def text_target_loss(
    logits: Float[Tensor, "batch pos vocab"],
    input_ids: Int[Tensor, "batch pos"],
    kinds: Int[Tensor, "batch pos"],
    per_token: bool = False,
) -> Float[Tensor, ""] | Float[Tensor, "batch pos_minus_1"]:
    """Mean next-token cross-entropy over text targets (see the module docstring).

    ``per_token=True`` returns ``[batch, pos - 1]`` with 0 where the target is not text.
    """
    if logits.shape[:2] != input_ids.shape or kinds.shape != input_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape[:2])}, input_ids {tuple(input_ids.shape)} and kinds {tuple(kinds.shape)} must "
            "cover the same [batch, pos]"
        )
    if input_ids.shape[1] < 2:
        raise ValueError("the loss needs at least two positions (a token and its next token)")
    log_probs = logits[:, :-1].float().log_softmax(-1)
    targets = input_ids[:, 1:].to(logits.device)
    losses = -log_probs.gather(-1, targets[..., None])[..., 0]
    mask = text_target_mask(kinds.to(logits.device))
    if per_token:
        return torch.where(mask, losses, torch.zeros_like(losses))
    n = int(mask.sum())
    if n == 0:
        raise ValueError("these inputs have no text targets (every next token is media or padding): the loss is undefined")
    return losses[mask].sum() / n
