"""Attention share per modality (E1): for chosen query positions, the share of attention each kind
of key position receives, per layer and head, also during generation.

Inside each layer's ``hook_rot_q``/``hook_rot_k`` hooks only the attention rows of the chosen
queries are computed (with the model's causal, padding and knockout masks) and reduced at once
(``rows @ one_hot(key kinds)``): the layer itself keeps its fused SDPA path, no full pattern is
ever formed, and during cached decoding each row is a single query. Key kinds are ``text`` (the prompt's text, bracket tokens included), ``audio``,
``video``, ``image`` and ``generated``; for every query they sum to 1.

Example:
    >>> shares = attention_share(model, inputs, max_new_tokens=50)   # generated tokens as queries  # doctest: +SKIP
    >>> shares.mean()            # [layer, kind], averaged over heads, queries and clips          # doctest: +SKIP
    >>> shares.plot("share.png")                                                              # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.analysis.arguments import check_layers, check_modality_present, held_kinds
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.analysis.runner import SweepUnit, batch_rows, input_ids_of, left_padded_batches, offset_column, run_sweep
from hooked_avllm.inputs.layout import carried_layout
from hooked_avllm.inputs.select import position_mask
from hooked_avllm.vocabulary import GENERATED, KINDS, PADDING

SHARE_KINDS = KINDS[:5]  # padding keys get no attention


@dataclass
class AttentionShare:
    """Shares ``values[query, layer, head, kind]`` with each query's ``batch`` row, sequence
    ``position`` and decoding ``step`` (0: a prompt position, k: the token fed at step k).

    ``kinds`` names the last axis (text, audio, video, image, generated).
    """

    values: Float[Tensor, "query layer head kind"]
    batch: Int[Tensor, "query"]
    position: Int[Tensor, "query"]
    step: Int[Tensor, "query"]
    layers: list[int]
    kinds: tuple[str, ...] = SHARE_KINDS

    def within_clips(self, attention_mask: Int[Tensor, "batch pos"]) -> "AttentionShare":
        """The result of a left-padded batch of clips as each clip alone gives it: positions counted
        from each row's first real token, queries ordered by row, then position."""
        padding = (attention_mask == 0).sum(-1).cpu()  # left padding per row
        position = self.position - padding[self.batch]
        order = torch.argsort(self.batch * (int(position.max()) + 1) + position, stable=True)
        return AttentionShare(self.values[order], self.batch[order], position[order], self.step[order], self.layers,
                              self.kinds)

    @classmethod
    def concat(cls, parts: Sequence["AttentionShare"], rows: Sequence[int]) -> "AttentionShare":
        """One result from several runs; the batch rows of run i are numbered after those of runs < i."""
        offsets = [sum(rows[:i]) for i in range(len(parts))]
        return cls(
            torch.cat([p.values for p in parts]),
            torch.cat([p.batch + offset for p, offset in zip(parts, offsets)]),
            torch.cat([p.position for p in parts]),
            torch.cat([p.step for p in parts]),
            parts[0].layers,
            parts[0].kinds,
        )

    def per_clip(self) -> Float[Tensor, "clip layer kind"]:
        """Mean over heads and queries for each batch row (clip)."""
        rows = sorted(set(self.batch.tolist()))
        head_mean = self.values.mean(2)  # [query, layer, kind]
        return torch.stack([head_mean[self.batch == b].mean(0) for b in rows])

    def mean(self) -> Float[Tensor, "layer kind"]:
        """Mean over heads and queries, then over clips (each clip weighs the same)."""
        return self.per_clip().mean(0)

    def table(self, by_head: bool = False) -> Any:
        """Tidy DataFrame: clip, layer, (head,) kind, share (mean over that clip's queries)."""
        import pandas as pd

        rows = []
        for clip in sorted(set(self.batch.tolist())):
            chosen = self.values[self.batch == clip].mean(0)  # [layer, head, kind]
            for li, layer in enumerate(self.layers):
                heads = range(chosen.shape[1]) if by_head else [None]
                for h in heads:
                    share = chosen[li, h] if h is not None else chosen[li].mean(0)
                    for k, kind in enumerate(self.kinds):
                        row = {"clip": clip, "layer": layer, "kind": kind, "share": float(share[k])}
                        if h is not None:
                            row["head"] = h
                        rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, path: Any = None, kinds: Sequence[str] | None = None, title: str | None = None) -> Any:
        """Share per layer, one line per kind (the mean over heads and queries, then over clips),
        with a shaded band from the minimum to the maximum over clips (over queries when there is
        one clip); the legend and the caption under the plot say which, and over how many."""
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator

        plt = pyplot()
        per = self.per_clip().numpy()  # [clip, layer, kind]
        n_clips = per.shape[0]
        if n_clips == 1:
            per = self.values.mean(2).numpy()  # [query, layer, kind]
        over = f"{n_clips} clips" if n_clips > 1 else f"the {per.shape[0]} queries of the one clip"
        kinds = [k for k in (kinds or self.kinds) if k in self.kinds]
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        mean = self.mean().numpy()
        for kind in kinds:
            k = self.kinds.index(kind)
            if not per[:, :, k].any():
                continue
            line = ax.plot(self.layers, mean[:, k], marker=".", label=kind)[0]
            ax.fill_between(self.layers, per[:, :, k].min(0), per[:, :, k].max(0), alpha=0.15, color=line.get_color())
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(color="grey", alpha=0.25))
        labels.append(f"shaded: min-max over {over}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        ax.set_xlabel("layer")
        ax.set_ylabel("attention share")
        ax.set_ylim(0, 1)
        ax.legend(handles, labels, fontsize=8)
        ax.set_title(title or "Attention share per modality")
        fig.text(0.01, -0.02, f"Lines: each key kind's share of the queries' attention, averaged over heads and "
                 f"queries, then over clips ({n_clips}); shaded: the minimum to the maximum over {over}.",
                 fontsize=7, ha="left", va="top", wrap=True)
        return save(fig, path)


class _ShareRecorder:
    """Hooks that compute, per layer, the attention rows of the selected queries only and reduce
    them to shares; the layer's own attention keeps its fused SDPA path.

    ``hook_rot_q`` gives this forward's rotated queries; ``hook_rot_k`` its rotated keys, kept per
    layer across decoding steps (a copy of the KV cache's keys). A selected query's row is
    ``softmax(q k^T * scale + mask)`` with the model's causal, padding and attention-edit masks,
    computed as the explicit attention path does.
    """

    def __init__(self, model: Any, layers: list[int], prompt_queries: Tensor | None, decode_queries: bool,
                 last_prompt_as_generated: bool, room: int = 0):
        self.model = model
        self.room = room  # generated positions to allocate key storage for
        self.all_rows = False  # this forward is a decoding step (every row's one query is selected)
        self.neg: Tensor | None = None  # that step's additive mask, [batch * kv_head, group, key]
        self.layers = layers
        self.prompt_queries = prompt_queries  # [batch, prompt_pos] bool, or None
        self.decode_queries = decode_queries
        self.last_prompt_as_generated = last_prompt_as_generated
        self.chunks: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # values [q, L, H, K], batch, pos, step
        self.current: Tensor | None = None  # [query, layer, head, kind] of the current forward
        self.onehot: Tensor | None = None  # [batch, key, kind] of the current forward
        self.index: tuple[Tensor, Tensor] | None = None  # (rows, query positions within this forward)
        self.keys: dict[int, Tensor] = {}  # slot -> rotated keys so far [batch, kv_head, key, d_head]
        self.q: Tensor | None = None
        # captured steps write their shares [slot, step, batch, head, kind] into the decoder's outputs
        self._output_key = ("attention_share", tuple(layers))

    def hooks(self) -> list[tuple[str, Any]]:
        out = []
        for slot, layer in enumerate(self.layers):
            out.append((f"blocks.{layer}.attn.hook_rot_q", self._save_q(slot)))
            out.append((f"blocks.{layer}.attn.hook_rot_k", self._reduce(slot, layer)))
            out.append((f"blocks.{layer}.attn.hook_z", self._reduce_captured(slot, layer)))
        return out

    def _save_q(self, slot: int):
        def fn(q: Tensor, hook: Any) -> None:  # q [batch, pos, head, d_head]
            context = self.model.forward_context
            if slot == 0 and context.decoder is None:
                self._start(context, q)
            self.q = q
            return None

        fn.graph_safe = True  # in a captured step it only keeps q (see _reduce)
        fn.graph_key = ("attention_share.q", slot)
        return fn

    def _reduce(self, slot: int, layer: int):
        def fn(k: Tensor, hook: Any) -> None:  # k [batch, pos, kv_head, d_head]
            context = self.model.forward_context
            if context.decoder is not None:  # a captured step reduces at hook_z, once the cache holds this key
                return None
            keys = self._store_keys(slot, k, context)
            if self.index is not None:
                self.current[:, slot] = self._shares(layer, context, keys)
                if slot == len(self.layers) - 1:
                    self._finish(context)
            return None

        fn.graph_safe = True  # in a captured step it writes into static buffers, indexed by the step tensor
        fn.graph_key = (self._output_key, slot, layer)  # a later call with these layers replays the same graph
        return fn

    def _reduce_captured(self, slot: int, layer: int):
        def fn(z: Tensor, hook: Any) -> None:  # z [batch, pos, head, d_head]: the layer's attention is done
            context = self.model.forward_context
            if context.decoder is not None:
                self._captured_shares(slot, layer, context)
            return None

        fn.graph_safe = True
        fn.graph_key = (self._output_key, "z", slot, layer)
        return fn

    def _captured_shares(self, slot: int, layer: int, context: Any) -> None:
        """A captured decoding step (``context.decoder``'s static buffers): every row's generated
        query against the layer's whole KV buffer (the attention has just written this step's key
        into it), through the step's key and edit masks. Each layer writes its shares into a static
        ``[layer, batch, head, kind]`` buffer; the last one copies that to ``[:, step]`` of the
        static output. Pure tensor work on device tensors, so the graph replays it every step: three
        kernels per layer and one per step."""
        decoder = context.decoder
        decoded = decoder.outputs.get(self._output_key)
        if decoded is None:  # the decoder's own buffers: they outlive this call with the graph that writes them
            batch, n_heads = self.q.shape[0], self.q.shape[2]
            decoded = decoder.outputs[self._output_key] = torch.zeros(
                len(self.layers), decoder.max_new_tokens, batch, n_heads, len(SHARE_KINDS), device=self.q.device)
            decoder.outputs[(self._output_key, "step")] = torch.zeros(decoded[:, 0].shape, device=self.q.device)
        step_shares = decoder.outputs[(self._output_key, "step")]  # [layer, batch, head, kind]
        cache = decoder.caches[layer]
        keys, q, attn = cache.k, self.q[:, 0], self.model.blocks[layer].attn  # [batch, kv, key, d], [batch, head, d]
        batch, n_kv, n_keys, d_head = keys.shape
        group = q.shape[1] // n_kv
        if slot == 0:  # once per step, shared by every layer: the key kinds one-hot and the step's key mask
            self._step_onehot = torch.nn.functional.one_hot(decoder.kinds, len(KINDS))[..., : len(SHARE_KINDS)].float()
            self._step_mask = decoder.key_mask.to(q.dtype).expand(batch, n_kv, group, n_keys).reshape(batch * n_kv, group, n_keys)
        mask, onehot = self._step_mask, self._step_onehot  # [batch * kv, group, key] ([batch, 1, 1, key] opened at this step)
        edit = decoder.edit_masks.get(layer)
        if edit is not None:
            edit = edit.index_fill(-1, decoder.position, 0.0).to(q.dtype)
            mask = mask + edit.expand(batch, n_kv, group, n_keys).reshape(batch * n_kv, group, n_keys)
        scores = torch.baddbmm(mask, q.reshape(batch * n_kv, group, d_head),
                               keys.reshape(batch * n_kv, n_keys, d_head).transpose(1, 2), alpha=attn.scale)
        torch.bmm(torch.softmax(scores.view(batch, -1, n_keys), dim=-1, dtype=torch.float32), onehot, out=step_shares[slot])
        if slot == len(self.layers) - 1:
            decoded.index_copy_(1, decoder.step, step_shares[:, None])

    def _store_keys(self, slot: int, k: Tensor, context: Any) -> Tensor:
        """All rotated keys of this layer so far, ``[batch, kv_head, key, d_head]`` (a view: the store
        is allocated once with room for the generated tokens, so decoding copies only the new key)."""
        if context.past == 0:
            self.keys[slot] = k.new_empty(k.shape[0], k.shape[2], k.shape[1] + self.room, k.shape[3])
        store = self.keys[slot]
        end = context.past + k.shape[1]
        if end > store.shape[2]:  # more steps than announced: grow
            grown = store.new_empty(*store.shape[:2], end + self.room, store.shape[3])
            grown[:, :, : store.shape[2]] = store
            self.keys[slot] = store = grown
        store[:, :, context.past : end] = k.transpose(1, 2)
        return store[:, :, :end]

    def _shares(self, layer: int, context: Any, keys: Tensor) -> Tensor:
        """Shares ``[query, head, kind]`` of the selected queries at ``layer`` (keys ``[batch, kv, key, d]``)."""
        device = keys.device  # the layer's: a split model's layers sit on several devices (.to is free otherwise)
        rows, queries = (t.to(device) for t in self.index)
        attn = self.model.blocks[layer].attn
        n_kv, n_keys, d_head = keys.shape[1:]
        if self.all_rows:  # a decoding step: every row's single query; one fused product per layer
            q = self.q[:, 0]  # [batch, head, d_head]
            batch, n_heads = q.shape[:2]
            group = n_heads // n_kv
            if self.neg is None:  # the causal/padding mask of this step, shared by every layer
                blocked = (context.kinds.to(device) == PADDING)[:, None, None, :].expand(batch, n_kv, group, n_keys)
                self.neg = torch.zeros(blocked.shape, dtype=q.dtype, device=q.device).masked_fill_(blocked, float("-inf"))
                self.neg = self.neg.reshape(batch * n_kv, group, n_keys)
            scores = torch.baddbmm(self.neg.to(device), q.reshape(batch * n_kv, group, d_head),
                                   keys.reshape(batch * n_kv, n_keys, d_head).transpose(1, 2), alpha=attn.scale)
            scores = scores.view(batch, n_heads, n_keys)
            onehot = self.onehot.to(device)
        else:
            q, keys, kinds, onehot = self.q[rows, queries], keys[rows], context.kinds.to(device)[rows], self.onehot.to(device)[rows]
            n, n_heads = q.shape[:2]
            grouped = q.view(n, n_kv, n_heads // n_kv, d_head)
            scores = torch.einsum("nkgd,nksd->nkgs", grouped, keys).reshape(n, n_heads, n_keys) * attn.scale
            key_pos = torch.arange(n_keys, device=keys.device)
            allowed = (key_pos[None, :] <= (queries + context.past)[:, None]) & (kinds != PADDING)
            scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
        if self.model.has_attention_edits:
            edit = self.model.attention_edit_mask(layer, context, scores.dtype)  # [batch, 1, query, key] or None
            if edit is not None:
                scores = scores + edit.to(device)[rows, :, queries]
        shares = torch.bmm(torch.softmax(scores, dim=-1, dtype=torch.float32), onehot)
        return shares.to(self.current.device)

    def _start(self, context: Any, q: Tensor) -> None:
        """Once per forward (at the first watched layer): which queries, and the key kinds one-hot."""
        batch = context.kinds.shape[0]
        self.onehot = torch.nn.functional.one_hot(context.kinds, len(KINDS))[..., : len(SHARE_KINDS)].float()
        self.index = None
        self.neg = None
        self.all_rows = context.step > 0
        if context.step > 0:  # a decoding step: the single new position of every row
            if self.decode_queries:
                rows = torch.arange(batch, device=q.device)
                self.index = (rows, torch.zeros_like(rows))
        else:
            selected = self.prompt_queries
            if selected is None:
                selected = torch.zeros(batch, context.n_new, dtype=torch.bool)
            selected = selected.clone()
            if self.last_prompt_as_generated and self.decode_queries:
                selected[:, context.n_prompt - 1] = True
            if bool(selected.any()):
                self.index = torch.nonzero(selected.to(q.device), as_tuple=True)
        if self.index is not None:
            self.current = torch.zeros(len(self.index[0]), len(self.layers), q.shape[2], len(SHARE_KINDS),
                                       device=q.device)

    def _finish(self, context: Any) -> None:
        rows, queries = self.index
        step = torch.full_like(rows, context.step)
        self.chunks.append((self.current, rows, queries + context.past, step))
        self.index = None

    def _captured_chunks(self) -> None:
        """The captured steps' shares as chunks, as the eager steps would have appended them (read
        from the decoder this generation ran on: a graph recorded by an earlier call writes there too)."""
        ref = getattr(self.model, "_last_decoder", None)
        decoder = ref() if ref is not None else None  # the model keeps it (its hooks have a graph_key)
        decoded = decoder.outputs.get(self._output_key) if decoder is not None else None
        if decoded is None or not decoder.replays:
            return
        n_steps, batch = decoder.replays, decoded.shape[2]
        # replay s reads generated token s + 1 (decoding step s + 1), at position n_prompt + s; rows within each step
        values = decoded[:, :n_steps].permute(1, 2, 0, 3, 4).reshape(n_steps * batch, *decoded.shape[:1], *decoded.shape[3:])
        steps = torch.arange(n_steps, device=decoded.device).repeat_interleave(batch)
        rows = torch.arange(batch, device=decoded.device).repeat(n_steps)
        self.chunks.append((values.clone(), rows, decoder.n_prompt + steps, steps + 1))
        self.model._last_decoder = None

    def result(self, valid_until: Tensor | None = None) -> AttentionShare:
        self._captured_chunks()
        if not self.chunks:
            raise ValueError("no query position was selected; pass queries= (a mask, 'last', 'audio'...) or max_new_tokens")
        values = torch.cat([c[0] for c in self.chunks]).cpu()
        batch = torch.cat([c[1] for c in self.chunks]).cpu()
        position = torch.cat([c[2] for c in self.chunks]).cpu()
        step = torch.cat([c[3] for c in self.chunks]).cpu()
        if valid_until is not None:  # drop steps after a row's end token
            keep = step <= valid_until[batch]
            values, batch, position, step = values[keep], batch[keep], position[keep], step[keep]
        return AttentionShare(values, batch, position, step, self.layers)


def attention_share(
    model: Any,
    inputs: Any,
    *,
    queries: str | Sequence[str] | Tensor | None = None,
    max_new_tokens: int | None = None,
    last_prompt_as_generated: bool = True,
    layers: Sequence[int] | None = None,
    eos_token_id: int | list[int] | None = None,
    progress: bool = True,
    batch_size: int | None = None,
    distributed: bool | None = None,
    resume: str | os.PathLike | None = None,
) -> AttentionShare:
    """Attention share per key kind for chosen queries, per layer and head.

    With ``max_new_tokens`` the model generates greedily (KV cache) and every generated token is
    a query (plus the last prompt position, which predicts the first one, when
    ``last_prompt_as_generated``); steps after a row's end token are left out. ``queries`` picks
    prompt positions as queries (a modality name, ``"last"``, or a bool mask ``[batch, pos]``;
    see :func:`hooked_avllm.inputs.select.position_mask`) and needs the inputs' layout; a media kind
    that no row holds raises, rows that lack it are named in a warning. ``layers`` (default: all;
    negative counts from the end) are checked against the model's depth first (see
    :func:`hooked_avllm.analysis.arguments.check_layers`).

    Example:
        >>> shares = attention_share(model, inputs, max_new_tokens=50)   # doctest: +SKIP
        >>> shares.table().groupby(["layer", "kind"]).share.mean()       # doctest: +SKIP

    A list of inputs (one clip or one batch each) runs one after the other with a progress bar
    over the clips (through :func:`hooked_avllm.analysis.runner.run_sweep`); the result numbers
    the clips (batch rows) across the list. ``batch_size`` runs single clips that many at a time
    as one left-padded batch (one prefill and one captured decoding for the whole batch instead of
    one per clip); the result is the one-clip-at-a-time result (positions within each clip, queries
    in the same order), within float noise. Under ``torchrun`` each rank runs a
    contiguous block of the list and every rank returns the whole result (``distributed``: see
    :func:`hooked_avllm.parallel.active`; ``False`` runs the whole list in every process). A
    single input runs whole in every process. ``resume`` (a list only): a results folder where each
    clip's shares are written as they come (and its table rows as Parquet), read back instead of
    recomputed when the sweep is started again (:mod:`~hooked_avllm.analysis.sweep_store`).
    """
    layers = sorted(check_layers(model, layers, "attention_share: layers"))
    if queries is None and not max_new_tokens:
        raise ValueError("choose the queries: max_new_tokens=N (generated tokens) and/or queries='last' / a mask")
    if batch_size is not None and not isinstance(inputs, (list, tuple)):
        raise ValueError(f"attention_share: batch_size={batch_size!r} regroups a list of clips; pass a list of one-clip "
                         "inputs, or leave batch_size=None")
    if resume is not None and not isinstance(inputs, (list, tuple)):
        raise ValueError(f"attention_share: resume={str(resume)!r} keeps the results of a list of clips; pass a list, or "
                         "leave resume=None for a single input")
    if resume is not None and isinstance(queries, Tensor):
        raise ValueError("attention_share: resume= cannot record a query mask tensor in its folder; select queries by name "
                         "('last', 'audio'...) or leave resume=None")
    if batch_size is not None and isinstance(queries, Tensor):
        raise ValueError("attention_share: a query mask is [batch, pos] of the inputs as given, so it cannot follow clips "
                         "regrouped by batch_size; select queries by name ('last', 'audio'...) or leave batch_size=None")
    if isinstance(inputs, (list, tuple)):
        _check_query_modality(inputs, queries, row_name="clip")

        def one(unit: SweepUnit) -> tuple[AttentionShare, int]:
            share = _attention_share(model, unit.item, queries, max_new_tokens, last_prompt_as_generated, layers,
                                     eos_token_id)
            return (share.within_clips(unit.item.attention_mask) if batch_size is not None else share), unit.rows

        def unit_table(part: tuple[AttentionShare, int], unit: SweepUnit) -> Any:
            return offset_column(AttentionShare.concat([part[0]], [part[1]]).table(), "clip", unit.first)

        signature = {"queries": queries, "max_new_tokens": max_new_tokens, "layers": layers,
                     "last_prompt_as_generated": last_prompt_as_generated, "eos_token_id": eos_token_id}
        parts = run_sweep(one, inputs, tool="attention share", unit="clips", rows=batch_rows, progress=progress,
                          batch_size=batch_size, batch=left_padded_batches(model), distributed=distributed,
                          resume=resume, signature=signature, unit_table=unit_table)
        return AttentionShare.concat([share for share, _ in parts], [rows for _, rows in parts])
    _check_query_modality([inputs], queries, row_name="row")
    return _attention_share(model, inputs, queries, max_new_tokens, last_prompt_as_generated, layers, eos_token_id)


def _check_query_modality(items: Sequence[Any], queries: Any, row_name: str) -> None:
    """Queries named by a media kind the inputs lack select nothing: raise when no row (clip) holds
    it, warn naming those that lack it. Masks, ``"last"`` and inputs without a layout are not judged."""
    if queries is None or isinstance(queries, Tensor):
        return
    layouts = [carried_layout(item) for item in items]
    if layouts and all(layout is not None for layout in layouts):
        held = [h for layout in layouts for h in held_kinds(layout)]
        check_modality_present(held, queries, "attention_share", "queries", row_name=row_name)


def _attention_share(model: Any, inputs: Any, queries: Any, max_new_tokens: int | None, last_prompt_as_generated: bool,
                     layers: list[int], eos_token_id: Any) -> AttentionShare:
    """:func:`attention_share` on one input (one clip or batch), its arguments already checked."""
    prompt_queries = None
    if queries is not None:
        layout = carried_layout(inputs)
        if layout is None and not isinstance(queries, Tensor):
            raise ValueError("queries by name need prepared inputs with a layout (model.prepare); or pass a bool mask")
        if isinstance(queries, Tensor):
            prompt_queries = _checked_query_mask(inputs, queries)
        else:
            prompt_queries = position_mask(layout, queries).cpu()
    recorder = _ShareRecorder(model, layers, prompt_queries, bool(max_new_tokens), last_prompt_as_generated,
                              room=max_new_tokens or 0)
    hooks = recorder.hooks()
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        if max_new_tokens:
            tokens = model.generate(inputs, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
        else:
            model(inputs, return_type=None)
            tokens = None
    valid_until = None
    if tokens is not None:
        valid_until = _last_step(model, tokens, input_ids_of(inputs).shape[1], eos_token_id)
    return recorder.result(valid_until)


def _checked_query_mask(inputs: Any, queries: Tensor) -> Bool[Tensor, "batch pos"]:
    """A query mask ``[batch, pos]`` of the inputs' shape that selects no padding position (a
    padding query has no key to attend to: its shares would be NaN)."""
    ids = input_ids_of(inputs)
    shape = tuple(ids.shape) if isinstance(ids, Tensor) else None
    if queries.dtype != torch.bool:
        if queries.is_floating_point() or not bool(((queries == 0) | (queries == 1)).all()):
            raise TypeError(f"queries: a mask must be a bool tensor [batch, pos] (or 0/1 integers); got dtype {queries.dtype}")
        queries = queries.bool()
    if shape is not None and tuple(queries.shape) != shape:
        raise ValueError(f"queries: the mask has shape {tuple(queries.shape)} but the inputs are {shape} [batch, pos]")
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else getattr(inputs, "attention_mask", None)
    if isinstance(mask, Tensor):
        padded = queries.cpu() & (mask.cpu() == 0)
        if bool(padded.any()):
            where = padded.nonzero().tolist()[:4]
            raise ValueError(f"queries: the mask selects padding positions {where} (row, position), which attend to "
                             "nothing; select real positions only, e.g. queries=mask & (inputs.attention_mask == 1)")
    return queries.cpu()


def _last_step(model: Any, tokens: Tensor, n_prompt: int, eos_token_id: Any) -> Tensor:
    """Per row, the last decoding step whose query belongs to the caption (up to its end token)."""
    eos = model.end_tokens(eos_token_id)
    new = tokens[:, n_prompt:].cpu()
    last = torch.full((tokens.shape[0],), new.shape[1], dtype=torch.long)
    if eos.numel():
        is_end = torch.isin(new, eos)
        # step s's query predicts new token s (0-based); keep the steps up to the one that predicts the end token
        last = torch.where(is_end.any(1), is_end.float().argmax(1), last)
    return last


def shares_from_patterns(pattern: Float[Tensor, "batch head query key"],
                         key_kinds: Int[Tensor, "batch key"]) -> Float[Tensor, "batch head query kind"]:
    """Shares from a full pattern (for checking, or for patterns you already cached).

    Example:
        >>> p = torch.full((1, 1, 1, 4), 0.25)
        >>> shares_from_patterns(p, torch.tensor([[0, 1, 1, 2]]))[0, 0, 0, :3].tolist()
        [0.25, 0.5, 0.25]
    """
    onehot = torch.nn.functional.one_hot(key_kinds.long(), len(KINDS))[..., : len(SHARE_KINDS)].to(pattern.dtype)
    return torch.einsum("bhqk,bkc->bhqc", pattern, onehot)


__all__ = ["AttentionShare", "attention_share", "shares_from_patterns", "SHARE_KINDS", "GENERATED"]
