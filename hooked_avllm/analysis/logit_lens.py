"""Logit lens (PAPER.md E2): read the residual stream of chosen positions through the unembedding.

Every chosen hook (by default ``blocks.{l}.hook_resid_post`` of every layer) is projected at the
chosen positions (a bool mask, a modality such as ``"audio"``, or ``"last"``) through the final
norm and the unembedding (``apply_final_norm=True``) or through the unembedding alone (what the
study's code did). Only the top-k ids and probabilities survive, plus, if asked, the probability
and rank of ``track`` tokens (e.g. the true sound word): the full ``[layer, pos, vocab]`` tensor
(5 GB at 36 layers x 250 audio tokens x 151,936 ids in fp32) is never built, one hook and one
chunk of positions at a time.

Example:
    >>> inputs = model.prepare(video="clip.mp4", prompt="Describe what you see and hear.")  # doctest: +SKIP
    >>> lens = logit_lens(model, inputs, positions="audio", apply_final_norm=False, track=" drill")  # doctest: +SKIP
    >>> lens.table().query("rank == 0 and layer >= 30")  # doctest: +SKIP
    >>> lens.plot("lens.png")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_avllm.analysis.arguments import check_layers
from hooked_avllm.analysis.plotting import pyplot, save
from hooked_avllm.inputs.select import PositionsOrIndices as PositionsLike
from hooked_avllm.inputs.select import select_positions
from hooked_avllm.inputs.layout import carried_layout

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from hooked_avllm.model import HookedAVLLM

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by token_shift and heatmap)


def token_decoder(tokenizer: Any) -> Callable[[Sequence[int]], list[str]]:
    """A function ids -> strings (``tokenizer.decode`` of each id, memoised; ``str(id)`` without one).

    Example:
        >>> token_decoder(None)([5, 7])
        ['5', '7']
    """
    memo: dict[int, str] = {}

    def decode(ids: Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if i not in memo:
                if tokenizer is None:
                    memo[i] = str(i)
                else:
                    try:
                        memo[i] = tokenizer.decode([i])
                    except Exception:  # ids past the tokenizer's table (padded vocab rows)
                        memo[i] = f"<{i}>"
            out.append(memo[i])
        return out

    return decode


def token_ids_of(tokenizer: Any, tokens: int | str | Sequence[int | str]) -> tuple[list[int], list[str]]:
    """Ids and labels of tokens given as ids or strings (a string's first token, without special tokens).

    Example:
        >>> token_ids_of(None, [5, 7])
        ([5, 7], ['5', '7'])
    """
    if isinstance(tokens, (int, str)) or (isinstance(tokens, Tensor) and tokens.ndim == 0):
        tokens = [tokens]
    ids, labels = [], []
    for token in tokens:
        if isinstance(token, str):
            if tokenizer is None:
                raise ValueError(f"tracking {token!r} needs a tokenizer (model.tokenizer is None); pass token ids instead")
            encoded = tokenizer.encode(token, add_special_tokens=False)
            if not encoded:
                raise ValueError(f"{token!r} encodes to no token")
            ids.append(int(encoded[0]))
            labels.append(token)
        else:
            ids.append(int(token))
            labels.append(str(int(token)))
    return ids, labels


# ---------------------------------------------------------------------------------------------
# Hook names


def hook_names_for(model: "HookedAVLLM", hooks: str | Sequence[str] = "resid_post", layers: Sequence[int] | None = None) -> list[str]:
    """The hook names a lens reads, in order.

    ``hooks`` is a short name (``"resid_post"``, ``"resid_mid"``, ``"attn_out"``... -> ``blocks.{l}.hook_<name>``),
    a template with ``{l}`` (``"blocks.{l}.hook_resid_pre"``), one full hook name (``"hook_embed"``), a list of
    full names, or a regular expression matched against the model's hook names (``r"blocks\\.\\d+\\.hook_resid_(mid|post)"``).
    ``layers`` (default: all; negative counts from the end) fills templates and short names; it is
    checked against the model's depth (:func:`hooked_avllm.analysis.arguments.check_layers`: out of
    range, empty or repeated layers raise).

    Example:
        >>> hook_names_for(model, "resid_pre", layers=[0, -1])  # doctest: +SKIP
        ['blocks.0.hook_resid_pre', 'blocks.35.hook_resid_pre']
    """
    layer_list = check_layers(model, layers, "logit_lens: layers")
    known = model.hook_dict
    if isinstance(hooks, str):
        if "{l}" in hooks:
            names = [hooks.format(l=l) for l in layer_list]
        elif hooks in known:
            names = [hooks]
        elif f"blocks.0.hook_{hooks}" in known:
            names = [f"blocks.{l}.hook_{hooks}" for l in layer_list]
        elif f"blocks.0.{hooks}" in known:
            names = [f"blocks.{l}.{hooks}" for l in layer_list]
        else:
            try:
                pattern = re.compile(hooks)
            except re.error:
                pattern = None
            names = [name for name in known if pattern is not None and pattern.fullmatch(name)]
            if not names:
                raise ValueError(
                    f"no hook matches {hooks!r}; use a short name ('resid_post'), a template 'blocks.{{l}}.hook_resid_mid', "
                    "a full hook name, a list of names or a regular expression"
                )
            names.sort(key=lambda n: (int(_BLOCK.match(n).group(1)) if _BLOCK.match(n) else -1, n))
    else:
        names = list(hooks)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"the model has no hook {missing[0]!r} (e.g. 'blocks.0.hook_resid_post', 'hook_embed')")
    return names


def _layer_of(name: str) -> int:
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else -1


# ---------------------------------------------------------------------------------------------
# The result


@dataclass
class LogitLensResult:
    """Top-k readouts of ``hook_names`` at ``n_pos`` selected positions.

    ``layers[i]`` is the block of ``hook_names[i]`` (-1 for hooks outside the blocks, e.g.
    ``hook_embed``). Positions are listed row-major over ``(batch_index, positions)``. Ranks are
    0-based (0 = the top token). ``track_*`` are ``None`` unless ``track`` was given.
    """

    hook_names: list[str]
    layers: list[int]
    top_ids: Int[Tensor, "hook n_pos k"]
    top_probs: Float[Tensor, "hook n_pos k"]
    top_tokens: list[list[list[str]]]  # [hook][pos][rank]: decoded, or the id as text without a tokenizer
    batch_index: Int[Tensor, "n_pos"]
    positions: Int[Tensor, "n_pos"]
    kinds: list[str]  # modality of each selected position
    audio_time: Float[Tensor, "n_pos"]  # seconds; NaN off audio
    input_ids: Int[Tensor, "n_pos"]  # the token at each position (-1 where the layout has none)
    apply_final_norm: bool
    track_ids: list[int] | None = None
    track_labels: list[str] | None = None
    track_probs: Float[Tensor, "hook n_pos n_track"] | None = None
    track_ranks: Int[Tensor, "hook n_pos n_track"] | None = None

    @property
    def k(self) -> int:
        return self.top_ids.shape[-1]

    @property
    def n_pos(self) -> int:
        return self.top_ids.shape[1]

    def top1(self) -> list[list[str]]:
        """``[hook][pos]`` decoded top-1 tokens."""
        return [[ranks[0] for ranks in row] for row in self.top_tokens]

    def table(self) -> "pd.DataFrame":
        """Tidy table: one row per (hook, position, rank) with the token and its probability.

        Columns: hook, layer, batch, position, kind, audio_time, rank, token_id, token, prob.

        Example:
            >>> lens.table().query("rank == 0").pivot(index="layer", columns="position", values="token")  # doctest: +SKIP
        """
        import numpy as np
        import pandas as pd

        n_hook, n_pos, k = self.top_ids.shape
        hook_i, pos_i, rank_i = (a.ravel() for a in np.meshgrid(np.arange(n_hook), np.arange(n_pos), np.arange(k), indexing="ij"))
        return pd.DataFrame(
            {
                **self._where(hook_i, pos_i),
                "rank": rank_i,
                "token_id": self.top_ids.numpy().ravel(),
                "token": [tok for row in self.top_tokens for ranks in row for tok in ranks],
                "prob": self.top_probs.numpy().ravel(),
            }
        )

    def _where(self, hook_i: "np.ndarray", pos_i: "np.ndarray") -> dict:
        """The hook/layer/batch/position/kind/audio_time columns for flattened (hook, position) indices."""
        import numpy as np

        return {
            "hook": np.asarray(self.hook_names, dtype=object)[hook_i],
            "layer": np.asarray(self.layers)[hook_i],
            "batch": self.batch_index.numpy()[pos_i],
            "position": self.positions.numpy()[pos_i],
            "kind": np.asarray(self.kinds, dtype=object)[pos_i],
            "audio_time": self.audio_time.numpy()[pos_i],
        }

    def track_table(self) -> "pd.DataFrame":
        """One row per (hook, position, tracked token): its probability and 0-based rank.

        Columns: hook, layer, batch, position, kind, audio_time, track, token_id, prob, rank.
        """
        import numpy as np
        import pandas as pd

        if self.track_probs is None:
            raise ValueError("no tokens were tracked; pass track=[...] to logit_lens")
        n_hook, n_pos, n_track = self.track_probs.shape
        hook_i, pos_i, t_i = (a.ravel() for a in np.meshgrid(np.arange(n_hook), np.arange(n_pos), np.arange(n_track), indexing="ij"))
        return pd.DataFrame(
            {
                **self._where(hook_i, pos_i),
                "track": np.asarray(self.track_labels, dtype=object)[t_i],
                "token_id": np.asarray(self.track_ids)[t_i],
                "prob": self.track_probs.numpy().ravel(),
                "rank": self.track_ranks.numpy().ravel(),
            }
        )

    def plot(self, path: str | None = None, annotate_max: int = 32, max_width: float = 15.0) -> Any:
        """Heatmap of the top-1 probability per hook (rows) and position (columns), with the top-1
        token written in the cells: in every cell when at most ``annotate_max`` positions are
        shown, else in every k-th column (the title says which), so a long selection (250 audio
        tokens) still carries token labels. With tracked tokens, a second panel gives each tracked
        token's probability per hook (mean over positions solid, max dashed). The figure is at most
        ``max_width`` inches wide (1,800 px at the saved 120 dpi). Saves to ``path`` when given;
        returns the figure.

        Example:
            >>> logit_lens(model, inputs, positions="audio", track=[1234]).plot("lens.png")  # doctest: +SKIP
        """
        plt = pyplot()
        tracked = self.track_probs is not None
        n_hook, n_pos = self.top_ids.shape[:2]
        side = 4.0 if tracked else 0.0
        width = min(3.0 + 0.4 * min(n_pos, annotate_max), max_width - side)
        fig, axes = plt.subplots(
            1, 2 if tracked else 1, figsize=(width + side, max(3.0 if tracked else 2.0, 1.6 + 0.3 * n_hook)),
            gridspec_kw={"width_ratios": [width, side]} if tracked else None, squeeze=False,
        )
        ax = axes[0, 0]
        image = ax.imshow(self.top_probs[:, :, 0].numpy(), aspect="auto", cmap="Blues", vmin=0, vmax=1,
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, label="top-1 probability", fraction=0.03)
        labels = self._row_labels()
        ax.set_yticks(range(n_hook), labels)
        ax.set_ylabel("layer (resid after the block)" if all(l >= 0 for l in self.layers) else "hook")
        # write (and tick) the top-1 token at every k-th position: as many as fit at about 0.45 in each
        n_labels = max(1, min(annotate_max, n_pos, int(width / 0.45)))
        every = 1 if n_pos <= annotate_max else -(-n_pos // n_labels)
        ticks = list(range(0, n_pos, every))
        column = (width - 1.0) / max(n_pos, 1) * every  # inches per written label (the colour bar takes ~1 in)
        chars = int(min(8, max(3, column * 20)))  # a 6-7 pt character is about 0.05 in wide
        all_audio = bool(torch.isfinite(self.audio_time).all()) and n_pos > 0
        if all_audio:
            ax.set_xticks(ticks, [f"{float(self.audio_time[i]):.2f}" for i in ticks], rotation=90)
            ax.set_xlabel("audio time (s) of the position")
        else:
            ax.set_xticks(ticks, [f"{int(self.positions[i])}" for i in ticks], rotation=90)
            ax.set_xlabel("sequence position")
        top1 = self.top1()
        for h in range(n_hook):
            for p in ticks:
                prob = float(self.top_probs[h, p, 0])
                ax.text(p, h, top1[h][p].strip()[:chars] or repr(top1[h][p]), ha="center", va="center",
                        fontsize=6 if chars < 8 else 7, color="white" if prob > 0.5 else "black")
        norm = "final norm + unembedding" if self.apply_final_norm else "unembedding only"
        which = "" if every == 1 else f" (written at every {_ordinal(every)} of {n_pos} positions)"
        ax.set_title(f"logit lens ({norm}): top-1 token{which}", fontsize=10)
        if tracked:
            ax2 = axes[0, 1]
            x = list(range(n_hook))
            for t, label in enumerate(self.track_labels):
                line = ax2.plot(x, self.track_probs[:, :, t].mean(1).numpy(), label=f"{label!r} mean")[0]
                ax2.plot(x, self.track_probs[:, :, t].amax(1).numpy(), "--", color=line.get_color(), label=f"{label!r} max")
            step = max(1, n_hook // 12)
            shown = labels[::step]
            ax2.set_xticks(x[::step], shown, rotation=90 if len(shown) * max(map(len, shown)) > 40 else 0)
            ax2.set_xlabel(ax.get_ylabel())
            ax2.set_ylabel("probability")
            ax2.set_title(f"tracked tokens over {n_pos} positions", fontsize=10)
            ax2.legend(fontsize=7)
        fig.tight_layout()
        return save(fig, path)

    def _row_labels(self) -> list[str]:
        """A hook's label: its block for ``blocks.{l}.hook_resid_post``, else the hook name (short)."""
        plain = all(name == f"blocks.{l}.hook_resid_post" for l, name in zip(self.layers, self.hook_names))
        if plain:
            return [str(l) for l in self.layers]
        return [name.replace("blocks.", "").replace("hook_", "") for name in self.hook_names]


