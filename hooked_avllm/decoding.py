"""Greedy decoding over a static KV cache, eager or captured as one CUDA graph per step.

Every generation prefills the prompt into preallocated key/value buffers
(:class:`~hooked_avllm.components.kv_cache.StaticKVCache`), so memory does not grow token by
token. The decoding steps then run one of two ways:

* **captured** (on a GPU, by default): one step (embedding, every block, the final norm, the
  unembedding, the argmax and the end-token bookkeeping) is recorded once as a CUDA graph and
  replayed per token; its inputs live in static buffers (the token, the position, the rotary angles
  of every step, the key mask). Replaying skips Python, hook points and kernel launches, which is
  what a decoding step costs at batch 1. Captured graphs are kept per (batch, buffer length, steps,
  edited layers) and reused by later calls, so only the first call of a shape pays the capture.
  Attention edits that declare ``decode_invariant`` (knockout rules, token dropping: their
  blocked edges for a generated query depend only on the key kinds) are captured too: their masks
  are computed once per call into static buffers, and each step unblocks its own position.
* **eager** (on the CPU; and whenever a Python hook watches a decoding-time hook point, an edit is
  not decode-invariant, the model is split over devices, or ``cuda_graph=False``): the step runs
  through ``run_decoder`` as a plain forward, so hooks fire at every step with
  ``model.forward_context.step`` telling which. A hook is Python and may do anything (append to a
  list, read ``forward_context``), so it cannot be recorded once and replayed: such a run is eager
  for the whole generation, and still gets the static cache.

Hooks marked ``graph_safe`` (pure tensor work on the step's static buffers, e.g. the attention-share
reductions) do not force eager steps: they run while the step is recorded and are replayed with it.
One that also names what it records (``graph_key``) keeps its outputs in the captured decoder
(:attr:`CapturedDecoder.outputs`), so a later call whose hooks have equal keys replays the same
graph instead of recording another (``hook.graph_key`` is part of the graph's cache key).

Both paths produce the same tokens (checked on a GPU: identical tokens, logits within bf16 noise;
the CPU tests run the eager path).

Example:
    >>> from hooked_avllm import AVLLMConfig, HookedAVLLM
    >>> model = HookedAVLLM.from_config(AVLLMConfig.tiny())
    >>> model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, cuda_graph=False).shape
    torch.Size([1, 7])
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.components.hook_checks import graph_safe_hooks_only
from hooked_avllm.components.hook_state import watched
from hooked_avllm.components.kv_cache import StaticKVCache
from hooked_avllm.components.rotary import Rotary
from hooked_avllm.edits import RowEdits
from hooked_avllm.forward_context import ForwardContext
from hooked_avllm.inputs.layout import rope_deltas
from hooked_avllm.vocabulary import GENERATED

BUCKET = 256  # captured buffers are this many positions longer at most, so nearby lengths share a graph
KEPT_GRAPHS = 4  # captured decoders kept per model (each holds its KV buffers)
CHECK_EVERY = 8  # replays between host checks of "every row has ended"


Prefill = Callable[[list[StaticKVCache]], Tensor]  # writes the prompt into the caches -> last position's logits


def greedy_decode(model: Any, llm: Any, max_new_tokens: int, eos: Int[Tensor, " n_end"], forward_last: bool,
                  cuda_graph: bool | None, prefill: Prefill | None = None, keep_logits: bool = False
                  ) -> Int[Tensor, "batch pos_plus_new"] | tuple[Int[Tensor, "batch pos_plus_new"], Float[Tensor, "batch new vocab"]]:
    """Prefill ``llm`` (the decoder inputs) into a static KV cache and decode greedily (see the module
    docstring); ``cuda_graph``: ``None`` captures where it can, ``True`` insists (raises where it
    cannot), ``False`` runs eagerly. ``prefill`` replaces the plain prefill of the whole prompt
    (:func:`decode_conditions` shares one prefix among conditions). ``keep_logits`` also returns the
    float32 logits each new token was chosen from (row ``i`` predicts new token ``i``: the model's
    teacher-forced prediction of its own caption, with no second forward)."""
    eos = eos.to(llm.input_ids.device)
    prefill = prefill or _plain_prefill(model, llm)
    model._last_decoder = None  # the captured decoder this generation ran on (graph-safe hooks read their outputs there)
    reason = _why_not_captured(model, llm, forward_last)
    if cuda_graph and reason:
        raise ValueError(f"cuda_graph=True, but this generation cannot be captured: {reason}; pass cuda_graph=None "
                         "(capture where possible) or False")
    if cuda_graph is False or reason or getattr(model, "_capture_failed", False):
        return _eager_decode(model, llm, max_new_tokens, eos, forward_last, prefill, keep_logits)
    try:
        return _captured_decode(model, llm, max_new_tokens, eos, prefill, keep_logits=keep_logits)
    except _CaptureError as error:
        if cuda_graph:
            raise
        hooked = _has_step_hooks(model)  # a graph-safe hook that is not: only generations with it run eagerly
        if not hooked:
            model._capture_failed = True
        when = "with these hooks" if hooked else "from now on"
        warnings.warn(f"generation runs eagerly {when}: capturing the decoding step failed ({error.__cause__!r})",
                      RuntimeWarning, stacklevel=3)
        return _eager_decode(model, llm, max_new_tokens, eos, forward_last, prefill, keep_logits)


def _plain_prefill(model: Any, llm: Any) -> Prefill:
    return lambda caches: model.run_decoder(**llm.decoder_kwargs(), return_type="logits", kv_caches=caches,
                                            last_logits_only=True)


# ----------------------------------------------------------------------------------- conditions

MAX_CONDITION_ROWS = 64  # rows decoded together when conditions run as one batch


def decode_conditions(model: Any, llm: Any, edits: list[Any], max_new_tokens: int, eos: Tensor,
                      cuda_graph: bool | None) -> list[Tensor] | None:
    """Greedy generation of the same inputs under several attention edits (``None``: none), sharing
    the work that does not change: the towers ran once (``llm``), the prompt up to its last
    position is prefilled once without edits, and the conditions decode side by side as blocks
    of rows of one batch (at most :data:`MAX_CONDITION_ROWS` rows at a time), each block under its
    own edit (:class:`~hooked_avllm.edits.RowEdits`). The last prompt position runs per block, so
    edits of it (``last_prompt_as_generated``) are exact.

    Returns one ``[batch, pos + new]`` tensor per condition, as ``generate`` under that edit alone
    gives it (each block stops where its own rows have ended), or ``None`` when the prompt itself
    is edited before its last position (or an edit is already active): the caller then generates
    per condition.
    """
    batch, n_prompt = llm.input_ids.shape
    if model._attention_edits or not all(_prefix_untouched(model, llm, e) for e in edits if e is not None):
        return None
    with _edits_paused(model):
        prefix = _allocate_caches(model, batch, max(n_prompt - 1, 1))
        if n_prompt > 1:
            model.run_decoder(**llm.head(n_prompt - 1).decoder_kwargs(), return_type=None, kv_caches=prefix)
    per_group = max(1, MAX_CONDITION_ROWS // batch)
    out: list[Tensor] = []
    for start in range(0, len(edits), per_group):
        group = edits[start : start + per_group]
        rows = llm.repeat(len(group))
        with model.edit_attention(RowEdits(group, batch)):
            tokens = greedy_decode(model, rows, max_new_tokens, eos, False, cuda_graph,
                                   prefill=_shared_prefill(model, rows, prefix, len(group), n_prompt))
        for block in tokens.split(batch):
            new = block[:, n_prompt:]
            out.append(block[:, : n_prompt + _kept(new, eos.to(new.device))])
    return out


def _prefix_untouched(model: Any, llm: Any, edit: Any) -> bool:
    """Whether ``edit`` leaves every query before the prompt's last position alone (checked on the
    prompt's kinds, as its first forward would: an edit that checks its inputs does it here)."""
    n_prompt = llm.input_ids.shape[1]
    if hasattr(edit, "bind"):
        edit.bind(model)
    context = ForwardContext(llm.kinds, past=0, n_new=n_prompt, step=0, n_prompt=n_prompt)
    for layer in range(len(model.blocks)):
        blocked = edit.blocked(layer, context)
        if blocked is not None and bool(blocked[:, : n_prompt - 1].any()):
            return False
    return True


