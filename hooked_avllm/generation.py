"""Generation: greedy decoding with a KV cache under hooks and attention edits, and caching
activations while generating.

Caching while generating gives one cache per forward (prefill, then each decoding step), or one
cache with every LLM activation concatenated over the steps. Concatenated, a position-major
activation ``[batch, pos, ...]`` covers prompt + generated positions; attention patterns and scores
``[batch, head, query, key]`` become the full ``[batch, head, seq, seq]`` matrix (keys a step could
not see are 0 in patterns, ``-inf`` in scores). Encoder and projector activations exist only at the
prefill and are kept as they are. The cache's layout is the prompt's, extended by the generated
positions.

Example:
    >>> tokens, cache = model.generate_with_cache(inputs, max_new_tokens=20,                # doctest: +SKIP
    ...                                           names_filter=lambda n: n.endswith("resid_post"))
    >>> cache.select("blocks.20.hook_resid_post", "generated").shape                       # doctest: +SKIP
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooked_avllm.cache import AVActivationCache
from hooked_avllm.components.hook_checks import check_names_filter
from hooked_avllm.decoder_inputs import decoder_inputs
from hooked_avllm.decoding import greedy_decode

NamesFilter = Callable[[str], bool] | str | list[str] | None


def _filter(names_filter: NamesFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if isinstance(names_filter, (list, tuple, set, frozenset)):
        chosen = set(names_filter)
        return lambda name: name in chosen
    return names_filter


def cached_generation(
    model: Any,
    inputs: Any,
    max_new_tokens: int = 32,
    *,
    names_filter: NamesFilter = None,
    device: str | torch.device | None = None,
    concat: bool = True,
    eos_token_id: int | list[int] | None = None,
) -> tuple[Tensor, AVActivationCache | list[AVActivationCache]]:
    """Greedy generation that caches the chosen activations of every forward (see the module docstring).

    The last generated token is run through the model too, so the cache covers every token.
    ``device="cpu"`` moves each activation off the GPU as soon as it is made.
    """
    check_names_filter(names_filter, model.hook_dict)
    keep = _filter(names_filter)
    steps: dict[str, list[Tensor]] = {}
    step_of: dict[str, list[int]] = {}

    def save(act: Tensor, hook: Any) -> None:
        context = model.forward_context
        steps.setdefault(hook.name, []).append(act.detach().to(device) if device is not None else act.detach())
        step_of.setdefault(hook.name, []).append(context.step if context is not None else 0)

    hooks = [(name, save) for name in model.hook_dict if keep(name)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        tokens = model.generate(inputs, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, forward_last=True)
    layout = _extended_layout(model, inputs, tokens)
    if not concat:
        n_forwards = max((max(s) for s in step_of.values()), default=0) + 1
        caches = []
        for step in range(n_forwards):
            entries = {name: acts[i] for name, acts in steps.items() for i, s in enumerate(step_of[name]) if s == step}
            caches.append(AVActivationCache(entries, model, layout=layout))
        return tokens, caches
    merged = {name: _concat(name, acts) for name, acts in steps.items()}
    return tokens, AVActivationCache(merged, model, layout=layout)


def _concat(name: str, acts: list[Tensor]) -> Tensor:
    if len(acts) == 1:
        return acts[0]
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        n_keys = acts[-1].shape[-1]
        fill = 0.0 if name.endswith("hook_pattern") else float("-inf")
        padded = [torch.nn.functional.pad(a, (0, n_keys - a.shape[-1]), value=fill) for a in acts]
        return torch.cat(padded, dim=2)
    return torch.cat(acts, dim=1)


def _extended_layout(model: Any, inputs: Any, tokens: Tensor) -> Any:
    layout = model.layout_for(inputs)
    layout = layout.to(layout.text.device)  # a copy: the inputs' layout stays the prompt's
    return layout.extend(tokens.shape[1] - layout.n_prompt)


def check_max_new_tokens(max_new_tokens: Any) -> int:
    """``max_new_tokens`` as an int of at least 1 (an int-like such as ``numpy.int64`` is taken).

    Zero is refused rather than answered with the prompt: a generation that generates nothing is
    a forward pass, which ``model(inputs)`` or ``model.run_with_cache(inputs)`` runs directly.

    Example:
        >>> check_max_new_tokens(-1)
        Traceback (most recent call last):
        ...
        ValueError: max_new_tokens must be at least 1; got -1 (to run the prompt without generating, call model(inputs) or model.run_with_cache(inputs))
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
        raise TypeError(
            f"max_new_tokens must be an int (the number of tokens to generate); got {max_new_tokens!r} "
            f"({type(max_new_tokens).__name__})"
        )
    if max_new_tokens < 1:
        raise ValueError(
            f"max_new_tokens must be at least 1; got {max_new_tokens} (to run the prompt without generating, call "
            "model(inputs) or model.run_with_cache(inputs))"
        )
    return int(max_new_tokens)