def _ordinal(n: int) -> str:
    """``2`` -> ``"2nd"``, ``11`` -> ``"11th"``, ``23`` -> ``"23rd"``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------------------------------------
# The lens


@torch.no_grad()
def project_residual(
    model: "HookedAVLLM",
    resid: Float[Tensor, "n_pos d_model"],
    apply_final_norm: bool = True,
) -> Float[Tensor, "n_pos vocab"]:
    """Residual rows -> fp32 logits through ``ln_final`` (optional) and ``unembed``.

    Example:
        >>> project_residual(model, cache["resid_post", 3][0, -5:]).shape  # doctest: +SKIP
        torch.Size([5, 151936])
    """
    weight = model.unembed.weight
    x = resid.to(device=weight.device, dtype=weight.dtype)
    if apply_final_norm:
        x = model.ln_final(x)
    return model.unembed(x).float()


@torch.no_grad()
def lens_readout(
    model: "HookedAVLLM",
    resid: Float[Tensor, "n_pos d_model"],
    k: int = 5,
    apply_final_norm: bool = True,
    track_ids: Sequence[int] | None = None,
    chunk_size: int = 64,
) -> tuple[Int[Tensor, "n_pos k"], Float[Tensor, "n_pos k"], Float[Tensor, "n_pos n_track"] | None, Int[Tensor, "n_pos n_track"] | None]:
    """Top-k ids/probs (and tracked probs/ranks) of residual rows, ``chunk_size`` rows at a time.

    Only ``[chunk_size, vocab]`` logits exist at once; everything returned is on the CPU.

    Example:
        >>> ids, probs, _, _ = lens_readout(model, cache["resid_post", 20][cache.layout.audio], k=5)  # doctest: +SKIP
        >>> ids.shape  # [n_audio, 5]  # doctest: +SKIP
    """
    ids_out, probs_out, tprobs_out, tranks_out = [], [], [], []
    track = torch.as_tensor(list(track_ids), dtype=torch.long) if track_ids else None
    for start in range(0, resid.shape[0], chunk_size):
        logits = project_residual(model, resid[start : start + chunk_size], apply_final_norm)  # [chunk, vocab]
        log_probs = logits.log_softmax(-1)
        top_logp, top_ids = log_probs.topk(min(k, logits.shape[-1]), dim=-1)  # [chunk, k]
        ids_out.append(top_ids.cpu())
        probs_out.append(top_logp.exp().cpu())
        if track is not None:
            t = track.to(logits.device)
            tracked_logits = logits[:, t]  # [chunk, n_track]
            tprobs_out.append(log_probs[:, t].exp().cpu())
            tranks_out.append((logits[:, None, :] > tracked_logits[:, :, None]).sum(-1).cpu())  # [chunk, n_track]
    if not ids_out:
        empty = torch.zeros(0, k)
        return empty.long(), empty, None, None
    return (
        torch.cat(ids_out),
        torch.cat(probs_out),
        torch.cat(tprobs_out) if track is not None else None,
        torch.cat(tranks_out) if track is not None else None,
    )


def logit_lens(
    model: "HookedAVLLM",
    source: Any,
    positions: PositionsLike = "audio",
    hooks: str | Sequence[str] = "resid_post",
    layers: Sequence[int] | None = None,
    apply_final_norm: bool = True,
    k: int = 5,
    track: int | str | Sequence[int | str] | None = None,
    chunk_size: int = 64,
    progress: bool = True,
    time: tuple[float, float] | None = None,
    item: int | None = None,
) -> LogitLensResult:
    """Logit lens at chosen positions of every chosen hook.

    Args:
        model: the model (its ``ln_final``, ``unembed`` and ``tokenizer`` are used).
        source: an activation cache from ``model.run_with_cache`` (it must hold the hooks), or
            the inputs themselves (``ModelInputs`` or token ids): then one forward runs with hooks
            that keep only the residual rows of the chosen positions (no logits, no full cache).
        positions: a bool mask ``[batch, seq]``, a modality (``"audio"``, ``"video"``, ``"text"``,
            ``"image"``, ``"generated"``), ``"last"``, ``"all"`` or a list of indices; see
            :func:`select_positions`.
        hooks, layers: which hooks (default ``blocks.{l}.hook_resid_post`` of every layer); see
            :func:`hook_names_for`. The lens reads exactly the named hook. After a block with
            ``hook_injection`` (rows added to the stream after the block, e.g. DeepStack's at the
            visual positions), ``blocks.{l}.hook_resid_post`` is the stream *before* the injection
            (as Hugging Face's ``hidden_states`` record it); the stream that leaves the layer is
            ``blocks.{l+1}.hook_resid_pre``, and after the last layer ``ln_final.hook_normalized``
            (with ``apply_final_norm=False``: the logits exactly).
        apply_final_norm: project through ``ln_final`` then ``unembed`` (True: at the last layer
            this reproduces the model's logits) or ``unembed`` alone (the study's code).
        k: how many top tokens to keep.
        track: token ids or strings (first token of each) whose probability and rank to keep.
        chunk_size: positions unembedded at once (memory: ``chunk_size x vocab`` fp32).
        time, item: narrow the positions to a time range (seconds) or one media item (see
            :func:`hooked_avllm.inputs.select.position_mask`).

    Example:
        >>> logits, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("resid_post"))  # doctest: +SKIP
        >>> lens = logit_lens(model, cache, positions="audio", apply_final_norm=False)  # doctest: +SKIP
        >>> lens.top1()[-1][:10]  # last layer, first ten audio tokens  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    names = hook_names_for(model, hooks, layers)
    track_ids, track_labels = token_ids_of(model.tokenizer, track) if track is not None else (None, None)
    if track_ids:
        bad = [t for t in track_ids if not 0 <= t < model.cfg.d_vocab]
        if bad:
            raise ValueError(f"tracked ids {bad} are outside the vocabulary (0..{model.cfg.d_vocab - 1})")

    is_cache = hasattr(source, "cache_dict") or (isinstance(source, dict) and all(isinstance(v, Tensor) for v in source.values()) and names[0] in source)
    if is_cache:
        layout = carried_layout(source)
        missing = [n for n in names if n not in source]
        if missing:
            raise ValueError(
                f"the cache holds no {missing[0]!r}; run run_with_cache without a names_filter that drops it, or "
                "pass the inputs to logit_lens instead"
            )
        first = source[names[0]]
        mask = select_positions(layout, positions, _mask_for(layout, first), time=time, item=item)
        rows = {name: source[name][mask.to(source[name].device)] for name in names}  # [n_pos, d_model] each
    else:
        inputs = source
        layout = carried_layout(inputs)
        attention_mask = getattr(inputs, "attention_mask", None)
        if layout is None and isinstance(inputs, Tensor):
            ids = inputs if inputs.ndim == 2 else inputs[None]
            # families that lay out only their prepared inputs give None (with a warning): then only
            # masks, indices, "last" and "all" select, over every position of the bare ids
            layout = model.layout_of(ids, strict=False)
            attention_mask = torch.ones_like(ids) if layout is None else None
        mask = select_positions(layout, positions, attention_mask, time=time, item=item)
        rows = _collect_rows(model, inputs, names, mask)

    decode = token_decoder(model.tokenizer)
    top_ids, top_probs, t_probs, t_ranks, top_tokens = [], [], [], [], []
    for name in tqdm(names, desc="logit lens", disable=not progress or len(names) < 4, leave=False):
        resid = rows.pop(name)
        if resid.shape[-1] != model.cfg.d_model:
            raise ValueError(f"{name} has width {resid.shape[-1]}, not the LLM width {model.cfg.d_model}; lens reads LLM residuals")
        ids, probs, tp, tr = lens_readout(model, resid, k, apply_final_norm, track_ids, chunk_size)
        top_ids.append(ids)
        top_probs.append(probs)
        if tp is not None:
            t_probs.append(tp)
            t_ranks.append(tr)
        flat = decode(ids.flatten().tolist())
        top_tokens.append([flat[p * ids.shape[1] : (p + 1) * ids.shape[1]] for p in range(ids.shape[0])])

    batch_index, seq_index = torch.nonzero(mask, as_tuple=True)
    kinds = _kinds_at(layout, batch_index, seq_index)
    audio_time = (
        layout.audio_time.cpu()[batch_index, seq_index].float() if layout is not None else torch.full((len(seq_index),), float("nan"))
    )
    input_ids = torch.full((len(seq_index),), -1, dtype=torch.long)
    if layout is not None:
        in_prompt = seq_index < layout.n_prompt
        input_ids[in_prompt] = layout.input_ids.cpu()[batch_index[in_prompt], seq_index[in_prompt]]
    return LogitLensResult(
        hook_names=names,
        layers=[_layer_of(n) for n in names],
        top_ids=torch.stack(top_ids),
        top_probs=torch.stack(top_probs),
        top_tokens=top_tokens,
        batch_index=batch_index,
        positions=seq_index,
        kinds=kinds,
        audio_time=audio_time,
        input_ids=input_ids,
        apply_final_norm=apply_final_norm,
        track_ids=track_ids,
        track_labels=track_labels,
        track_probs=torch.stack(t_probs) if t_probs else None,
        track_ranks=torch.stack(t_ranks) if t_ranks else None,
    )