@contextmanager
def _edits_paused(model: Any) -> Iterator[None]:
    saved = list(model._attention_edits)
    model._attention_edits.clear()
    try:
        yield
    finally:
        model._attention_edits.extend(saved)


def _shared_prefill(model: Any, rows: Any, prefix: list[StaticKVCache], n_blocks: int, n_prompt: int) -> Prefill:
    """Copy the shared prefix into every block's rows, then run the last prompt position of all rows
    under their edits (the decoding steps' first forward)."""

    def prefill(caches: list[StaticKVCache]) -> Tensor:
        known = n_prompt - 1
        for cache, shared in zip(caches, prefix):
            if known:
                cache.k[:, :, :known] = shared.k[:, :, :known].repeat(n_blocks, 1, 1, 1)
                cache.v[:, :, :known] = shared.v[:, :, :known].repeat(n_blocks, 1, 1, 1)
            cache.length = known
        last = slice(known, n_prompt)
        return model.run_decoder(rows.embeds[:, last], rows.position_ids[..., last], rows.attention_mask, "logits", caches,
                                 rows.kinds, 0, n_prompt, last_logits_only=True)

    return prefill


# ----------------------------------------------------------------------------------- eager


def _eager_decode(model: Any, llm: Any, max_new_tokens: int, eos: Tensor, forward_last: bool, prefill: Prefill,
                  keep_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The step loop through ``run_decoder`` (hooks fire every step), over a static KV cache."""
    input_ids, attention_mask, kinds = llm.input_ids, llm.attention_mask, llm.kinds
    deltas = rope_deltas(llm.position_ids, attention_mask)  # a new token at real index n gets position n + delta
    caches = _allocate_caches(model, input_ids.shape[0], input_ids.shape[1] + max_new_tokens + int(forward_last))
    logits = prefill(caches)
    eos = eos.to(input_ids.device)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens = input_ids
    generated = torch.full_like(kinds[:, :1], GENERATED)
    rows = llm.position_ids.shape[0]
    chosen_from: list[Tensor] = []  # [batch, vocab] per new token, with keep_logits
    for step in range(1, max_new_tokens + 1):
        if keep_logits:
            chosen_from.append(logits[:, -1].float())
        next_token = logits[:, -1].argmax(-1).to(input_ids.device)  # the unembedding may sit on another device
        if eos.numel():
            next_token = torch.where(done, eos[0], next_token)
        tokens = torch.cat((tokens, next_token[:, None]), dim=1)
        attention_mask = torch.cat((attention_mask, torch.ones_like(attention_mask[:, :1])), dim=1)
        kinds = torch.cat((kinds, generated), dim=1)
        if eos.numel():
            done = done | torch.isin(next_token, eos)
        last = step == max_new_tokens or (eos.numel() and bool(done.all()))
        if last and not forward_last:
            break  # the last token needs no forward of its own
        step_pos = (attention_mask.sum(-1, keepdim=True) - 1 + deltas.to(attention_mask.device)).expand(-1, 1)
        logits = model.run_decoder(model.embed(next_token[:, None]), step_pos[None].expand(rows, -1, -1), attention_mask,
                                   "logits", caches, kinds, step, llm.n_prompt, last_logits_only=True)
        if last:
            break
    if keep_logits:
        return tokens, torch.stack(chosen_from, dim=1).to(tokens.device)
    return tokens


def _allocate_caches(model: Any, batch: int, capacity: int) -> list[StaticKVCache]:
    dtype, device = model.embed.weight.dtype, model.embed.weight.device
    return [StaticKVCache.allocate(batch, block.attn.n_kv_heads, capacity, block.attn.d_head, dtype,
                                   block.attn.qkv.weight.device if block.attn.qkv.weight.device.type != "meta" else device)
            for block in model.blocks]


# ----------------------------------------------------------------------------------- captured


class _CaptureError(RuntimeError):
    """Recording the decoding step failed (an operation that synchronises with the host...)."""


def _why_not_captured(model: Any, llm: Any, forward_last: bool) -> str | None:
    """Why this generation must run eagerly (``None``: it can be captured)."""
    device = llm.input_ids.device
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"the model runs on {device.type}, and CUDA graphs need a GPU"
    if getattr(model, "hf_device_map", None):
        return "the model is split over devices (device_map)"
    if forward_last:
        return "forward_last runs the last token too (caching activations while generating uses hooks)"
    hooked = [p for p in _decode_points(model) if watched(p) and not graph_safe_hooks_only(p)] + [
        m for m in model.blocks.modules() if getattr(m, "always_watched", False)]
    if hooked:
        name = next((n for n, p in model.hook_dict.items() if p is hooked[0]), type(hooked[0]).__name__)
        return f"a hook watches {name} (hooks are Python: they run at every step of an eager generation)"
    if any(getattr(b.attn, "force_explicit", False) or getattr(b.attn, "use_attn_result", False) for b in model.blocks):
        return "an attention layer computes explicit patterns or per-head results"
    odd = [e for e in model._attention_edits if not getattr(e, "decode_invariant", False)]
    if odd:
        return f"the attention edit {odd[0]!r} does not declare decode_invariant"
    return None


def _captured_decode(model: Any, llm: Any, max_new_tokens: int, eos: Tensor, prefill: Prefill,
                     record: bool = True, keep_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Decode through a :class:`CapturedDecoder` (``record=False``: its step runs as plain Python on
    the static buffers, the captured path's arithmetic without a graph; the CPU tests use it)."""
    batch, n_prompt = llm.input_ids.shape
    capacity = -(-(n_prompt + max_new_tokens) // BUCKET) * BUCKET
    edits = _decode_edit_masks(model, llm.kinds, n_prompt, capacity)
    make = lambda: CapturedDecoder(model, batch, capacity, max_new_tokens, eos.numel(), sorted(edits), record,  # noqa: E731
                                   keep_logits)
    hooks = _graph_hook_key(model)  # graph-safe hooks are recorded with the step
    if hooks is None:  # a hook that does not say what it records: a graph of its own, this call only
        return make().run(llm, eos, edits, prefill)
    key = (batch, llm.position_ids.shape[0], capacity, max_new_tokens, eos.numel(), tuple(sorted(edits)),
           model.embed.weight.dtype, llm.input_ids.device, keep_logits, hooks, record)
    decoders = model.__dict__.setdefault("_captured_decoders", {})
    decoder = decoders.pop(key, None) or make()
    decoders[key] = decoder  # most recently used last
    while len(decoders) > KEPT_GRAPHS:
        decoders.pop(next(iter(decoders)))
    return decoder.run(llm, eos, edits, prefill)


def _decode_points(model: Any) -> list[Any]:
    """The hook points a decoding step runs through."""
    modules = [model.hook_embed, *model.blocks.modules(), *model.ln_final.modules(), *model.unembed.modules()]
    return [m for m in modules if hasattr(m, "fwd_hooks")]


def _has_step_hooks(model: Any) -> bool:
    return any(watched(p) for p in _decode_points(model))


def _graph_hook_key(model: Any) -> tuple | None:
    """What the (graph-safe) hooks on decoding-time points record, as part of a captured graph's
    cache key: ``()`` without hooks, ``None`` when a hook has no ``graph_key``. A graph-safe hook
    with a ``graph_key`` keeps its outputs in :attr:`CapturedDecoder.outputs`, so a later call with
    hooks of equal keys replays the same graph and reads them there."""
    keys = []
    for index, point in enumerate(_decode_points(model)):
        if watched(point):
            hooks = tuple(getattr(h, "graph_key", None) for h in point.fwd_hooks)
            if any(k is None for k in hooks):
                return None
            keys.append((index, hooks))
    return tuple(keys)


def _decode_edit_masks(model: Any, kinds: Int[Tensor, "batch pos"], n_prompt: int, capacity: int
                       ) -> dict[int, Bool[Tensor, "batch capacity"]]:
    """Per layer, the keys a generated query may not see under the active edits (layers without
    any left out), from the prompt's kinds and generated kinds after it: the same for every step."""
    if not model._attention_edits:
        return {}
    full = torch.full((kinds.shape[0], capacity), GENERATED, dtype=kinds.dtype, device=kinds.device)
    full[:, :n_prompt] = kinds
    context = ForwardContext(full, past=n_prompt, n_new=1, step=1, n_prompt=n_prompt)
    masks = {}
    for layer in range(len(model.blocks)):
        edges = [e.blocked(layer, context) for e in model._attention_edits]
        edges = [e for e in edges if e is not None]
        if edges:
            masks[layer] = torch.stack([e[:, 0] for e in edges]).any(0)
    return masks


class CapturedDecoder:
    """Static buffers and one captured decoding step for a (batch, buffer length, steps) shape.

    :meth:`run` prefills eagerly into the buffers, then replays the step; the first run records it
    (after two warm-up steps on a side stream, as CUDA graphs need).
    """

    def __init__(self, model: Any, batch: int, capacity: int, max_new_tokens: int, n_eos: int, edit_layers: list[int],
                 record: bool = True, keep_logits: bool = False):
        device, dtype = model.embed.weight.device, model.embed.weight.dtype
        self.model, self.capacity, self.max_new_tokens, self.record = model, capacity, max_new_tokens, record
        self.kinds = torch.full((batch, capacity), GENERATED, dtype=torch.long, device=device)  # every key's kind
        self.n_prompt = 0
        self.caches = _allocate_caches(model, batch, capacity)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)  # the token this step reads
        self.step = torch.zeros(1, dtype=torch.long, device=device)  # 0 for the step after the prefill
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # its key position
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.out = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)  # token s + 1 at column s
        # with keep_logits: the float32 logits token s + 1 was chosen from, at column s
        self.out_logits = (torch.zeros(batch, max(max_new_tokens - 1, 1), model.unembed.weight.shape[0], device=device)
                           if keep_logits else None)
        self.eos = torch.full((max(n_eos, 1),), -1, dtype=torch.long, device=device)  # -1: never produced
        self.key_mask = torch.full((batch, 1, 1, capacity), float("-inf"), dtype=dtype, device=device)
        self.edit_masks = {layer: torch.zeros(batch, 1, 1, capacity, dtype=dtype, device=device) for layer in edit_layers}
        self.cos = self.sin = None  # [batch, max_new_tokens, d]: allocated at the first run (the scheme's width)
        self.outputs: dict[Any, Tensor] = {}  # static outputs of graph-safe hooks, by their graph_key
        self.replays = 0
        self.upcast = False
        self.graph: torch.cuda.CUDAGraph | None = None

    def run(self, llm: Any, eos: Tensor, edits: dict[int, Tensor], prefill: Prefill) -> Tensor | tuple[Tensor, Tensor]:
        self.model._last_decoder = weakref.ref(self)
        for cache in self.caches:
            cache.reset()
        logits = prefill(self.caches)
        first_logits = logits[:, -1].float()
        first = logits[:, -1].argmax(-1).to(llm.input_ids.device)
        self._load(llm, first, eos, edits)
        for cache in self.caches:
            cache.capture_at(self.position, self.key_mask)
        if self.graph is None and self.record:
            self._record(llm, first, eos, edits)
        tokens = [first[:, None]]
        replays = 0
        while replays < self.max_new_tokens - 1:
            if replays % CHECK_EVERY == 0 and eos.numel() and bool(self.done.all()):
                break
            self.graph.replay() if self.record else self._step_in_context()
            replays += 1
        self.replays = replays
        tokens.append(self.out[:, :replays])
        new = torch.cat(tokens, dim=1)
        kept = _kept(new, eos)
        out = torch.cat((llm.input_ids, new[:, :kept]), dim=1)
        if self.out_logits is None:
            return out
        chosen_from = torch.cat((first_logits[:, None].to(self.out_logits.device), self.out_logits[:, :replays]), dim=1)
        return out, chosen_from[:, :kept].clone().to(out.device)

    def _load(self, llm: Any, first: Tensor, eos: Tensor, edits: dict[int, Tensor]) -> None:
        """The per-call inputs into the static buffers (prefill written, first token chosen)."""
        n_prompt = self.n_prompt = llm.input_ids.shape[1]
        self.kinds.fill_(GENERATED)
        self.kinds[:, :n_prompt] = llm.kinds
        self.token.copy_(first[:, None])
        self.step.zero_()
        self.position.fill_(n_prompt)
        self.eos.fill_(-1)
        self.eos[: eos.numel()] = eos
        self.done.copy_(torch.isin(first, eos) if eos.numel() else torch.zeros_like(self.done))
        self.out.zero_()
        self.key_mask.fill_(float("-inf"))
        self.key_mask[:, 0, 0, :n_prompt].masked_fill_(llm.attention_mask.bool(), 0.0)
        for layer, blocked in edits.items():
            self.edit_masks[layer].zero_().masked_fill_(blocked[:, None, None, :], float("-inf"))
        rotary = self._rotary(llm)
        if self.cos is None:
            self.cos, self.sin, self.upcast = torch.empty_like(rotary.cos), torch.empty_like(rotary.sin), rotary.upcast
        self.cos.copy_(rotary.cos)
        self.sin.copy_(rotary.sin)

    def _rotary(self, llm: Any) -> Rotary:
        """The rotary angles of every decoding step: step s (0-based) reads the token at real
        index n_real + s, whose position is n_real + s + delta (each row's rope delta)."""
        mask = llm.attention_mask
        deltas = rope_deltas(llm.position_ids, mask).to(mask.device)  # [batch, 1]
        steps = torch.arange(self.max_new_tokens, device=mask.device)[None, :]
        positions = mask.sum(-1, keepdim=True) + deltas + steps  # [batch, steps]
        rows = llm.position_ids.shape[0]
        return self.model.architecture.rotary(self.model.cfg, positions[None].expand(rows, -1, -1))

    def _step_in_context(self) -> None:
        """:meth:`_step` with ``model.forward_context`` naming this decoder (for graph-safe hooks)."""
        model = self.model
        model._forward_context = ForwardContext(self.kinds, past=self.n_prompt, n_new=1, step=1, n_prompt=self.n_prompt,
                                                decoder=self)
        try:
            self._step()
        finally:
            model._forward_context = None

    def _step(self) -> None:
        """One decoding step on the static buffers (what the graph records)."""
        model = self.model
        rotary = Rotary(self.cos.index_select(1, self.step), self.sin.index_select(1, self.step), self.upcast)
        self.key_mask.index_fill_(-1, self.position, 0.0)
        resid = model.hook_embed(model.embed(self.token))
        for i, block in enumerate(model.blocks):
            edit = self.edit_masks.get(i)
            if edit is not None:  # a query always keeps its own key
                edit = edit.index_fill(-1, self.position, 0.0)
            resid = block(resid, rotary=rotary, causal=True, key_valid=None, kv_cache=self.caches[i], additive_mask=edit)
        logits = model.unembed(model.ln_final(resid))[:, -1]
        if self.out_logits is not None:
            self.out_logits.index_copy_(1, self.step, logits.float()[:, None])
        token = torch.where(self.done, self.eos[0], logits.argmax(-1))
        self.done |= torch.isin(token, self.eos)
        self.out.index_copy_(1, self.step, token[:, None])
        self.token.copy_(token[:, None])
        self.step += 1
        self.position += 1

    def _record(self, llm: Any, first: Tensor, eos: Tensor, edits: dict[int, Tensor]) -> None:
        """Warm up on a side stream, restore the inputs, record one step."""
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.no_grad():
                for _ in range(2):
                    self._step_in_context()
            torch.cuda.current_stream().wait_stream(stream)
            self._load(llm, first, eos, edits)  # the warm-up advanced them; its KV writes are masked and overwritten
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                self._step_in_context()
            self.graph = graph
        except Exception as error:  # noqa: BLE001 - any failure to record means: decode eagerly
            raise _CaptureError("capture failed") from error


def _kept(new: Int[Tensor, "batch new"], eos: Tensor) -> int:
    """How many new tokens the eager loop keeps: up to the step where every row has produced an end
    token (all of them when some row never does)."""
    if not eos.numel():
        return new.shape[1]
    ended = torch.isin(new, eos.to(new.device)).int().cummax(dim=1).values.bool().all(0)  # [new]: every row ended by then
    hits = ended.nonzero()
    return int(hits[0]) + 1 if len(hits) else new.shape[1]


__all__ = ["CapturedDecoder", "decode_conditions", "greedy_decode"]