def check_eos_token_id(eos_token_id: Any, n_vocab: int) -> list[int]:
    """``eos_token_id`` (an id, or a list / 1-D tensor of ids; ``[]`` never stops early) as a list
    of ids of the vocabulary ``[0, n_vocab)``.

    Example:
        >>> check_eos_token_id("</s>", 256)
        Traceback (most recent call last):
        ...
        TypeError: eos_token_id must be a token id (int) or a list of ids; got '</s>' (str): for a token's text use model.to_single_token('</s>')
    """
    values = eos_token_id.tolist() if isinstance(eos_token_id, Tensor) and eos_token_id.ndim <= 1 else eos_token_id
    values = [values] if not isinstance(values, (list, tuple)) else list(values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            hint = f": for a token's text use model.to_single_token({value!r})" if isinstance(value, str) else ""
            raise TypeError(
                f"eos_token_id must be a token id (int) or a list of ids; got {eos_token_id!r} ({type(value).__name__}){hint}"
            )
        if not 0 <= value < n_vocab:
            raise ValueError(
                f"eos_token_id {value} is outside the vocabulary [0, {n_vocab}): generation could never stop at it"
            )
    return [int(v) for v in values]


# per-process decoding state (CUDA graphs, their buffers, a weak reference to the last decoder)
TRANSIENT_DECODING_STATE = ("_captured_decoders", "_last_decoder", "_capture_failed")


class Generation:
    """Greedy generation (mixed into :class:`~hooked_avllm.HookedAVLLM`)."""

    def __getstate__(self) -> dict:
        """The model's state for pickling and ``copy.deepcopy``, without the captured decoders (CUDA
        graphs and their KV buffers) and the reference to the last one: they belong to this process
        and this model, and a copy records its own graphs when it first generates on a GPU."""
        state = dict(self.__dict__)
        for name in TRANSIENT_DECODING_STATE:
            state.pop(name, None)
        return state

    def end_tokens(self, eos_token_id: int | list[int] | None = None, device: Any = None) -> Int[Tensor, "n_end"]:
        """The end-of-text ids generation stops at: ``eos_token_id`` if given (checked: ids of the
        vocabulary), else the config's."""
        if eos_token_id is None:
            eos = list(self.cfg.tokens.eos)
        else:
            eos = check_eos_token_id(eos_token_id, self.embed.num_embeddings)
        return torch.tensor(eos, device=device, dtype=torch.long)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Int[Tensor, "batch pos"] | Any = None,
        max_new_tokens: int = 32,
        eos_token_id: int | list[int] | None = None,
        *,
        layout: Any = None,
        forward_last: bool = False,
        cuda_graph: bool | None = None,
        return_logits: bool = False,
        **inputs: Any,
    ) -> Int[Tensor, "batch pos_plus_new"] | tuple[Int[Tensor, "batch pos_plus_new"], Float[Tensor, "batch new vocab"]]:
        """Greedy decoding with a KV cache; hooks and attention edits apply at the prefill and at
        every step (``model.forward_context.step`` says which).

        Takes the same inputs as ``forward`` (token ids or prepared inputs, left padding for
        batches; a prompt string is refused: ``model.to_tokens`` or ``model.prepare`` it first).
        Stops when every row has produced an end token (``eos_token_id``: an id or a list of ids,
        ``cfg.tokens.eos`` by default) or after ``max_new_tokens`` (an int of at least 1: 0 raises,
        as generating nothing is a plain forward); rows that finished early are filled with the end
        token. ``forward_last`` also runs the last generated token through the model (so caches
        cover every token). Keys and values go to a static (preallocated) cache; on a GPU each
        decoding step is replayed from a captured CUDA graph unless a hook watches a decoding-time
        hook point (then every step runs eagerly, so the hook fires), ``cuda_graph=False`` asks for
        eager steps, ``True`` insists on the graph (see :mod:`hooked_avllm.decoding`).
        ``return_logits=True`` returns ``(tokens, logits)``: the float32 logits ``[batch, new, vocab]``
        each new token was chosen from (row ``i`` predicts new token ``i``; after a row's end token
        its tokens repeat the end token while its logits stay the model's), which are the model's
        teacher-forced predictions of its own output, with no second forward.

        Example:
            >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
            >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
            >>> model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4).shape
            torch.Size([1, 7])
        """
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        eos = self.end_tokens(eos_token_id)  # checked before the towers run
        if cuda_graph is not None and not isinstance(cuda_graph, bool):
            raise TypeError(f"cuda_graph must be None (capture where possible), True or False; got {cuda_graph!r}")
        llm = decoder_inputs(self, input_ids, layout=layout, **inputs)
        if bool((llm.attention_mask[:, -1] == 0).any()):
            raise ValueError("generate needs left padding (the last column must be real tokens for every row)")
        if not isinstance(return_logits, bool):
            raise TypeError(f"return_logits must be True or False; got {return_logits!r}")
        return greedy_decode(self, llm, max_new_tokens, eos, forward_last, cuda_graph, keep_logits=return_logits)

    def generate_with_cache(
        self,
        inputs: Any,
        max_new_tokens: int = 32,
        *,
        names_filter: NamesFilter = None,
        device: str | torch.device | None = None,
        concat: bool = True,
        eos_token_id: int | list[int] | None = None,
    ) -> tuple[Tensor, Any]:
        """Greedy generation that caches activations: one :class:`AVActivationCache` with the LLM
        activations concatenated over the steps (``concat=True``; its layout marks the generated
        positions) or a list of caches, one per forward (see :func:`cached_generation`).

        Example:
            >>> tokens, cache = model.generate_with_cache(inputs, 20, names_filter=lambda n: "resid_post" in n)  # doctest: +SKIP
            >>> cache.select("blocks.3.hook_resid_post", "generated").shape  # doctest: +SKIP
        """
        return cached_generation(self, inputs, max_new_tokens, names_filter=names_filter, device=device,
                                 concat=concat, eos_token_id=eos_token_id)


__all__ = ["Generation", "NamesFilter", "cached_generation", "check_eos_token_id", "check_max_new_tokens"]