def _mask_for(layout: Any, activation: Tensor) -> Tensor | None:
    """An attention mask for position selection when the cache has no layout."""
    if layout is not None:
        return None
    return torch.ones(activation.shape[:2], dtype=torch.long)


@torch.no_grad()
def _collect_rows(model: "HookedAVLLM", inputs: Any, names: list[str], mask: Bool[Tensor, "batch seq"]) -> dict[str, Tensor]:
    """One forward whose hooks keep only the selected rows of each named activation."""
    rows: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook: Any) -> None:
        rows[hook.name] = activation[mask.to(activation.device)].detach()  # [n_pos, d_model]

    with model.hooks(fwd_hooks=[(name, keep) for name in names]):
        model(inputs, return_type=None)
    missing = [n for n in names if n not in rows]
    if missing:
        raise RuntimeError(f"hook {missing[0]} did not fire during the forward")
    return rows


def _kinds_at(layout: Any, batch_index: Tensor, seq_index: Tensor) -> list[str]:
    if layout is None:
        return ["unknown"] * len(seq_index)
    kinds = ["?"] * len(seq_index)
    for name, mask in layout.masks().items():
        hit = mask.cpu()[batch_index, seq_index]
        for i in torch.nonzero(hit).flatten().tolist():
            kinds[i] = name
    return kinds
